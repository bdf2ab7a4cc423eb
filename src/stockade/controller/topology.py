"""The topology of the desired state: hosts → workloads, groups and their members, policies and
what each applies to, per direction. Pure: a function of a `DesiredState`, the agents' status and
what the caller may see.

Membership is the compiler's own (`compile.selection.Selection`: `applied`, `group_workloads`,
the same calls that fill the kernel's sets) and a policy's directions are `compile.program.selects`,
so the picture cannot show a workload in a group, or under a policy, that the hosts do not
enforce that way. Every kind of policy the model has is listed: native Policies and
GlobalPolicies, and NetworkPolicies and the upstream cluster kinds in the native form the
compiler runs (`DesiredState.enforced_policies`), under the kind they were written as.

Scoping (the leak each rule closes): a caller that may read only some namespaces (a tenant) gets
the workloads, groups and namespaced policies of those namespaces alone, no GlobalPolicy or
cluster policy node (platform objects it may not read), and only the hosts that run one of its
workloads, with their sync state cut down by `visibility.agent_status` (no error text). Another
namespace never appears, not even by name: nothing here points across namespaces (a group's
members and a namespaced policy's workloads are in its own namespace).

Invariants: never mutates its inputs; ids are stable (`NS/NAME` for workloads and groups,
`KIND:NS/NAME` or `KIND:NAME` for policies); every list is sorted.
"""

from __future__ import annotations

from typing import Any, Iterable

from stockade.compile.program import AnyPolicy, Direction, selects, source_kind
from stockade.compile.selection import Selection, WorkloadKey
from stockade.controller import visibility
from stockade.controller.records import AgentStatus
from stockade.controller.visibility import Visible
from stockade.model.naming import ATTACHED_BY
from stockade.model.objects import Workload
from stockade.model.reports import Endpoint
from stockade.model.state import DesiredState
from stockade.model.validation import group_ref

DIRECTIONS: tuple[Direction, ...] = ("ingress", "egress")


def workload_id(key: WorkloadKey) -> str:
    return f"{key[0]}/{key[1]}"


def policy_id(policy: AnyPolicy) -> str:
    """`Policy:shop/web-ingress`, `GlobalPolicy:platform-dns`, `NetworkPolicy:shop/np`: unique even
    where a NetworkPolicy shares its namespace and name with a native Policy."""
    ns = policy.metadata.namespace
    return f"{source_kind(policy)}:{ns + '/' if ns else ''}{policy.metadata.name}"


def endpoint_of(workload: Workload, found: Endpoint | None) -> dict[str, Any]:
    """What is known of a workload's network attachment: how it is attached (spec), who attached
    it (a runtime's annotation), and where its agent found it (the agent's report)."""
    out: dict[str, Any] = {
        "attachment": workload.spec.attachment or "routed",
        # An interface named in the spec is one a hypervisor or runtime made; else Stockade makes it.
        "createdBy": "runtime" if workload.spec.interface else "stockade",
    }
    runtime = workload.metadata.annotations.get(ATTACHED_BY)
    if runtime:
        out["attachedBy"] = runtime
    if workload.spec.interface:
        out["interface"] = workload.spec.interface
    if found is not None:
        out.update(found.to_dict())
    return out


def _workload(state: DesiredState, key: WorkloadKey, endpoints: dict[str, Endpoint]) -> dict[str, Any]:
    wl = state.workloads[key]
    return {"id": workload_id(key), "namespace": key[0], "name": key[1], "host": wl.spec.host,
            "labels": dict(sorted(wl.metadata.labels.items())), "ips": state.workload_ips(wl),
            "ports": [p.model_dump() for p in wl.spec.ports],
            "endpoint": endpoint_of(wl, endpoints.get(workload_id(key)))}


def _host(name: str, workloads: Iterable[str], agent: AgentStatus | None, revision: int) -> dict[str, Any]:
    sync: dict[str, Any] | None = None
    if agent is not None:
        report = agent.report
        sync = {"revision": report.revision, "inSync": report.in_sync, "error": report.error,
                "reporting": agent.reporting, "lastSeen": agent.last_seen,
                "current": agent.reporting and report.in_sync and not report.error and report.revision >= revision}
    return {"name": name, "workloads": sorted(workloads), "agent": sync}


def _policy(policy: AnyPolicy, selection: Selection) -> dict[str, Any]:
    applied = [workload_id(k) for k in selection.applied(policy)]
    ns = policy.metadata.namespace or None
    target = policy.spec.appliesTo
    group = None
    if target.group is not None:
        gns, gname = group_ref(ns or "", target.group)
        group = f"{gns}/{gname}"
    return {
        "id": policy_id(policy), "kind": source_kind(policy), "namespace": ns, "name": policy.metadata.name,
        "tier": policy.spec.tier, "order": policy.spec.order, "mode": policy.spec.mode,
        "group": group,
        # A direction the policy takes no decision in (no `types` entry, no deciding rule) selects nobody.
        "appliesTo": {d: (applied if selects(policy, d) else []) for d in DIRECTIONS},
        "rules": {d: len(policy.spec.ingress if d == "ingress" else policy.spec.egress) for d in DIRECTIONS},
    }


def build_topology(state: DesiredState, agents: Iterable[AgentStatus], visible: Visible,
                   scoped: bool) -> dict[str, Any]:
    """The topology's wire form as a caller who may read the namespaces `visible` accepts sees it.
    `scoped`: the caller is a tenant (no platform policies, hosts only where its workloads run)."""
    selection = Selection(state)
    by_host = {a.host: a for a in agents}
    endpoints: dict[str, Endpoint] = {}
    for reported in by_host.values():
        endpoints.update(reported.report.endpoints)

    keys = [k for k in sorted(state.workloads) if visible(k[0])]
    workloads = [_workload(state, k, endpoints) for k in keys]

    hosted: dict[str, list[str]] = {}
    for k in keys:
        hosted.setdefault(state.workloads[k].spec.host, []).append(workload_id(k))
    host_names = set(hosted) if scoped else set(hosted) | set(by_host)
    hosts = []
    for name in sorted(host_names):
        agent: AgentStatus | None = by_host.get(name)
        if agent is not None and scoped:
            agent = visibility.agent_status(agent, visible)
        hosts.append(_host(name, hosted.get(name, ()), agent, state.revision))

    groups = []
    for gkey in sorted(state.groups):
        if not visible(gkey[0]):
            continue
        spec = state.groups[gkey].spec
        groups.append({"id": f"{gkey[0]}/{gkey[1]}", "namespace": gkey[0], "name": gkey[1],
                       "members": [workload_id(k) for k in selection.group_workloads(gkey)],
                       "cidrs": list(spec.cidrs), "except": list(spec.except_)})

    policies = []
    for policy in state.enforced_policies:
        ns = policy.metadata.namespace
        if (ns and not visible(ns)) or (not ns and scoped):
            continue
        policies.append(_policy(policy, selection))
    policies.sort(key=lambda p: (p["namespace"] or "", p["kind"], p["name"]))

    namespaces: list[dict[str, Any]] = [{"name": name, "labels": dict(sorted(ns.effective_labels().items())),
                   "defaultAction": ns.spec.defaultAction}
                  for name, ns in sorted(state.namespaces.items()) if visible(name)]
    # A workload's namespace need not exist as an object; it still colours the picture.
    named = {n["name"] for n in namespaces}
    for k in keys:
        if k[0] not in named:
            named.add(k[0])
            namespaces.append({"name": k[0], "labels": state.namespace_labels(k[0]), "defaultAction": "deny"})
    namespaces.sort(key=lambda n: n["name"])

    return {"revision": state.revision, "hosts": hosts, "namespaces": namespaces, "workloads": workloads,
            "groups": groups, "policies": policies}
