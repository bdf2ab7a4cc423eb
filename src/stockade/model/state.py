"""DesiredState: one immutable snapshot of everything the users asked for, at one revision.

Built by the controller (from its store) and by the agent (from list + watch);
the compiler reads only this. Pure, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable, Mapping

from stockade.model import admin_policy, cluster_policy
from stockade.model.admin_policy import AdminNetworkPolicy, BaselineAdminNetworkPolicy
from stockade.model.cluster_policy import ClusterNetworkPolicy
from stockade.model.k8s import NetworkPolicy, to_native
from stockade.model.kinds import ObjectKey, StockadeObject, key_of
from stockade.model.objects import (
    BUILTIN_TIERS,
    GlobalPolicy,
    Group,
    Namespace,
    Policy,
    Tier,
    Workload,
)


UpstreamClusterPolicy = ClusterNetworkPolicy | AdminNetworkPolicy | BaselineAdminNetworkPolicy


def _native_cluster_policy(policy: UpstreamClusterPolicy) -> GlobalPolicy:
    if isinstance(policy, ClusterNetworkPolicy):
        return cluster_policy.to_native(policy)
    return admin_policy.to_native(policy)


@dataclass(frozen=True)
class DesiredState:
    revision: int
    namespaces: Mapping[str, Namespace] = field(default_factory=dict)
    workloads: Mapping[tuple[str, str], Workload] = field(default_factory=dict)
    groups: Mapping[tuple[str, str], Group] = field(default_factory=dict)
    policies: Mapping[tuple[str, str], Policy | GlobalPolicy] = field(default_factory=dict)
    tiers: Mapping[str, Tier] = field(default_factory=dict)
    network_policies: Mapping[tuple[str, str], NetworkPolicy] = field(default_factory=dict)
    # The upstream cluster-wide kinds (ClusterNetworkPolicy, AdminNetworkPolicy,
    # BaselineAdminNetworkPolicy), by (kind, name).
    cluster_policies: Mapping[tuple[str, str], UpstreamClusterPolicy] = field(default_factory=dict)

    @classmethod
    def from_objects(cls, revision: int, objects: Iterable[StockadeObject]) -> "DesiredState":
        namespaces: dict[str, Namespace] = {}
        workloads: dict[tuple[str, str], Workload] = {}
        groups: dict[tuple[str, str], Group] = {}
        policies: dict[tuple[str, str], Policy | GlobalPolicy] = {}
        tiers: dict[str, Tier] = {}
        network_policies: dict[tuple[str, str], NetworkPolicy] = {}
        cluster_policies: dict[tuple[str, str], UpstreamClusterPolicy] = {}
        for obj in objects:
            ns, name = obj.metadata.namespace or "", obj.metadata.name
            if isinstance(obj, Tier):
                tiers[name] = obj
            elif isinstance(obj, Namespace):
                namespaces[name] = obj
            elif isinstance(obj, Workload):
                workloads[(ns, name)] = obj
            elif isinstance(obj, Group):
                groups[(ns, name)] = obj
            elif isinstance(obj, (Policy, GlobalPolicy)):
                policies[(ns, name)] = obj
            elif isinstance(obj, NetworkPolicy):
                network_policies[(ns, name)] = obj
            elif isinstance(obj, (ClusterNetworkPolicy, AdminNetworkPolicy, BaselineAdminNetworkPolicy)):
                cluster_policies[(obj.kind, name)] = obj
        return cls(revision, namespaces, workloads, groups, policies, tiers, network_policies, cluster_policies)

    def objects(self) -> list[StockadeObject]:
        out: list[StockadeObject] = [*self.tiers.values(), *self.namespaces.values(), *self.workloads.values(),
                                     *self.groups.values(), *self.policies.values(),
                                     *self.network_policies.values(), *self.cluster_policies.values()]
        return sorted(out, key=key_of)

    def get(self, key: ObjectKey) -> StockadeObject | None:
        if key.kind == "Tier":
            return self.tiers.get(key.name)
        if key.kind == "Namespace":
            return self.namespaces.get(key.name)
        if key.kind == "Workload":
            return self.workloads.get((key.namespace, key.name))
        if key.kind == "Group":
            return self.groups.get((key.namespace, key.name))
        if key.kind == "NetworkPolicy":
            return self.network_policies.get((key.namespace, key.name))
        if key.kind in ("ClusterNetworkPolicy", "AdminNetworkPolicy", "BaselineAdminNetworkPolicy"):
            return self.cluster_policies.get((key.kind, key.name))
        if key.kind in ("Policy", "GlobalPolicy"):
            found = self.policies.get((key.namespace, key.name))
            return found if found is not None and found.kind == key.kind else None
        return None

    def with_changes(self, revision: int, put: Iterable[StockadeObject] = (),
                     delete: Iterable[ObjectKey] = ()) -> "DesiredState":
        """A new state with objects put and keys deleted (the old one is untouched)."""
        by_key = {key_of(o): o for o in self.objects()}
        for key in delete:
            by_key.pop(key, None)
        for obj in put:
            by_key[key_of(obj)] = obj
        return DesiredState.from_objects(revision, by_key.values())

    @cached_property
    def enforced_policies(self) -> tuple[Policy | GlobalPolicy, ...]:
        """Every policy the compiler runs: native ones, and NetworkPolicies and ClusterNetworkPolicies in
        their native form."""
        return (*self.policies.values(), *(to_native(np) for _, np in sorted(self.network_policies.items())),
                *(_native_cluster_policy(c) for _, c in sorted(self.cluster_policies.items())))

    def tier_order(self) -> tuple[str, ...]:
        """Every tier, built-in and admin-defined, in evaluation order (order, then name)."""
        orders = {**BUILTIN_TIERS, **{name: t.spec.order for name, t in self.tiers.items()}}
        return tuple(sorted(orders, key=lambda n: (orders[n], n)))

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        ns = self.namespaces.get(namespace)
        if ns is None:
            return {"kubernetes.io/metadata.name": namespace}
        return ns.effective_labels()

    def workload_ips(self, workload: Workload) -> list[str]:
        """Spec addresses, or those the controller assigned (status.ips) when the spec has none."""
        if workload.spec.ips:
            return list(workload.spec.ips)
        status = workload.status or {}
        return list(status.get("ips") or [])
