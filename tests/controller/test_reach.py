"""controller.reach: every answer is `trace_flow`'s, on real desired states (the golden inputs);
the probes are the ports in play plus any other port; a tenant's answer names no other
namespace's workload, rule or port; the size bound refuses clearly."""

from __future__ import annotations

from typing import Any, Literal

import pytest

from stockade.compile.trace import Flow, trace_flow
from stockade.controller.reach import MAX_PROBES_PER_PAIR, Probe, probes_for, reach
from stockade.controller.visibility import HIDDEN
from stockade.errors import NotFoundError, PayloadTooLarge
from stockade.model.kinds import parse_object
from stockade.model.state import DesiredState
from tests.controller.controller_docs import namespace, workload
from tests.golden_states import load_state

EVERYTHING = lambda ns: True  # noqa: E731  (an unscoped caller)
CASES = ("shop", "cluster_policies", "allow_until_selected", "default_deny", "single_family")


def _flow(src: tuple[str, str], dst: tuple[str, str], row: dict[str, Any], family: Literal[4, 6]) -> Flow:
    if row["protocol"] == "icmp":
        return Flow(src, dst, "icmp", None, row["family"], row["icmpType"], row["icmpCode"])
    return Flow(src, dst, row["protocol"], row["port"], family)


def _pair_family(state: DesiredState, a: tuple[str, str], b: tuple[str, str]) -> Literal[4, 6]:
    fams = [{4 if "." in ip else 6 for ip in state.workload_ips(state.workloads[k])} for k in (a, b)]
    common = fams[0] & fams[1]
    return 4 if 4 in common else 6


@pytest.mark.parametrize("case", CASES)
def test_every_row_of_every_pair_is_what_trace_says(case: str) -> None:
    state = load_state(case)
    checked = 0
    for subject in sorted(state.workloads):
        answer = reach(state, subject, EVERYTHING)
        peers = {e["peer"] for e in answer["outgoing"]} | {e["peer"] for e in answer["incoming"]}
        assert peers == {f"{k[0]}/{k[1]}" for k in state.workloads if k != subject}
        for way in ("outgoing", "incoming"):
            for entry in answer[way]:
                peer = tuple(entry["peer"].split("/", 1))
                src, dst = (subject, peer) if way == "outgoing" else (peer, subject)
                if not entry["rows"]:  # only when the two have no address family in common
                    assert entry["problems"] == ["no address family in common"], (src, dst, entry)
                    assert not {ip.count(".") for ip in state.workload_ips(state.workloads[src])} & \
                        {ip.count(".") for ip in state.workload_ips(state.workloads[dst])}
                    continue
                assert sum(r["other"] for r in entry["rows"]) >= 1  # always "any other port"
                for row in entry["rows"]:
                    traced = trace_flow(state, _flow(src, dst, row, _pair_family(state, src, dst)))
                    assert (row["verdict"], row["rule"]) == (traced.verdict, traced.deciding_rule), (src, dst, row)
                    checked += 1
    # single_family's two workloads share no address family: nothing to trace between them.
    assert checked > len(state.workloads) or (case == "single_family" and checked == 0)


def test_the_ports_in_play_are_probed_and_named_ports_resolve_on_the_destination() -> None:
    state = load_state("shop")
    incoming = {e["peer"]: e for e in reach(state, ("shop", "web-2"), EVERYTHING)["incoming"]}
    rows = {r["label"]: r for r in incoming["shop/lb-1"]["rows"]}
    # web-2's http is 8081 (web-1's is 8080): the name resolves on the destination.
    assert rows["tcp/http (8081)"]["verdict"] == "allow"
    assert rows["tcp/http (8081)"]["rule"] == "shop/web/http-from-lb"
    assert rows["tcp/http (8081)"]["side"] == "ingress"
    other = [r for r in incoming["shop/lb-1"]["rows"] if r["other"] and r["protocol"] == "tcp"]
    assert other and other[0]["verdict"] == "deny"
    assert incoming["shop/lb-1"]["summary"] == "partial"


def test_any_other_port_is_one_no_rule_in_play_names() -> None:
    docs = [namespace("n"), workload("a", ns="n", ips=["198.18.0.1"]),
            {"apiVersion": "stockade.io/v1", "kind": "Policy", "metadata": {"name": "high", "namespace": "n"},
             "spec": {"appliesTo": {"selector": {}}, "ingress": [
                 {"action": "allow", "ports": [{"protocol": "TCP", "port": 65000, "endPort": 65535},
                                               {"protocol": "UDP"}]}]}}]
    state = DesiredState.from_objects(1, [parse_object(d) for d in docs])
    policy = state.policies[("n", "high")]
    probes = probes_for([(policy, "ingress")], state.workloads[("n", "a")])
    assert probes == [Probe("tcp", 65000, label="tcp/65000-65535"),
                      Probe("tcp", 64999, other=True, label="tcp/other (64999)"),
                      Probe("udp", 65535, other=True, label="udp/other (65535)")]


def _two_tenants() -> DesiredState:
    """a/web talks to b's database; b's ingress policy names 6379, which a's policies never do."""
    docs = [namespace("a"), namespace("b"),
            workload("web", ns="a", host="hv1", ips=["198.18.1.10"], tier="web"),
            workload("cache", ns="b", host="hv2", ips=["198.18.2.20"], tier="cache"),
            workload("db", ns="b", host="hv2", ips=["198.18.2.21"], tier="db"),
            {"apiVersion": "stockade.io/v1", "kind": "Policy", "metadata": {"name": "out", "namespace": "a"},
             "spec": {"appliesTo": {"selector": {}}, "egress": [
                 {"id": "to-b", "action": "allow", "to": [{"selector": {}, "namespaceSelector": {}}],
                  "ports": [{"protocol": "TCP", "port": 5432}]}]}},
            {"apiVersion": "stockade.io/v1", "kind": "Policy", "metadata": {"name": "secret-in", "namespace": "b"},
             "spec": {"appliesTo": {"selector": {"matchLabels": {"tier": "cache"}}}, "ingress": [
                 {"id": "redis-from-a", "action": "allow", "ports": [{"protocol": "TCP", "port": 6379}]}]}}]
    return DesiredState.from_objects(3, [parse_object(d) for d in docs])


def test_a_tenant_sees_other_namespaces_as_their_namespace_only() -> None:
    state = _two_tenants()
    admin = reach(state, ("a", "web"), EVERYTHING)
    assert [e["peer"] for e in admin["outgoing"]] == ["b/cache", "b/db"]
    assert any(r["label"] == "tcp/6379" for r in admin["outgoing"][0]["rows"])  # b's port, for the operator

    tenant = reach(state, ("a", "web"), lambda ns: ns == "a")
    assert [e["peer"] for e in tenant["outgoing"]] == [f"b/{HIDDEN}"]
    assert [e["peer"] for e in tenant["incoming"]] == [f"b/{HIDDEN}"]
    text = str(tenant)
    for secret in ("cache", "db", "secret-in", "redis-from-a", "6379", "198.18.2."):
        assert secret not in text, f"a tenant's reach answer shows {secret!r}: {text}"
    rows = tenant["outgoing"][0]["rows"]
    # Both b workloads are allowed on 5432 by a's own rule, and b's ingress decides the rest.
    assert {(r["label"], r["verdict"], r["rule"]) for r in rows if r["label"] == "tcp/5432"} == {
        ("tcp/5432", "deny", f"b/{HIDDEN}")}
    assert all(r["rule"] in ("a/out/to-b", f"b/{HIDDEN}", "a/default-deny/egress") for r in rows)


def test_probes_per_pair_are_bounded_and_the_rest_counted() -> None:
    ports = [{"protocol": "TCP", "port": p} for p in range(1000, 1000 + MAX_PROBES_PER_PAIR + 5)]
    docs = [namespace("n"), workload("a", ns="n", ips=["198.18.0.1"]), workload("b", ns="n", ips=["198.18.0.2"]),
            {"apiVersion": "stockade.io/v1", "kind": "Policy", "metadata": {"name": "many", "namespace": "n"},
             "spec": {"appliesTo": {"selector": {}}, "ingress": [{"action": "allow", "ports": ports}]}}]
    state = DesiredState.from_objects(1, [parse_object(d) for d in docs])
    entry = reach(state, ("n", "a"), EVERYTHING)["incoming"][0]
    assert len([r for r in entry["rows"] if not r["other"]]) == MAX_PROBES_PER_PAIR
    assert entry["omittedProbes"] == 5


def test_above_the_bound_it_is_refused_naming_the_way_out() -> None:
    state = load_state("shop")
    with pytest.raises(PayloadTooLarge, match="stockade trace"):
        reach(state, ("shop", "web-1"), EVERYTHING, max_peers=len(state.workloads) - 2)
    with pytest.raises(NotFoundError, match="shop/nope"):
        reach(state, ("shop", "nope"), EVERYTHING)
