"""Who is selected: workloads by appliesTo, peers, groups. Pure.

Selectors are parsed once per compilation (cached by their canonical form);
every question the compiler asks about membership is answered here, so the
same answers feed sets, named ports and the default action.

Invariant: a namespaced policy (Policy, NetworkPolicy) applies to workloads of
its own namespace only, whatever its `appliesTo` says. Validation refuses a
group of another namespace there (and a namespaceSelector); this is the second
line, for a state that predates that check or was handed to the compiler
directly, so that no input can let one tenant's policy decide for another's
workloads. Peers are not confined: they say whom a workload talks to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Iterable

from stockade.model.objects import GlobalPolicy, LabelSelector, Peer, Policy, Workload
from stockade.model.selectors import MATCH_ALL, Selector, parse_selector
from stockade.model.state import DesiredState
from stockade.model.validation import group_ref

WorkloadKey = tuple[str, str]


def selector_key(sel: LabelSelector | None) -> str:
    """Canonical text of a selector: equal selectors share sets and cache entries."""
    if sel is None:
        return "null"
    return json.dumps(sel.model_dump(exclude_defaults=True), sort_keys=True)


@dataclass(frozen=True)
class PeerScope:
    """The normalized meaning of a workload peer: which namespaces, which labels."""

    namespace: str | None          # None: any namespace (narrowed by ns_selector)
    selector: Selector
    ns_selector: Selector | None   # None: no namespace narrowing
    identity: str                  # stable text for naming its set


class Selection:
    def __init__(self, state: DesiredState) -> None:
        self.state = state
        self._selectors: dict[str, Selector] = {}
        self._scope_members: dict[str, tuple[WorkloadKey, ...]] = {}

    def parse(self, sel: LabelSelector | None) -> Selector:
        key = selector_key(sel)
        found = self._selectors.get(key)
        if found is None:
            found = MATCH_ALL if sel is None else parse_selector(sel.model_dump(exclude_defaults=True))
            self._selectors[key] = found
        return found

    @cached_property
    def _workloads_by_ns(self) -> dict[str, list[tuple[WorkloadKey, Workload]]]:
        out: dict[str, list[tuple[WorkloadKey, Workload]]] = {}
        for key in sorted(self.state.workloads):
            out.setdefault(key[0], []).append((key, self.state.workloads[key]))
        return out

    def members(self, scope: PeerScope) -> tuple[WorkloadKey, ...]:
        """Workloads in scope, sorted; cached by the scope's identity."""
        found = self._scope_members.get(scope.identity)
        if found is not None:
            return found
        result: list[WorkloadKey] = []
        # A namespaced scope looks at its own namespace only: a scan of every namespace per
        # scope made compiling quadratic in the number of tenants.
        if scope.namespace is not None:
            namespaces = [(scope.namespace, self._workloads_by_ns.get(scope.namespace, []))]
        else:
            namespaces = list(self._workloads_by_ns.items())
        for ns, items in namespaces:
            if scope.ns_selector is not None and not scope.ns_selector.matches(self.state.namespace_labels(ns)):
                continue
            result.extend(k for k, wl in items if scope.selector.matches(wl.metadata.labels))
        self._scope_members[scope.identity] = tuple(result)
        return self._scope_members[scope.identity]

    def scope(self, policy_ns: str | None, selector: LabelSelector | None,
              ns_selector: LabelSelector | None) -> PeerScope:
        """Kubernetes meaning: a selector alone stays in the policy's namespace
        (any namespace for a GlobalPolicy); a namespaceSelector widens to the
        namespaces it matches; both together are ANDed."""
        namespace = policy_ns if ns_selector is None else None
        identity = json.dumps([namespace, selector_key(selector), selector_key(ns_selector)])
        return PeerScope(namespace, self.parse(selector),
                         None if ns_selector is None else self.parse(ns_selector), identity)

    def applied(self, policy: Policy | GlobalPolicy) -> tuple[WorkloadKey, ...]:
        """The workloads a policy applies to (a namespaced one: of its namespace only)."""
        ns = policy.metadata.namespace or None
        target = policy.spec.appliesTo
        if target.group is not None:
            members = self.group_workloads(group_ref(ns or "", target.group))
            return members if ns is None else tuple(k for k in members if k[0] == ns)
        # The namespaceSelector is ignored for a namespaced policy: its scope is its namespace.
        ns_sel = target.namespaceSelector if ns is None else None
        return self.members(self.scope(ns, target.selector or LabelSelector(), ns_sel))

    def applies_to(self, policy: Policy | GlobalPolicy, key: WorkloadKey) -> bool:
        """Is `key` among `applied(policy)`? Answered for the one workload, without listing
        every member: a host asks this for its few local workloads, and listing the members of
        every policy (a platform policy selects most of the fleet) made compiling quadratic."""
        ns = policy.metadata.namespace or None
        if ns is not None and key[0] != ns:
            return False  # see the module docstring: a namespaced policy stays in its namespace
        target = policy.spec.appliesTo
        if target.group is not None:
            return self.in_group(group_ref(ns or "", target.group), key)
        ns_sel = target.namespaceSelector if ns is None else None
        return self.in_scope(self.scope(ns, target.selector or LabelSelector(), ns_sel), key)

    def in_scope(self, scope: PeerScope, key: WorkloadKey) -> bool:
        """Is `key` among `members(scope)`?"""
        wl = self.state.workloads.get(key)
        if wl is None or (scope.namespace is not None and key[0] != scope.namespace):
            return False
        if scope.ns_selector is not None and not scope.ns_selector.matches(self.state.namespace_labels(key[0])):
            return False
        return scope.selector.matches(wl.metadata.labels)

    def in_group(self, gkey: tuple[str, str], key: WorkloadKey) -> bool:
        """Is `key` among `group_workloads(gkey)`?"""
        group = self.state.groups.get(gkey)
        if group is None or key[0] != gkey[0] or key not in self.state.workloads:
            return False
        if group.spec.selector is not None and self.in_scope(self.scope(gkey[0], group.spec.selector, None), key):
            return True
        return key[1] in group.spec.workloads

    def group_workloads(self, gkey: tuple[str, str]) -> tuple[WorkloadKey, ...]:
        group = self.state.groups.get(gkey)
        if group is None:
            return ()
        found: set[WorkloadKey] = set()
        if group.spec.selector is not None:
            found.update(self.members(self.scope(gkey[0], group.spec.selector, None)))
        for name in group.spec.workloads:
            if (gkey[0], name) in self.state.workloads:
                found.add((gkey[0], name))
        return tuple(sorted(found))

    def peer_workloads(self, policy_ns: str | None, peer: Peer) -> tuple[WorkloadKey, ...]:
        if peer.group is not None:
            return self.group_workloads(group_ref(policy_ns or "", peer.group))
        if peer.cidr is not None:
            return ()
        return self.members(self.scope(policy_ns, peer.selector or LabelSelector(), peer.namespaceSelector))

    def ips(self, keys: Iterable[WorkloadKey]) -> list[str]:
        out: list[str] = []
        for k in keys:
            out.extend(self.state.workload_ips(self.state.workloads[k]))
        return out

    def all_workloads(self) -> tuple[WorkloadKey, ...]:
        return tuple(sorted(self.state.workloads))

