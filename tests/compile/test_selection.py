"""A namespaced policy selects workloads of its own namespace only, in the compiler too.

Validation refuses a Policy whose appliesTo reaches into another namespace
(tests/model/test_validation.py); these tests hand such states to the compiler
directly, as a state stored before that check would, and check that one
tenant's policy still never decides for another tenant's workloads.
"""

from __future__ import annotations

from typing import Any

import pytest

from stockade.compile.host import compile_host
from stockade.compile.selection import Selection
from stockade.compile.trace import Flow, trace_flow
from stockade.model.kinds import parse_object
from stockade.model.objects import GlobalPolicy, Policy
from stockade.model.state import DesiredState
from tests.compile.test_host import workload_chain

API = "stockade.io/v1"


def ns(name: str) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Namespace", "metadata": {"name": name, "labels": {"tenant": name}}}


def wl(name: str, namespace: str, ip: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Workload",
            "metadata": {"name": name, "namespace": namespace, "labels": {"tier": "web", **labels}},
            "spec": {"host": "hv1", "ips": [ip]}}


def web_group(namespace: str) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Group", "metadata": {"name": "web", "namespace": namespace},
            "spec": {"selector": {"matchLabels": {"tier": "web"}}}}


def open_all(applies_to: dict[str, Any], namespace: str = "a", name: str = "x") -> dict[str, Any]:
    """`Policy a/x`: allow every ingress to what it applies to (the attack of issue 13)."""
    return {"apiVersion": API, "kind": "Policy", "metadata": {"name": name, "namespace": namespace},
            "spec": {"appliesTo": applies_to, "ingress": [{"id": "open", "action": "allow"}]}}


def egress_open(namespace: str) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Policy", "metadata": {"name": "out", "namespace": namespace},
            "spec": {"appliesTo": {"group": "web"}, "egress": [{"action": "allow"}]}}


def world(*extra: dict[str, Any]) -> DesiredState:
    """Tenants a and b, each a web workload on hv1 that may send anything; no ingress is
    allowed (deny by default) unless `extra` allows it.

    Built without validation, as a state that predates it."""
    docs = [ns("a"), ns("b"), wl("web-a", "a", "198.18.10.1"), wl("web-b", "b", "198.18.10.2"),
            web_group("a"), web_group("b"), egress_open("a"), egress_open("b"), *extra]
    return DesiredState.from_objects(1, [parse_object(d) for d in docs])


def policy_of(state: DesiredState, namespace: str, name: str) -> Policy | GlobalPolicy:
    return state.policies[(namespace, name)]


ATTACKS = {
    "group of another namespace": {"group": "b/web"},
    "namespaceSelector matching another namespace": {"selector": {"matchLabels": {"tier": "web"}},
                                                       "namespaceSelector": {"matchLabels": {"tenant": "b"}}},
    "namespaceSelector matching every namespace": {"selector": {}, "namespaceSelector": {}},
}


@pytest.mark.parametrize("case", sorted(ATTACKS))
def test_namespaced_policy_never_applies_to_another_namespaces_workload(case: str) -> None:
    state = world(open_all(ATTACKS[case]))
    sel = Selection(state)
    pol = policy_of(state, "a", "x")
    assert all(k[0] == "a" for k in sel.applied(pol))
    assert not sel.applies_to(pol, ("b", "web-b"))


@pytest.mark.parametrize("case", sorted(ATTACKS))
def test_compiled_program_keeps_another_tenants_workload_closed(case: str) -> None:
    state = world(open_all(ATTACKS[case]))
    rs = compile_host(state, "hv1")
    jumps = [r.verdict for r in workload_chain(rs, "b/web-b", "ingress").rules]
    assert not any("Policy a/x" in (rs.chain(j.target).comment or "") for j in jumps if hasattr(j, "target"))
    # The same program the kernel runs, traced: b's default deny decides, not a's allow.
    result = trace_flow(state, Flow(("a", "web-a"), ("b", "web-b"), "tcp", 80))
    assert result.verdict == "deny"
    assert result.deciding_rule == "b/default-deny/ingress"


def test_a_group_of_another_namespace_yields_none_of_its_workloads_to_a_namespaced_policy() -> None:
    # b's group selects every workload of b; named from a's appliesTo it must yield nothing.
    state = world(open_all({"group": "b/web"}))
    assert Selection(state).group_workloads(("b", "web")) == (("b", "web-b"),)
    assert Selection(state).applied(policy_of(state, "a", "x")) == ()


def test_namespaced_policy_still_applies_to_its_own_workloads() -> None:
    state = world(open_all({"group": "web"}), open_all({"selector": {}}, name="y"))
    sel = Selection(state)
    assert sel.applied(policy_of(state, "a", "x")) == (("a", "web-a"),)
    assert sel.applied(policy_of(state, "a", "y")) == (("a", "web-a"),)
    assert sel.applies_to(policy_of(state, "a", "x"), ("a", "web-a"))
    result = trace_flow(state, Flow(("b", "web-b"), ("a", "web-a"), "tcp", 80))
    assert result.verdict == "allow" and result.deciding_rule == "a/x/open"


def test_global_policy_still_selects_across_namespaces() -> None:
    gp = {"apiVersion": API, "kind": "GlobalPolicy", "metadata": {"name": "platform"},
          "spec": {"tier": "platform", "appliesTo": {"selector": {"matchLabels": {"tier": "web"}}},
                   "ingress": [{"action": "allow"}], "egress": [{"action": "allow"}]}}
    state = world(gp)
    assert Selection(state).applied(policy_of(state, "", "platform")) == (("a", "web-a"), ("b", "web-b"))
    assert trace_flow(state, Flow(("a", "web-a"), ("b", "web-b"), "tcp", 80)).verdict == "allow"


def test_cross_namespace_group_as_a_peer_still_matches_its_members() -> None:
    # b opens its web workloads to a's web group: a peer may name another namespace.
    peer = {"apiVersion": API, "kind": "Policy", "metadata": {"name": "from-a", "namespace": "b"},
            "spec": {"appliesTo": {"group": "web"}, "ingress": [{"action": "allow", "from": [{"group": "a/web"}]}]}}
    state = world(peer)
    result = trace_flow(state, Flow(("a", "web-a"), ("b", "web-b"), "tcp", 80))
    assert result.verdict == "allow" and result.deciding_rule == "b/from-a/ingress-0"


def test_network_policy_pod_selector_stays_in_its_namespace() -> None:
    # A NetworkPolicy in a whose podSelector matches labels b's pods carry selects a's pods only.
    np = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
          "metadata": {"name": "open", "namespace": "a"},
          "spec": {"podSelector": {"matchLabels": {"tier": "web"}}, "ingress": [{}]}}
    state = world(np)
    sel = Selection(state)
    [native] = [p for p in state.enforced_policies if p.metadata.name == "open"]
    assert sel.applied(native) == (("a", "web-a"),)
    assert not sel.applies_to(native, ("b", "web-b"))
    assert trace_flow(state, Flow(("a", "web-a"), ("b", "web-b"), "tcp", 80)).verdict == "deny"
