"""What one host needs of the desired state, and nothing of the rest. Pure.

Two granularities of the same question, both here:

- `HostView` (the compile stage between desired state and Ruleset): the local workloads
  with their interfaces, the policies that select each, in evaluation order, and the local
  workloads left out; compile.host renders it.
- `HostScope` and `host_view` (what the controller serves an agent):

The controller serves an agent its host's view instead of the whole state, so a
host's credential (on a machine a tenant's VM may break out to) reads no more
than the host enforces. What a host needs:

- **full documents** of its own workloads; of every Policy, NetworkPolicy and
  Group in a namespace that has a workload on the host (a namespaced policy
  selects its own namespace only, so no other namespace's policy can apply
  here); of the groups those policies and every GlobalPolicy name, wherever
  they live; of every Tier and GlobalPolicy (the platform's, not a tenant's);
  and of the namespaces of its workloads (their default action);
- **peer documents** of every other workload and namespace: the names, labels,
  addresses and named ports that peer selectors match and rules resolve, and the
  addresses whose change of owner ends stale connections (compile.stale_flows).
  No MAC, interface, annotations or endpoint facts of other hosts' workloads.

Nothing else: another tenant's policies and groups never reach a host that runs
none of that tenant's workloads.

Invariant (tests/compile/test_host_view.py): compiling a host from its view
gives the same program as compiling it from the whole state.

The view depends on the state through a `HostScope` (the namespaces and groups
a host holds in full). An agent holds a view for one scope; when the scope
changes (a first workload of a namespace arrives, a policy names another group)
the controller answers its watch with 410 and the agent lists its new view.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterable, Literal, Mapping

from stockade.compile.program import AnyPolicy, CompileOptions, NotProgrammed, ordered_policies
from stockade.compile.selection import Selection, WorkloadKey
from stockade.model.kinds import parse_stored, to_document
from stockade.model.naming import workload_interface
from stockade.model.objects import GlobalPolicy, Policy, PolicySpec
from stockade.model.state import DesiredState
from stockade.model.validation import DEFAULT_RESERVED_INTERFACES, group_ref

Form = Literal["full", "peer"]
GroupKey = tuple[str, str]

# Kinds every host holds whole: cluster-scoped, written by platform admins only.
_PLATFORM_KINDS = frozenset({"Tier", "GlobalPolicy", "ClusterNetworkPolicy", "AdminNetworkPolicy",
                             "BaselineAdminNetworkPolicy"})
# Namespaced kinds a host holds only for the namespaces of its workloads.
_TENANT_POLICY_KINDS = frozenset({"Policy", "NetworkPolicy"})


@dataclass(frozen=True)
class HostScope:
    """Which namespaces' policies and groups, and which other groups, a host holds in full."""

    host: str
    namespaces: frozenset[str]
    groups: frozenset[GroupKey]

    @cached_property
    def fingerprint(self) -> str:
        """Short stable text naming this scope: an agent sends it back with each watch."""
        text = json.dumps([self.host, sorted(self.namespaces), sorted(self.groups)], separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def holds(self, kind: str, namespace: str, name: str) -> bool:
        """Does a host of this scope hold an object of this key (in some form)?"""
        if kind == "Group":
            return namespace in self.namespaces or (namespace, name) in self.groups
        if kind in _TENANT_POLICY_KINDS:
            return namespace in self.namespaces
        return True  # Tier, GlobalPolicy, and workloads and namespaces (full or as peers)

    def form(self, document: Mapping[str, Any]) -> Form | None:
        """How a host of this scope holds `document`: whole, as a peer, or not at all."""
        kind = str(document.get("kind"))
        meta = document.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name"))
        if kind == "Workload":
            return "full" if (document.get("spec") or {}).get("host") == self.host else "peer"
        if kind == "Namespace":
            return "full" if name in self.namespaces else "peer"
        if kind in _PLATFORM_KINDS:
            return "full"
        return "full" if self.holds(kind, namespace, name) else None


def _policy_groups(namespace: str, spec: PolicySpec) -> Iterable[GroupKey]:
    """The groups a policy names: in appliesTo and as peers, resolved against its namespace."""
    if spec.appliesTo.group is not None:
        yield group_ref(namespace, spec.appliesTo.group)
    for rule in (*spec.ingress, *spec.egress):
        for peer in (*(rule.from_ or ()), *(rule.to or ())):
            if peer.group is not None:
                yield group_ref(namespace, peer.group)


class ScopeIndex:
    """Every host's scope for one state, from one pass over it (built once per revision)."""

    def __init__(self, state: DesiredState) -> None:
        self._namespaces_by_host: dict[str, set[str]] = {}
        for (namespace, _), workload in state.workloads.items():
            self._namespaces_by_host.setdefault(workload.spec.host, set()).add(namespace)
        self._groups_by_namespace: dict[str, set[GroupKey]] = {}
        self._platform_groups: set[GroupKey] = set()
        for (namespace, _), policy in state.policies.items():
            if isinstance(policy, GlobalPolicy):
                self._platform_groups.update(_policy_groups("", policy.spec))
            elif isinstance(policy, Policy):
                self._groups_by_namespace.setdefault(namespace, set()).update(
                    _policy_groups(namespace, policy.spec))
        # NetworkPolicies name no groups (their peers are selectors and CIDRs).

    def scope(self, host: str) -> HostScope:
        namespaces = frozenset(self._namespaces_by_host.get(host, ()))
        groups = set(self._platform_groups)
        for namespace in namespaces:
            groups.update(self._groups_by_namespace.get(namespace, ()))
        # Groups of the host's own namespaces are held anyway: keep the set to the others.
        return HostScope(host, namespaces, frozenset(g for g in groups if g[0] not in namespaces))


def host_scope(state: DesiredState, host: str) -> HostScope:
    return ScopeIndex(state).scope(host)


def peer_document(document: Mapping[str, Any]) -> dict[str, Any]:
    """A workload or namespace as a peer: only what selectors, rules and address ownership use."""
    meta = document.get("metadata") or {}
    peer_meta = {k: meta[k] for k in ("name", "namespace", "labels") if meta.get(k)}
    out: dict[str, Any] = {"apiVersion": document.get("apiVersion"), "kind": document.get("kind"),
                           "metadata": peer_meta}
    if document.get("kind") == "Workload":
        spec = document.get("spec") or {}
        out["spec"] = {k: spec[k] for k in ("host", "ips", "ports") if k in spec}
        status_ips = (document.get("status") or {}).get("ips")
        if status_ips:
            out["status"] = {"ips": status_ips}
    return out


def view_document(scope: HostScope, document: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """`document` as a host of `scope` holds it, or None when the host holds no such object."""
    form = scope.form(document)
    if form is None:
        return None
    return document if form == "full" else peer_document(document)


def host_view(state: DesiredState, host: str) -> DesiredState:
    """The state as `host`'s agent holds it (what the controller serves that host)."""
    scope = host_scope(state, host)
    kept = (view_document(scope, to_document(o)) for o in state.objects())
    return DesiredState.from_objects(state.revision, (parse_stored(d) for d in kept if d is not None))


# ------------------------------------------------------------------ the compile stage


@dataclass(frozen=True)
class HostView:
    """What applies to one host: its programmable local workloads (sorted, with their
    interfaces), the policies that select each in evaluation order, and the local workloads
    the program leaves out. `selection` answers the membership questions the rules ask next."""

    state: DesiredState
    host: str
    tiers: tuple[str, ...]
    local: tuple[tuple[WorkloadKey, str], ...]
    policies: Mapping[WorkloadKey, tuple[AnyPolicy, ...]]
    not_programmed: tuple[NotProgrammed, ...]
    selection: Selection


def build_host_view(state: DesiredState, host: str, options: CompileOptions = CompileOptions()) -> HostView:
    selection = Selection(state)
    tiers = options.tiers or state.tier_order()
    ordered = ordered_policies(state, tiers)
    local, not_programmed = programmable_workloads(state, host, options.reserved_interfaces, options.left_out)
    # Each local workload asks each policy that could select it "do you apply to me?"; a
    # namespaced policy selects in its own namespace alone, even when its appliesTo names
    # another's group (refused by validation; see compile.selection), and a GlobalPolicy naming
    # a group in that group's. Listing every policy's members and scanning them per local
    # workload made this quadratic in the size of the whole policy (see docs/performance.md).
    by_ns: dict[str, list[AnyPolicy]] = {}
    for p in ordered:
        target = p.spec.appliesTo.group
        home = p.metadata.namespace or (group_ref("", target)[0] if target else "")
        by_ns.setdefault(home, []).append(p)
    rank = {id(p): i for i, p in enumerate(ordered)}
    applicable: dict[WorkloadKey, tuple[AnyPolicy, ...]] = {}
    for key, _ in local:
        candidates = sorted(by_ns.get(key[0], []) + by_ns.get("", []), key=lambda p: rank[id(p)])
        applicable[key] = tuple(p for p in candidates if selection.applies_to(p, key))
    return HostView(state, host, tiers, tuple(local), applicable, not_programmed, selection)


def programmable_workloads(state: DesiredState, host: str, reserved: frozenset[str] = DEFAULT_RESERVED_INTERFACES,
                           left_out: tuple[tuple[str, str], ...] = ()
                           ) -> tuple[list[tuple[WorkloadKey, str]], tuple[NotProgrammed, ...]]:
    """The local workloads with their interfaces, sorted, each interface once and none of the
    host's own; and the local workloads left out (also those in `left_out`). Deterministic: of
    two workloads on one interface the first by namespace/name keeps it, whatever order the
    state came in."""
    kept: list[tuple[WorkloadKey, str]] = []
    owner: dict[str, WorkloadKey] = {}
    skipped: list[NotProgrammed] = []
    refused = dict(left_out)
    for key in sorted(k for k, wl in state.workloads.items() if wl.spec.host == host):
        iface = workload_interface(state.workloads[key])
        name = f"{key[0]}/{key[1]}"
        if name in refused:
            skipped.append(NotProgrammed(name, refused[name]))
        elif iface in reserved:
            skipped.append(NotProgrammed(name, f"interface {iface} belongs to host {host}, not to a workload"))
        elif iface in owner:
            first = owner[iface]
            skipped.append(NotProgrammed(name, f"interface {iface} is also Workload {first[0]}/{first[1]}'s "
                                         f"on host {host}, which keeps it"))
        else:
            owner[iface] = key
            kept.append((key, iface))
    return kept, tuple(skipped)
