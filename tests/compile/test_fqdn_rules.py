"""Egress rules by domain name in the host program (issue 18): learned-address sets, and trace by name. Pure."""

from __future__ import annotations

from typing import Any

import pytest

from stockade.compile.host import compile_host
from stockade.compile.trace import Flow, trace_flow
from stockade.model.kinds import parse_object
from stockade.model.state import DesiredState
from stockade.nft.interpret import Interpreter, Packet
from stockade.nft.render import full_replace, program_hash


def docs() -> list[dict[str, Any]]:
    return [
        {"apiVersion": "stockade.io/v1", "kind": "Namespace", "metadata": {"name": "x"}},
        {"apiVersion": "stockade.io/v1", "kind": "Workload", "metadata": {"name": "a", "namespace": "x",
                                                                          "labels": {"app": "a"}},
         "spec": {"host": "hv1", "ips": ["198.18.10.1", "2001:db8:10::1"]}},
        {"apiVersion": "stockade.io/v1", "kind": "Policy", "metadata": {"name": "out", "namespace": "x"},
         "spec": {"appliesTo": {"selector": {"matchLabels": {"app": "a"}}}, "egress": [
             {"id": "partner-api", "action": "allow", "to": [{"fqdn": "API.partner.example."}],
              "ports": [{"protocol": "TCP", "port": 443}]},
             {"id": "cdn", "action": "allow", "to": [{"fqdn": "*.cdn.example"}]},
         ]}},
        {"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
         "metadata": {"name": "allow-names"},
         "spec": {"tier": "Admin", "priority": 5, "subject": {"namespaces": {}}, "egress": [
             {"name": "to-status-page", "action": "Accept", "to": [{"domainNames": ["status.partner.example"]}]}]}},
    ]


@pytest.fixture(scope="module")
def state() -> DesiredState:
    return DesiredState.from_objects(1, [parse_object(d) for d in docs()])


def trace_name(state: DesiredState, name: str, port: int, family: int = 4, ip: str | None = None) -> tuple[str, str | None]:
    r = trace_flow(state, Flow(("x", "a"), ("x", "a"), "tcp", port, family, dst_fqdn=name, dst_ip=ip))  # type: ignore[arg-type]
    assert r.ingress is None  # the destination is outside every workload
    return r.verdict, r.deciding_rule


def test_each_pattern_gets_empty_learned_address_sets_with_timeouts(state: DesiredState) -> None:
    program = compile_host(state, "hv1")
    fqdn_sets = {s.name: s for s in program.sets if s.fqdn is not None}
    assert sorted({s.fqdn for s in fqdn_sets.values()}) == ["*.cdn.example", "api.partner.example",
                                                            "status.partner.example"]
    assert all(s.elements == () and s.name.startswith("fqdn_") for s in fqdn_sets.values())
    assert sorted(s.type[0] for s in fqdn_sets.values()) == ["ipv4_addr"] * 3 + ["ipv6_addr"] * 3
    decls = [c["add"]["set"] for c in full_replace(program)["nftables"] if "set" in c.get("add", {})]
    assert all(d["flags"] == ["timeout"] for d in decls if d["name"] in fqdn_sets)


def test_learned_addresses_ride_a_full_replace_but_never_the_program_or_its_hash(state: DesiredState) -> None:
    program = compile_host(state, "hv1")
    name = next(s.name for s in program.sets if s.fqdn == "api.partner.example" and s.type == ("ipv4_addr",))
    replaced = full_replace(program, {name: [("198.19.1.7", 30), ("198.19.1.8", 0)]})["nftables"]
    added = [c["add"]["element"] for c in replaced if "element" in c.get("add", {}) and c["add"]["element"]["name"] == name]
    assert added == [{"family": "inet", "table": program.table, "name": name, "elem": [
        {"elem": {"val": "198.19.1.7", "timeout": 30}}, {"elem": {"val": "198.19.1.8", "timeout": 1}}]}]
    assert program_hash(program) == program_hash(compile_host(state, "hv1"))


@pytest.mark.parametrize("name,port,verdict,rule", [
    ("api.partner.example", 443, "allow", "x/out/partner-api"),
    ("Api.Partner.Example.", 443, "allow", "x/out/partner-api"),
    ("api.partner.example", 80, "deny", "x/default-deny/egress"),
    ("www.partner.example", 443, "deny", "x/default-deny/egress"),
    ("img.cdn.example", 8443, "allow", "x/out/cdn"),
    ("a.b.cdn.example", 80, "allow", "x/out/cdn"),
    ("cdn.example", 80, "deny", "x/default-deny/egress"),
    ("status.partner.example", 80, "allow", "allow-names/to-status-page"),   # the admin tier, first
])
def test_trace_to_a_name_names_the_rule_that_decides(state: DesiredState, name: str, port: int, verdict: str,
                                                      rule: str) -> None:
    assert trace_name(state, name, port) == (verdict, rule)
    assert trace_name(state, name, port, family=6) == (verdict, rule)


def test_an_address_matches_a_name_rule_only_once_learned_for_it(state: DesiredState) -> None:
    program = compile_host(state, "hv1")
    api4 = next(s.name for s in program.sets if s.fqdn == "api.partner.example" and s.type == ("ipv4_addr",))
    iface = next(m for m in program.maps if m.name == "egress_dispatch").elements[0][0]
    packet = Packet(4, "198.18.10.1", "198.19.1.7", "tcp", 443, iifname=str(iface), oifname="fab0")
    assert Interpreter(program).run_base_chain(packet, "egress").verdict == "drop"
    assert Interpreter(program, {api4: {"198.19.1.7"}}).run_base_chain(packet, "egress").verdict == "accept"
    assert Interpreter(program, {api4: {"198.19.1.8"}}).run_base_chain(packet, "egress").verdict == "drop"


@pytest.mark.parametrize("action,mode,verdict,rule", [
    ("deny", "enforce", "deny", "no-exfil/to-paste"),
    ("reject", "enforce", "reject", "no-exfil/to-paste"),
    ("pass", "enforce", "deny", "x/default-deny/egress"),      # the platform passes; nothing allows it after
    ("deny", "audit", "deny", "x/default-deny/egress"),         # audit: recorded as would-deny, decides nothing
])
def test_a_name_rule_takes_every_action_and_audit_mode_in_any_tier(action: str, mode: str, verdict: str,
                                                                    rule: str) -> None:
    guard = {"apiVersion": "stockade.io/v1", "kind": "GlobalPolicy", "metadata": {"name": "no-exfil"},
             "spec": {"tier": "platform", "mode": mode, "appliesTo": {"selector": {}},
                      "egress": [{"id": "to-paste", "action": action, "to": [{"fqdn": "*.paste.example"}]}]}}
    state = DesiredState.from_objects(1, [parse_object(d) for d in [*docs(), guard]])
    r = trace_flow(state, Flow(("x", "a"), ("x", "a"), "tcp", 443, dst_fqdn="bin.paste.example"))
    assert (r.verdict, r.deciding_rule) == (verdict, rule)
    actions = [s["action"] for s in r.egress.rules if s["rule"] == "no-exfil/to-paste"]
    assert actions == [{"deny": "drop", "reject": "reject", "pass": "pass"}[action] if mode == "enforce"
                       else "would-deny"]
