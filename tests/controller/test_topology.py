"""controller.topology: the picture of a real desired state (the golden inputs), with the
compiler's own membership, every kind of policy, agents' sync state, and a tenant's cut."""

from __future__ import annotations

from typing import Any

from stockade.compile.selection import Selection
from stockade.controller.records import AgentStatus
from stockade.controller.topology import build_topology
from stockade.model.reports import AgentReport, Endpoint
from tests.golden_states import load_state

EVERYTHING = lambda ns: True  # noqa: E731  (an unscoped caller)


def _by_id(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {i["id"]: i for i in items}


def test_hosts_hold_their_workloads_with_labels_addresses_and_namespace() -> None:
    topo = build_topology(load_state("shop"), [], EVERYTHING, scoped=False)
    hosts = {h["name"]: h for h in topo["hosts"]}
    assert hosts["hv1"]["workloads"] == ["ops/dns-1", "shop/db-1", "shop/lb-1", "shop/web-1"]
    assert hosts["hv2"]["workloads"] == ["ops/bastion", "shop/app-1", "shop/web-2"]
    web1 = _by_id(topo["workloads"])["shop/web-1"]
    assert web1["namespace"] == "shop" and web1["host"] == "hv1"
    assert web1["labels"] == {"env": "prod", "tier": "web"}
    assert web1["ips"] == ["198.18.10.11", "2001:db8:10::11"]
    assert web1["ports"] == [{"name": "http", "protocol": "TCP", "port": 8080}]
    assert web1["endpoint"] == {"attachment": "routed", "createdBy": "stockade"}
    # db-1 names its interface: a runtime made it.
    assert _by_id(topo["workloads"])["shop/db-1"]["endpoint"]["createdBy"] == "runtime"
    assert [n["name"] for n in topo["namespaces"]] == ["ops", "shop"]


def test_group_members_are_the_compilers() -> None:
    state = load_state("shop")
    topo = build_topology(state, [], EVERYTHING, scoped=False)
    groups = _by_id(topo["groups"])
    assert groups["shop/web"]["members"] == ["shop/web-1", "shop/web-2"]
    assert groups["shop/db"]["members"] == ["shop/db-1"]          # a static member
    assert groups["shop/clients"]["cidrs"] == ["198.19.0.0/16", "2001:db8:ff::/48"]
    selection = Selection(state)
    for gkey in state.groups:
        assert groups[f"{gkey[0]}/{gkey[1]}"]["members"] == [f"{k[0]}/{k[1]}" for k in selection.group_workloads(gkey)]


def test_policies_apply_per_direction_as_the_compiler_selects() -> None:
    topo = build_topology(load_state("shop"), [], EVERYTHING, scoped=False)
    policies = _by_id(topo["policies"])
    # ops/dns has only ingress rules: it selects dns-1 for ingress, nobody for egress.
    assert policies["Policy:ops/dns"]["appliesTo"] == {"ingress": ["ops/dns-1"], "egress": []}
    assert policies["Policy:shop/app"]["group"] == "shop/app"
    assert policies["Policy:shop/app"]["appliesTo"]["ingress"] == ["shop/app-1"]


def test_every_kind_of_policy_is_listed_under_the_kind_it_was_written_as() -> None:
    topo = build_topology(load_state("cluster_policies"), [], EVERYTHING, scoped=False)
    kinds = {p["id"]: p["kind"] for p in topo["policies"]}
    assert kinds == {"NetworkPolicy:app/web-from-ops": "NetworkPolicy",
                     "ClusterNetworkPolicy:guardrails": "ClusterNetworkPolicy",
                     "BaselineAdminNetworkPolicy:default": "BaselineAdminNetworkPolicy"}
    np = _by_id(topo["policies"])["NetworkPolicy:app/web-from-ops"]
    assert np["appliesTo"]["ingress"] == ["app/web"]


def test_hosts_carry_their_agents_sync_state() -> None:
    state = load_state("shop", revision=7)
    agents = [AgentStatus("hv1", AgentReport(revision=7, in_sync=True, endpoints={
                  "shop/web-1": Endpoint(netns="ns-web-1", interface="stkweb1", mac="02:00:00:00:00:01")}),
                          "2026-01-01T00:00:00.000+00:00", True),
              AgentStatus("hv2", AgentReport(revision=6, in_sync=True, error="boom on shop/app-1"),
                          "2026-01-01T00:00:00.000+00:00", True),
              AgentStatus("hv9", AgentReport(revision=7, in_sync=True), "2026-01-01T00:00:00.000+00:00", False)]
    topo = build_topology(state, agents, EVERYTHING, scoped=False)
    hosts = {h["name"]: h for h in topo["hosts"]}
    assert hosts["hv1"]["agent"]["current"] is True
    assert hosts["hv2"]["agent"]["current"] is False and hosts["hv2"]["agent"]["error"] == "boom on shop/app-1"
    assert hosts["hv9"]["workloads"] == [] and hosts["hv9"]["agent"]["reporting"] is False
    assert _by_id(topo["workloads"])["shop/web-1"]["endpoint"]["netns"] == "ns-web-1"

    tenant = build_topology(state, agents, lambda ns: ns == "shop", scoped=True)
    hosts = {h["name"]: h for h in tenant["hosts"]}
    assert set(hosts) == {"hv1", "hv2"}              # not hv9: none of its workloads there
    assert "boom" not in str(hosts["hv2"]["agent"])  # another tenant's workload may be in the text


def test_a_tenant_sees_its_namespaces_alone() -> None:
    state = load_state("shop")
    topo = build_topology(state, [], lambda ns: ns == "shop", scoped=True)
    text = str(topo)
    assert {w["namespace"] for w in topo["workloads"]} == {"shop"}
    assert {g["namespace"] for g in topo["groups"]} == {"shop"}
    assert {p["namespace"] for p in topo["policies"]} == {"shop"}
    assert [n["name"] for n in topo["namespaces"]] == ["shop"]
    assert "ops" not in text and "bastion" not in text and "dns-1" not in text
    assert topo["hosts"][1]["workloads"] == ["shop/app-1", "shop/web-2"]
    # Platform objects a tenant may not read are no nodes either.
    cluster = build_topology(load_state("cluster_policies"), [], lambda ns: ns == "app", scoped=True)
    assert [p["id"] for p in cluster["policies"]] == ["NetworkPolicy:app/web-from-ops"]
