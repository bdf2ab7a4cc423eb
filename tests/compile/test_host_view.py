"""HostView: a host's view holds what it enforces and nothing of tenants it does not run.

The invariant that makes serving views safe: compiling a host from its view gives
byte for byte the program compiled from the whole state.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockade.compile.host import compile_host_program
from stockade.compile.host_view import ScopeIndex, host_scope, host_view, peer_document, view_document
from stockade.model.kinds import parse_object, to_document
from stockade.model.state import DesiredState
from stockade.nft import render
from tests.compile.test_host import CASES, load_state
from tests.policy_reference import policy_sets, world_documents

HOSTS = ("hv1", "hv2", "hv3")


def state_of(docs: list[dict[str, Any]], revision: int = 1) -> DesiredState:
    return DesiredState.from_objects(revision, [parse_object(d, i) for i, d in enumerate(docs)])


def program(state: DesiredState, host: str) -> tuple[str, tuple[Any, ...]]:
    compiled = compile_host_program(state, host)
    return json.dumps(render.full_replace(compiled.ruleset), sort_keys=True), compiled.not_programmed


def assert_view_compiles_alike(state: DesiredState, host: str) -> None:
    assert program(host_view(state, host), host) == program(state, host), host


def workload(ns: str, name: str, host: str, n: int, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "stockade.io/v1", "kind": "Workload",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name, **labels},
                         "annotations": {"owner": f"{ns}-secret-contact"}},
            "spec": {"host": host, "ips": [f"198.18.50.{n}"], "mac": f"02:00:00:00:00:{n:02x}",
                     "ports": [{"name": "http", "port": 8000 + n}]}}


def group(ns: str, name: str, **match: str) -> dict[str, Any]:
    return {"apiVersion": "stockade.io/v1", "kind": "Group", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"matchLabels": match}}}


def policy(ns: str, name: str, applies: dict[str, Any], peer: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "stockade.io/v1", "kind": "Policy", "metadata": {"name": name, "namespace": ns},
            "spec": {"appliesTo": applies, "ingress": [{"action": "allow", "from": [peer]}]}}


def tenants() -> list[dict[str, Any]]:
    """a on hv1, b on hv2; a's policy names b's group `api` as a peer; b has a secret group."""
    return [
        {"apiVersion": "stockade.io/v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"t": ns}},
         "spec": {"defaultAction": "deny"}} for ns in ("a", "b")
    ] + [
        workload("a", "web", "hv1", 1), workload("b", "api", "hv2", 2), workload("b", "db", "hv2", 3),
        group("b", "api", app="api"), group("b", "secret-db", app="db"), group("a", "webs", app="web"),
        policy("a", "from-b-api", {"group": "webs"}, {"group": "b/api"}),
        policy("b", "db-private", {"selector": {"matchLabels": {"app": "db"}}}, {"group": "secret-db"}),
        {"apiVersion": "stockade.io/v1", "kind": "GlobalPolicy", "metadata": {"name": "platform"},
         "spec": {"tier": "platform", "appliesTo": {"selector": {}},
                  "egress": [{"action": "deny", "to": [{"cidr": "198.19.0.0/16"}]}]}},
    ]


# ------------------------------------------------------------------ what a view holds


def test_a_host_holds_no_policy_or_group_of_a_tenant_it_does_not_run() -> None:
    view = host_view(state_of(tenants()), "hv1")
    assert set(view.policies) == {("a", "from-b-api"), ("", "platform")}
    # b's group `api` is a peer of a's policy, so hv1 needs it; b's other group it never sees.
    assert set(view.groups) == {("a", "webs"), ("b", "api")}


def test_other_hosts_workloads_are_held_as_peers_without_mac_interface_or_annotations() -> None:
    view = host_view(state_of(tenants()), "hv1")
    peer = view.workloads[("b", "api")]
    assert (peer.spec.ips, peer.metadata.labels, [p.port for p in peer.spec.ports]) == (
        ["198.18.50.2"], {"app": "api"}, [8002])
    assert peer.spec.mac is None and peer.spec.interface is None and not peer.metadata.annotations
    own = view.workloads[("a", "web")]
    assert own.spec.mac == "02:00:00:00:00:01" and own.metadata.annotations == {"owner": "a-secret-contact"}


def test_namespaces_outside_the_scope_keep_their_labels_only() -> None:
    view = host_view(state_of(tenants()), "hv1")
    assert view.namespaces["b"].metadata.labels == {"t": "b"}
    doc = peer_document(to_document(state_of(tenants()).namespaces["b"]))
    assert "spec" not in doc


def test_a_host_without_workloads_holds_only_the_platform_and_peers() -> None:
    view = host_view(state_of(tenants()), "hv9")
    assert set(view.policies) == {("", "platform")} and not view.groups


def test_deleted_objects_are_told_to_the_hosts_that_hold_them() -> None:
    scope = host_scope(state_of(tenants()), "hv1")
    assert scope.holds("Group", "b", "api") and not scope.holds("Group", "b", "secret-db")
    assert scope.holds("Policy", "a", "x") and not scope.holds("Policy", "b", "db-private")
    assert not scope.holds("NetworkPolicy", "b", "np") and scope.holds("Workload", "b", "gone")


def test_view_document_leaves_the_caller_s_document_alone() -> None:
    doc = to_document(state_of(tenants()).workloads[("b", "api")])
    before = copy.deepcopy(doc)
    assert view_document(host_scope(state_of(tenants()), "hv1"), doc) != doc
    assert doc == before


# ------------------------------------------------------------------ when the scope changes


def test_scope_changes_when_a_namespace_first_lands_on_the_host() -> None:
    docs = tenants()
    before = host_scope(state_of(docs), "hv1").fingerprint
    after = host_scope(state_of(docs + [workload("b", "cache", "hv1", 4)]), "hv1")
    assert after.fingerprint != before and "b" in after.namespaces


def test_scope_changes_when_a_policy_names_another_group() -> None:
    docs = tenants()
    before = host_scope(state_of(docs), "hv1").fingerprint
    docs.append(policy("a", "from-db", {"group": "webs"}, {"group": "b/secret-db"}))
    after = host_scope(state_of(docs), "hv1")
    assert after.fingerprint != before and ("b", "secret-db") in after.groups


def test_scope_stays_when_labels_addresses_or_other_hosts_change() -> None:
    docs = tenants()
    before = host_scope(state_of(docs), "hv1").fingerprint
    docs[3]["metadata"]["labels"] = {"app": "api", "v": "2"}   # b/api on hv2
    docs[3]["spec"]["ips"] = ["198.18.50.99"]
    docs.append(workload("b", "more", "hv2", 5))
    assert host_scope(state_of(docs), "hv1").fingerprint == before


def test_one_index_serves_every_host() -> None:
    state = state_of(tenants())
    index = ScopeIndex(state)
    assert [index.scope(h) for h in HOSTS] == [host_scope(state, h) for h in HOSTS]


# ------------------------------------------------------------------ same program from the view


@pytest.mark.parametrize("case", CASES)
def test_golden_worlds_compile_alike_from_every_host_s_view(case: str) -> None:
    state = load_state(case)
    for host in {w.spec.host for w in state.workloads.values()} | {"hv9"}:
        assert_view_compiles_alike(state, host)


def test_tenants_compile_alike_from_every_host_s_view() -> None:
    state = state_of(tenants())
    for host in HOSTS:
        assert_view_compiles_alike(state, host)


def _with_groups(docs: list[dict[str, Any]], draw: st.DrawFn) -> list[dict[str, Any]]:
    """Some peers and appliesTo become group references, within and across namespaces. On copies:
    the reference's documents (its OPEN_BASELINE) are shared with other tests."""
    docs = copy.deepcopy(docs)
    for doc in docs:
        spec, ns = doc["spec"], doc["metadata"].get("namespace")
        if draw(st.integers(0, 3)) == 0:
            spec["appliesTo"] = {"group": draw(st.sampled_from(["webs", "red/webs", "blue/dbs"]))
                                 if ns is None else "webs"}
        for direction, side in (("ingress", "from"), ("egress", "to")):
            for rule in spec.get(direction, []):
                if rule.get(side) and draw(st.booleans()):
                    own = ["webs"] if ns is not None else []
                    names = ["red/webs", "blue/dbs", "blue/nets", "blue/ghost", *own]  # ghost: no such group
                    rule[side] = [{"group": draw(st.sampled_from(names))}]
    return docs


@st.composite
def worlds(draw: st.DrawFn) -> list[dict[str, Any]]:
    docs = world_documents() + [
        # hv3 runs red only: blue's policies and groups must stay off it.
        workload("red", "solo", "hv3", 7, role="web"),
        group("red", "webs", role="web"), group("blue", "webs", role="web"), group("blue", "dbs", role="db"),
        {"apiVersion": "stockade.io/v1", "kind": "Group", "metadata": {"name": "nets", "namespace": "blue"},
         "spec": {"cidrs": ["198.19.7.0/24"]}},
    ]
    return docs + _with_groups(draw(policy_sets(6)), draw)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_random_worlds_compile_alike_from_every_host_s_view(docs: list[dict[str, Any]]) -> None:
    state = state_of(docs)
    for host in HOSTS:
        assert_view_compiles_alike(state, host)
