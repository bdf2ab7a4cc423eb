"""compile_host → render: golden programs, and the semantics that must hold whatever the bytes.

(The set-element delta and the program hash are nft.render's: tests/nft/test_render.py; the
address arithmetic is compile.addresses': tests/compile/test_addresses.py.)

Golden files: tests/golden/<case>.yaml (multi-document input, compiled for host hv1) and
tests/golden/<case>.json (the `full_replace` program, pretty and sorted). A missing or
different golden file fails; `UPDATE_GOLDEN=1` rewrites them (review the diff!).
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
from pathlib import Path

import pytest
import yaml

from stockade.compile.host import PASS_BIT, compile_host
from stockade.model.kinds import parse_object
from stockade.model.naming import workload_interface
from stockade.model.objects import StockadeObject
from stockade.model.state import DesiredState
from stockade.model.validation import WORKLOAD_INTERFACE_PREFIXES
from stockade.nft import render
from stockade.nft.ir import (
    IP6_SADDR,
    IP_DADDR,
    IP_SADDR,
    META_IIFNAME,
    META_L4PROTO,
    META_OIFNAME,
    Accept,
    Chain,
    Cmp,
    Continue,
    CtState,
    Dispatch,
    Drop,
    Goto,
    InSet,
    Jump,
    MarkHas,
    MarkSet,
    Reject,
    Return,
    Ruleset,
)

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
CASES = ["shop", "default_deny", "allow_until_selected", "tiers", "single_family", "cluster_policies"]
HOST = "hv1"


def load_objects(case: str) -> list[StockadeObject]:
    docs = [d for d in yaml.safe_load_all((GOLDEN / f"{case}.yaml").read_text()) if d]
    return [parse_object(d, i) for i, d in enumerate(docs)]


def load_state(case: str, revision: int = 1) -> DesiredState:
    return DesiredState.from_objects(revision, load_objects(case))


def program_text(state: DesiredState, host: str = HOST) -> str:
    return json.dumps(render.full_replace(compile_host(state, host)), indent=2, sort_keys=True) + "\n"


# ------------------------------------------------------------------ golden

@pytest.mark.parametrize("case", CASES)
def test_compiled_program_matches_golden_file(case):
    actual = program_text(load_state(case))
    golden = GOLDEN / f"{case}.json"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(actual)
    assert golden.exists(), f"{golden} is missing; run with UPDATE_GOLDEN=1 to create it, then review it"
    expected = golden.read_text()
    assert actual == expected, f"program for {case} differs from {golden.name}; if intended, UPDATE_GOLDEN=1"


def test_every_golden_input_has_a_case():
    assert sorted(p.stem for p in GOLDEN.glob("*.yaml")) == sorted(CASES)


# ------------------------------------------------------------------ helpers

def policy_chain(rs: Ruleset, owner: str, direction: str, kind: str = "Policy") -> Chain:
    """The chain of policy `owner` (`ns/name`, or `name` for a GlobalPolicy) in `direction`."""
    found = [c for c in rs.chains if c.comment == f"{kind} {owner} {direction}"]
    assert len(found) == 1, f"no single chain for {kind} {owner} {direction}"
    assert found[0].name.startswith("pol_")
    return found[0]


def workload_chain(rs: Ruleset, ref: str, direction: str) -> Chain:
    found = [c for c in rs.chains if c.comment == f"Workload {ref} {direction}"]
    assert len(found) == 1, f"no single chain for workload {ref} {direction}"
    return found[0]


def policy_rules(chain: Chain):
    """The rules made from policy rules (after the tier-passed guard)."""
    assert chain.rules[0].matches == (MarkHas(PASS_BIT),) and chain.rules[0].verdict == Return()
    return chain.rules[1:]


def relabel(state: DesiredState, ns: str, name: str, labels: dict[str, str], revision: int = 2) -> DesiredState:
    wl = state.workloads[(ns, name)]
    changed = wl.model_copy(update={"metadata": wl.metadata.model_copy(update={"labels": labels})})
    return state.with_changes(revision, put=[changed])


def obj(doc: str) -> StockadeObject:
    return parse_object(yaml.safe_load(doc))


def l4(rule) -> str | None:
    return next((m.value for m in rule.matches if isinstance(m, Cmp) and m.field == META_L4PROTO), None)


def peer_sets(rule) -> list[InSet]:
    return [m for m in rule.matches if isinstance(m, InSet)]


# ------------------------------------------------------------------ determinism

@pytest.mark.parametrize("case", CASES)
def test_same_input_compiles_to_identical_bytes(case):
    assert program_text(load_state(case)) == program_text(load_state(case))


@pytest.mark.parametrize("case", CASES)
def test_input_order_does_not_change_the_program(case):
    objects = load_objects(case)
    expected = program_text(DesiredState.from_objects(1, objects))
    rng = random.Random(1234)
    for _ in range(5):
        shuffled = objects[:]
        rng.shuffle(shuffled)
        assert program_text(DesiredState.from_objects(1, shuffled)) == expected


def test_revision_is_not_part_of_the_program():
    assert program_text(load_state("shop", 1)) == program_text(load_state("shop", 99))


# ------------------------------------------------------------------ locality

def test_only_policies_of_local_workloads_are_compiled():
    state = load_state("shop")
    rs = compile_host(state, HOST)
    owners = {c.comment for c in rs.chains if c.name.startswith("pol_")}
    # shop/app applies only to app-1 and ops/bastion only to bastion, both on hv2.
    assert not any(o.startswith("Policy shop/app ") for o in owners)
    assert not any(o.startswith("Policy ops/bastion ") for o in owners)
    assert "Policy shop/web ingress" in owners and "Policy shop/db ingress" in owners
    # ...and on hv2 they are there.
    on_hv2 = {c.comment for c in compile_host(state, "hv2").chains}
    assert {"Policy shop/app ingress", "Policy shop/app egress", "Policy ops/bastion egress"} <= on_hv2


def test_policy_applying_only_to_remote_workloads_makes_no_chain():
    rs = compile_host(load_state("tiers"), HOST)
    assert not [c for c in rs.chains if c.comment and "remote-only" in c.comment]
    assert not any(c.name.startswith("pol_remote") for c in rs.chains)


def test_only_local_workloads_get_chains_and_dispatch_entries():
    state = load_state("shop")
    rs = compile_host(state, HOST)
    wl_chains = {c.comment.rsplit(" ", 1)[0] for c in rs.chains if c.name.startswith("wl_")}
    assert wl_chains == {"Workload shop/lb-1", "Workload shop/web-1", "Workload shop/db-1", "Workload ops/dns-1"}
    assert len(rs.vmap("egress_dispatch").elements) == 4
    assert "veth-db1" in rs.set("workload_ifaces").elements  # the interface given in the spec


def test_direction_without_rules_jumps_to_no_policy_chain():
    rs = compile_host(load_state("shop"), HOST)
    # shop/db has only ingress rules: db-1's egress chain jumps to shop-common egress only.
    jumps = [r.verdict.target for r in workload_chain(rs, "shop/db-1", "egress").rules if isinstance(r.verdict, Jump)]
    assert jumps == [policy_chain(rs, "shop/shop-common", "egress").name]


# ------------------------------------------------------------------ rule ids

def test_every_policy_rule_carries_its_rule_ref_and_a_counter():
    state = load_state("shop")
    program = render.full_replace(compile_host(state, HOST))
    by_chain: dict[str, list[dict]] = {}
    for cmd in program["nftables"]:
        rule = cmd.get("add", {}).get("rule")
        if rule and rule["chain"].startswith("pol_"):
            by_chain.setdefault(rule["chain"], []).append(rule)
    assert by_chain
    comments = set()
    for chain, rules in by_chain.items():
        assert rules[0]["comment"] == "tier-passed"
        for rule in rules[1:]:
            assert rule.get("comment"), f"a rule of {chain} has no rule id"
            assert any("counter" in e for e in rule["expr"]), f"rule {rule['comment']} has no counter"
            comments.add(rule["comment"])
    assert comments == {
        "shop/lb/web-from-clients", "shop/lb/to-web", "shop/web/http-from-lb", "shop/web/to-app",
        "shop/db/sql-from-app", "shop/db/backup-net", "shop/shop-common/ssh-from-bastion", "shop/shop-common/dns",
        "ops/dns/from-retail",
    }


def test_rule_without_id_gets_derived_ref():
    rs = compile_host(load_state("allow_until_selected"), HOST)
    (ingress_rule,) = policy_rules(policy_chain(rs, "kube/api-ingress", "ingress"))[:1]
    assert ingress_rule.comment == "kube/api-ingress/ingress-0"
    rs = compile_host(load_state("tiers"), HOST)
    assert {r.comment for r in policy_rules(policy_chain(rs, "team/fallback", "egress"))} == {"team/fallback/egress-0"}
    assert {r.comment for r in policy_rules(policy_chain(rs, "team/fallback", "ingress"))} == {"team/fallback/ingress-0"}


def test_global_policy_rule_ref_has_no_namespace():
    rs = compile_host(load_state("tiers"), HOST)
    chain = policy_chain(rs, "platform-guard", "ingress", kind="GlobalPolicy")
    assert [r.comment for r in policy_rules(chain)] == [
        "platform-guard/log-all", "platform-guard/block-telnet", "platform-guard/block-bad-net",
        "platform-guard/tenants-decide"]


def test_rule_order_is_preserved():
    rs = compile_host(load_state("shop"), HOST)
    refs = [r.comment for r in policy_rules(policy_chain(rs, "shop/db", "ingress"))]
    first = [i for i, c in enumerate(refs) if c == "shop/db/sql-from-app"]
    second = [i for i, c in enumerate(refs) if c == "shop/db/backup-net"]
    assert len(first) == 2 and len(second) == 2  # (v4, v6) peers; (tcp 5432, udp 7000-7010) ports
    assert max(first) < min(second)


# ------------------------------------------------------------------ tiers and actions

def test_policies_run_by_tier_then_order_then_name():
    rs = compile_host(load_state("tiers"), HOST)
    chain = workload_chain(rs, "team/svc-1", "ingress")
    names = {c.name: c.comment for c in rs.chains}
    steps = []
    for r in chain.rules:
        if isinstance(r.verdict, Jump):
            steps.append(names[r.verdict.target])
        elif r.mark == MarkSet(PASS_BIT, clear=True):
            steps.append(r.comment or "end")
    assert steps == [
        "tier platform", "GlobalPolicy platform-guard ingress",
        "tier application", "Policy team/early ingress", "Policy team/alpha ingress", "Policy team/zeta ingress",
        "Policy team/trial ingress",
        "tier baseline", "Policy team/fallback ingress",
        "end",
    ]
    assert chain.rules[-1].verdict == Drop() and chain.rules[-1].comment == "team/default-deny/ingress"


def test_pass_sets_the_tier_mark_and_returns():
    rs = compile_host(load_state("tiers"), HOST)
    (passed,) = [r for r in policy_rules(policy_chain(rs, "platform-guard", "ingress", "GlobalPolicy"))
                 if r.comment == "platform-guard/tenants-decide"]
    assert passed.verdict == Return() and passed.mark == MarkSet(PASS_BIT)


def test_actions_map_to_verdicts():
    rs = compile_host(load_state("tiers"), HOST)
    guard = {r.comment: r for r in policy_rules(policy_chain(rs, "platform-guard", "ingress", "GlobalPolicy"))}
    assert guard["platform-guard/log-all"].verdict == Continue()
    assert guard["platform-guard/log-all"].log.prefix.startswith("stk log platform-guard/log-all")
    assert guard["platform-guard/block-telnet"].verdict == Reject("tcp-reset")
    assert guard["platform-guard/block-bad-net"].verdict == Drop()
    egress = policy_rules(policy_chain(rs, "platform-guard", "egress", "GlobalPolicy"))
    smtp = {l4(r): r.verdict for r in egress if r.comment == "platform-guard/no-smtp"}
    assert smtp == {"tcp": Reject("tcp-reset"), "udp": Reject("icmpx")}
    zeta = policy_rules(policy_chain(rs, "team/zeta", "ingress"))
    assert {r.verdict for r in zeta} == {Accept()}


def test_reject_without_protocol_resets_tcp_and_rejects_the_rest():
    rs = compile_host(load_state("tiers"), HOST)
    rules = policy_rules(policy_chain(rs, "team/early", "ingress"))
    assert [(l4(r), r.verdict) for r in rules] == [("tcp", Reject("tcp-reset")), (None, Reject("icmpx"))]


def test_audit_mode_logs_would_verdict_and_does_not_decide():
    rs = compile_host(load_state("tiers"), HOST)
    (rule,) = policy_rules(policy_chain(rs, "team/trial", "ingress"))
    assert rule.verdict == Continue()
    assert rule.log is not None and rule.log.prefix.startswith("stk would-deny team/trial/would-deny-ssh")


# ------------------------------------------------------------------ default action

def _last(chain: Chain):
    return chain.rules[-1].verdict, chain.rules[-1].comment


def test_native_namespace_without_policy_denies_both_directions():
    rs = compile_host(load_state("default_deny"), HOST)
    for wl in ("vm-1", "vm-2"):
        assert _last(workload_chain(rs, f"quiet/{wl}", "ingress")) == (Drop(), "quiet/default-deny/ingress")
        assert _last(workload_chain(rs, f"quiet/{wl}", "egress")) == (Drop(), "quiet/default-deny/egress")
    assert not [c for c in rs.chains if c.name.startswith("pol_")]


def test_allow_until_selected_isolates_only_the_selected_direction():
    rs = compile_host(load_state("allow_until_selected"), HOST)
    assert _last(workload_chain(rs, "kube/isolated", "ingress")) == (Drop(), "kube/default-deny/ingress")
    assert _last(workload_chain(rs, "kube/isolated", "egress")) == (Accept(), "kube/default-allow/egress")
    assert _last(workload_chain(rs, "kube/open", "ingress")) == (Accept(), "kube/default-allow/ingress")
    assert _last(workload_chain(rs, "kube/open", "egress")) == (Accept(), "kube/default-allow/egress")


def test_audit_policy_does_not_close_allow_until_selected():
    rs = compile_host(load_state("allow_until_selected"), HOST)
    chain = workload_chain(rs, "kube/audited", "egress")
    assert _last(chain) == (Accept(), "kube/default-allow/egress")
    # ...but its rules are still evaluated (and log).
    assert any(isinstance(r.verdict, Jump) for r in chain.rules)


def spoof_chain(rs: Ruleset, ref: str) -> Chain:
    found = [c for c in rs.chains if c.comment == f"Workload {ref} sends as itself"]
    assert len(found) == 1, f"no single spoof chain for workload {ref}"
    return found[0]


def test_antispoofing_drops_foreign_source_and_missing_family():
    rs = compile_host(load_state("single_family"), HOST)
    v4 = [r for r in spoof_chain(rs, "lab/v4-only").rules if r.comment == "antispoof"]
    v6 = [r for r in spoof_chain(rs, "lab/v6-only").rules if r.comment == "antispoof"]
    assert [(r.matches, r.verdict) for r in v4] == [
        ((Cmp(IP_SADDR, "198.18.60.4", negate=True),), Drop()), ((Cmp(("meta", "nfproto"), "ipv6"),), Drop())]
    assert [(r.matches, r.verdict) for r in v6] == [
        ((Cmp(("meta", "nfproto"), "ipv4"),), Drop()), ((Cmp(IP6_SADDR, "2001:db8:60::6", negate=True),), Drop())]


def test_spoof_checks_run_before_conntrack_so_a_forged_packet_cannot_ride_an_established_flow():
    rs = compile_host(load_state("single_family"), HOST)
    guard = rs.chain("guard")
    assert guard.base is not None and guard.base.hook == "prerouting" and guard.base.priority < -200  # conntrack: -200
    assert guard.rules[0].verdict == Dispatch(META_IIFNAME, "guard_dispatch")
    iface = dict(rs.vmap("egress_dispatch").elements)
    for ref in ("lab/v4-only", "lab/v6-only"):
        target = spoof_chain(rs, ref).name
        assert [k for k, v in rs.vmap("guard_dispatch").elements if v == Goto(target)] == \
            [k for k, v in iface.items() if v == Jump(workload_chain(rs, ref, "egress").name)]
    # and the established-accept of the forward chains is no longer where spoofing is checked
    assert not any(r.comment == "antispoof" for r in workload_chain(rs, "lab/v4-only", "egress").rules)


def test_a_known_mac_is_checked_before_addresses() -> None:
    state = _unvalidated(parse_object({"apiVersion": "stockade.io/v1", "kind": "Workload",
                                       "metadata": {"name": "w", "namespace": "a"},
                                       "spec": {"host": HOST, "ips": ["198.18.61.1"], "mac": "02:AA:00:00:00:01"}}))
    first = spoof_chain(compile_host(state, HOST), "a/w").rules[0]
    assert (first.matches, first.verdict) == ((Cmp(("ether", "saddr"), "02:aa:00:00:00:01", negate=True),), Drop())


def test_an_unknown_workload_port_is_dropped_both_ways_and_the_hosts_own_are_not() -> None:
    rs = compile_host(load_state("single_family"), HOST)
    names = rs.set("workload_port_names")
    assert names.interval and names.elements == tuple(sorted(f"{p}*" for p in WORKLOAD_INTERFACE_PREFIXES))
    from_unknown = [r for r in rs.chain("guard").rules if r.comment == "unknown-interface"]
    assert [(r.matches, r.verdict) for r in from_unknown] == [
        ((InSet((META_IIFNAME,), "workload_port_names"),), Drop())]
    to_unknown = [r for r in rs.chain("ingress").rules if r.comment == "unknown-interface"]
    assert [r.matches for r in to_unknown] == [(InSet((META_OIFNAME,), "workload_port_names"),
                                                InSet((META_OIFNAME,), "workload_ifaces", True))]
    # before `ct state established accept`: an established flow to a port that lost its program ends
    first_ct = next(i for i, r in enumerate(rs.chain("ingress").rules) if any(isinstance(m, CtState) for m in r.matches))
    assert all(rs.chain("ingress").rules.index(r) < first_ct for r in to_unknown)
    # the host's own interfaces are no workload port; a VM's tap is one
    assert not [n for n in ("fab0", "eth0", "lo", "br0") if any(n.startswith(e[:-1]) for e in names.elements)]
    assert any("tap7".startswith(e[:-1]) for e in names.elements)


# ------------------------------------------------------------------ named ports

def _np_elements(rs: Ruleset, rule_ref: str, family: int) -> set:
    sets = [s for s in rs.sets if s.name.startswith("np_") and s.name.endswith(f"_{family}")
            and s.comment and s.comment.endswith(f" of {rule_ref}")]
    return {e for s in sets for e in s.elements}


def test_named_port_resolves_per_destination_workload():
    rs = compile_host(load_state("shop"), HOST)
    # Egress of lb-1 to group web: each web workload's own `http` port.
    assert _np_elements(rs, "shop/lb/to-web", 4) == {("198.18.10.11", "tcp", 8080), ("198.18.10.12", "tcp", 8081)}
    assert _np_elements(rs, "shop/lb/to-web", 6) == {("2001:db8:10::11", "tcp", 8080),
                                                     ("2001:db8:10::12", "tcp", 8081)}
    # Ingress of web: resolved on the local destination only (web-1; web-2 lives on hv2).
    assert _np_elements(rs, "shop/web/http-from-lb", 4) == {("198.18.10.11", "tcp", 8080)}
    rule = next(r for r in policy_rules(policy_chain(rs, "shop/web", "ingress")) if IP_SADDR in
                [f for m in peer_sets(r) for f in m.fields])
    np_match = [m for m in peer_sets(rule) if m.set_name.startswith("np_")]
    assert np_match and np_match[0].fields == (IP_DADDR, META_L4PROTO, ("th", "dport"))


def test_named_port_protocol_must_match():
    state = load_state("single_family")
    rs = compile_host(state, HOST)
    assert _np_elements(rs, "lab/mesh/dns", 4) == {("198.18.60.4", "udp", 53)}
    assert _np_elements(rs, "lab/mesh/dns", 6) == {("2001:db8:60::6", "udp", 5353)}
    tcp = load_state("single_family").with_changes(2, put=[obj("""
        apiVersion: stockade.io/v1
        kind: Policy
        metadata: {name: mesh, namespace: lab}
        spec:
          appliesTo: {group: all}
          ingress: [{id: dns, action: allow, ports: [{protocol: TCP, port: dns}]}]
    """)])
    rs = compile_host(tcp, HOST)
    assert _np_elements(rs, "lab/mesh/dns", 4) == set() and _np_elements(rs, "lab/mesh/dns", 6) == set()


NAMED_BOTH_WAYS = """
apiVersion: stockade.io/v1
kind: Namespace
metadata: {name: a}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {name: local, namespace: a, labels: {app: x}}
spec: {host: hv1, ips: [198.18.0.1], ports: [{name: web, port: 80}]}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {name: remote, namespace: a, labels: {app: y}}
spec: {host: hv2, ips: [198.18.0.2], ports: [{name: web, port: 8080}]}
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: p, namespace: a}
spec:
  appliesTo: {selector: {matchLabels: {app: x}}}
  ingress: [{id: web, action: allow, ports: [{port: web}]}]
  egress: [{id: web, action: allow, to: [{selector: {matchLabels: {app: y}}}], ports: [{port: web}]}]
"""


def test_named_port_of_ingress_and_egress_rules_with_same_id_resolve_separately():
    state = DesiredState.from_objects(1, [parse_object(d) for d in yaml.safe_load_all(NAMED_BOTH_WAYS)])
    rs = compile_host(state, HOST)

    def np_set_of(direction: str):
        """Elements of the IPv4 named-port set the rule of `direction` matches against."""
        rules = policy_rules(policy_chain(rs, "a/p", direction))
        names = [m.set_name for r in rules for m in peer_sets(r) if m.fields == (IP_DADDR, META_L4PROTO, ("th", "dport"))]
        assert len(names) == 1
        return rs.set(names[0]).elements

    assert np_set_of("ingress") == (("198.18.0.1", "tcp", 80),)     # the local destination
    assert np_set_of("egress") == (("198.18.0.2", "tcp", 8080),)    # the remote destination


# ------------------------------------------------------------------ families

def test_icmp_rules_pair_only_with_ipv4_peers_and_icmpv6_with_ipv6():
    for case, ref in (("shop", "shop/shop-common/ssh-from-bastion"), ("single_family", "lab/mesh/ping"),
                      ("single_family", "lab/mesh/v6-net-ping")):
        rs = compile_host(load_state(case), HOST)
        rules = [r for c in rs.chains if c.name.startswith("pol_") for r in c.rules if r.comment == ref]
        assert rules
        for r in rules:
            fields = {f for m in peer_sets(r) for f in m.fields}
            if l4(r) == "icmp":
                assert fields == {IP_SADDR} and all(m.set_name.endswith("_4") for m in peer_sets(r))
            elif l4(r) == "ipv6-icmp":
                assert fields == {IP6_SADDR} and all(m.set_name.endswith("_6") for m in peer_sets(r))
    rs = compile_host(load_state("single_family"), HOST)
    v6_net = [r for c in rs.chains for r in c.rules if r.comment == "lab/mesh/v6-net-ping"]
    assert [l4(r) for r in v6_net] == ["ipv6-icmp"], "an ICMP (v4) rule for an IPv6-only peer can never match"


def test_icmp_without_peers_matches_its_own_family_only():
    rs = compile_host(load_state("tiers"), HOST)
    rules = policy_rules(policy_chain(rs, "team/fallback", "ingress"))
    assert [(l4(r), [m.value for m in r.matches if isinstance(m, Cmp) and m.field != META_L4PROTO])
            for r in rules] == [("icmp", [8, 0]), ("ipv6-icmp", [128])]


def test_single_family_workloads_fill_only_their_family_sets():
    rs = compile_host(load_state("single_family"), HOST)
    grp4 = next(s for s in rs.sets if s.name.startswith("grp_all_") and s.name.endswith("_4"))
    grp6 = next(s for s in rs.sets if s.name.startswith("grp_all_") and s.name.endswith("_6"))
    assert grp4.elements == ("198.18.60.4/32",)
    assert grp6.elements == ("2001:db8:60::6/128",)


def test_port_range_and_single_port_matches():
    rs = compile_host(load_state("shop"), HOST)
    rules = policy_rules(policy_chain(rs, "shop/db", "ingress"))
    backup = [r for r in rules if r.comment == "shop/db/backup-net"]
    ranges = [m for r in backup for m in r.matches if type(m).__name__ == "InRange"]
    assert [(m.low, m.high) for m in ranges] == [(7000, 7010)]
    assert any(Cmp(("th", "dport"), 5432) in r.matches for r in backup)


# ------------------------------------------------------------------ cidr arithmetic in the program
# (the arithmetic itself: tests/compile/test_addresses.py)

def _addresses(nets) -> set:
    return {a for n in nets for a in ipaddress.ip_network(n)}


def test_group_cidr_except_in_compiled_set():
    rs = compile_host(load_state("shop"), HOST)
    clients4 = next(s for s in rs.sets if s.name.startswith("grp_clients_") and s.name.endswith("_4"))
    assert clients4.interval
    assert _addresses(clients4.elements) == _addresses(["198.19.0.0/16"]) - _addresses(["198.19.66.0/24"])
    rule_sets = {m.set_name for r in policy_rules(policy_chain(rs, "shop/db", "ingress"))
                 if r.comment == "shop/db/backup-net" for m in peer_sets(r)}
    (net,) = rule_sets
    assert _addresses(rs.set(net).elements) == _addresses(["198.19.0.0/16"]) - _addresses(
        ["198.19.5.0/24", "198.19.200.0/21"])


def test_log_and_audit_rules_record_a_packet_once_when_their_peers_overlap():
    # The source is in both peers and in both port ranges: four kernel rules could match it.
    state = DesiredState.from_objects(1, [parse_object(d, i) for i, d in enumerate(yaml.safe_load_all("""
apiVersion: stockade.io/v1
kind: Namespace
metadata: {name: t}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {name: a, namespace: t, labels: {app: a}}
spec: {host: hv1, ips: [198.18.50.1, "2001:db8:50::1"]}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {name: b, namespace: t, labels: {app: b}}
spec: {host: hv1, ips: [198.18.50.2, "2001:db8:50::2"]}
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: trial, namespace: t}
spec:
  order: 1
  mode: audit
  appliesTo: {selector: {matchLabels: {app: b}}}
  ingress:
    - {id: would, action: deny, from: [{selector: {}}, {cidr: 198.18.50.0/24}]}
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: p, namespace: t}
spec:
  order: 2
  appliesTo: {selector: {}}
  ingress:
    - id: seen
      action: log
      from: [{selector: {}}, {cidr: 198.18.50.0/24}]
      ports: [{protocol: TCP, port: 80}, {protocol: TCP, port: 70, endPort: 90}]
    - {id: ok, action: allow}
  egress: [{id: out, action: allow}]
"""))])
    from stockade.compile.trace import Flow, trace_flow

    result = trace_flow(state, Flow(("t", "a"), ("t", "b"), "tcp", 80))
    assert result.ingress is not None
    assert [(r["rule"], r["action"]) for r in result.ingress.rules] == [
        ("t/trial/would", "would-deny"), ("t/p/seen", "log"), ("t/p/ok", "accept")]
    # IPv6: only the selector peer holds the source, and no chain of its own is needed for it
    result6 = trace_flow(state, Flow(("t", "a"), ("t", "b"), "tcp", 80, family=6))
    assert result6.ingress is not None
    assert [r["rule"] for r in result6.ingress.rules] == ["t/trial/would", "t/p/seen", "t/p/ok"]


@pytest.mark.parametrize("case", ["shop", "tiers", "allow_until_selected"])
def test_with_a_log_group_every_decision_logs_behind_a_rate_limited_twin(case):
    from dataclasses import replace as dc_replace

    from stockade.compile.host import LOG_LIMIT, LOG_SUPPRESSED, CompileOptions
    from stockade.nft.ir import Continue as Cont

    state = load_state(case)
    hosts = sorted({wl.spec.host for wl in state.workloads.values()})
    for host in hosts:
        rs = compile_host(state, host, CompileOptions(log_group=100, log_rate=50, log_burst=20))
        assert [(lim.name, lim.rate, lim.burst, lim.over) for lim in rs.limits] == [(LOG_LIMIT, 50, 20, True)]
        assert [c.name for c in rs.counters] == [LOG_SUPPRESSED]
        logging_rules = 0
        for chain in rs.chains:
            rules = chain.rules
            for i, rule in enumerate(rules):
                if rule.log is not None:
                    logging_rules += 1
                    assert rule.log.group == 100 and rule.limit is None
                    assert rule.log.prefix == f"stk {rule.log.prefix.split()[1]} {rule.comment} "
                    assert not isinstance(rule.verdict, Cont), "a logging rule must end the evaluation"
                    twin = rules[i - 1]
                    # the twin: same matches, comment, counter and verdict; no log; limited and counted
                    assert (twin.limit, twin.count_into, twin.log) == (LOG_LIMIT, LOG_SUPPRESSED, None)
                    assert dc_replace(twin, limit=None, count_into=None) == dc_replace(rule, log=None)
                elif rule.comment and rule.counter and rule.limit is None and rule.mark is None \
                        and rule.comment not in ("antispoof", "invalid", "workload-to-host", "unknown-interface"):
                    raise AssertionError(f"{chain.name}: decision {rule.comment} does not log")
        assert logging_rules > 0
        text = render.to_json(render.full_replace(rs))
        assert '"limit":"flowlog_limit"' in text and '"counter":"flowlog_suppressed"' in text
    # without a log group nothing of this exists (the golden files above prove the bytes)
    plain = compile_host(state, hosts[0])
    assert plain.limits == () and plain.counters == ()


# ------------------------------------------- interfaces the kernel would refuse

def _local(name: str, ns: str, ip: str, interface: str | None = None, host: str = HOST) -> StockadeObject:
    spec = {"host": host, "ips": [ip], **({"interface": interface} if interface else {})}
    return parse_object({"apiVersion": "stockade.io/v1", "kind": "Workload",
                         "metadata": {"name": name, "namespace": ns}, "spec": spec})


def _unvalidated(*workloads: StockadeObject) -> DesiredState:
    """A state holding what validation refuses today, as one stored before it would."""
    namespaces = [parse_object({"apiVersion": "stockade.io/v1", "kind": "Namespace", "metadata": {"name": n}})
                  for n in ("a", "b")]
    return DesiredState.from_objects(1, [*namespaces, *workloads])


def _keys(rs: Ruleset) -> dict[str, list[str]]:
    return {"egress": [k for k, _ in rs.vmap("egress_dispatch").elements],
            "ingress": [k for k, _ in rs.vmap("ingress_dispatch").elements],
            "ifaces": list(rs.set("workload_ifaces").elements)}


@pytest.mark.parametrize("order", ["first-wins-in-input", "reversed-input"])
def test_two_workloads_on_one_interface_program_the_first_and_report_the_other(order: str) -> None:
    from stockade.compile.host import NotProgrammed, compile_host_program

    # b/tap1 names the interface a/w derives for itself; a/w comes first by namespace/name.
    a_w = _local("w", "a", "198.18.10.1")
    derived = workload_interface(a_w)  # type: ignore[arg-type]
    b_x = _local("x", "b", "198.18.10.2", interface=derived)
    ordered = [a_w, b_x] if order == "first-wins-in-input" else [b_x, a_w]
    compiled = compile_host_program(_unvalidated(*ordered), HOST)
    keys = _keys(compiled.ruleset)
    for name, elements in keys.items():
        assert len(elements) == len(set(elements)) == 1, (name, elements)  # no key twice: the kernel takes it
    assert workload_chain(compiled.ruleset, "a/w", "ingress")  # the first keeps the interface
    assert not [c for c in compiled.ruleset.chains if c.comment and "Workload b/x" in c.comment]
    [skipped] = compiled.not_programmed
    assert skipped.workload == "b/x" and derived in skipped.reason and "a/w" in skipped.reason
    assert skipped.to_dict() == {"object": "b/x", "reason": skipped.reason}
    # The rendered transaction holds each dispatch key once, too.
    text = render.to_json(render.full_replace(compiled.ruleset))
    assert text.count(f'"{derived}"') == 4  # guard, egress and ingress maps, workload_ifaces


@pytest.mark.parametrize("iface", ["lo", "fab0"])
def test_a_workload_on_an_interface_of_the_host_is_not_programmed(iface: str) -> None:
    from stockade.compile.host import compile_host_program

    compiled = compile_host_program(_unvalidated(_local("w", "a", "198.18.10.1"),
                                                 _local("up", "b", "198.18.10.2", interface=iface)), HOST)
    assert iface not in _keys(compiled.ruleset)["ifaces"]
    assert [(n.workload, iface in n.reason) for n in compiled.not_programmed] == [("b/up", True)]


def test_the_same_interface_on_two_hosts_is_programmed_on_each() -> None:
    from stockade.compile.host import compile_host_program

    state = _unvalidated(_local("w", "a", "198.18.10.1", interface="tap1"),
                         _local("x", "b", "198.18.10.2", interface="tap1", host="hv2"))
    for host in (HOST, "hv2"):
        compiled = compile_host_program(state, host)
        assert _keys(compiled.ruleset)["ifaces"] == ["tap1"] and compiled.not_programmed == ()
