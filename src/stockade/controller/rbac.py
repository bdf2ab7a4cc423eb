"""Who may do what: the one place that decides (pure functions of the caller and the objects).

Roles:
- `admin`: everything, including tokens.
- `network-admin`: every object of every kind and tier, GlobalPolicy, Tiers, Namespaces; the
  audit log and history; not tokens.
- `tenant`: Workloads, Groups, Policies and NetworkPolicies in its own namespaces, and Policies
  only in the `application` tier — so a tenant can never add, change, move or delete a
  platform- or baseline-tier rule, a Tier, a GlobalPolicy or a Namespace (the provider's
  guard rails). It reads only its own namespaces (plus the Tier list) and their flows/history.
- `viewer`: reads everything (objects, status, flows, history, audit), writes nothing.
- `agent`: reads its host's view of the desired state (snapshot, watch) and reports status and flows for its own host;
  and registers the workloads its host's runtimes attach (the CNI plugin, a hypervisor hook):
  Workloads on its own host marked `stockade.io/attached-by`, stored and new alike, so it can
  neither move a workload to or from another host nor touch one an administrator placed on it;
  it lists the Workloads on its own host (to read back their addresses) and no other object:
  the object listing is for people.

What a tenant reads is cut down to its namespaces by `may_read` (whole objects) and by
`controller.visibility` (answers that mix its namespaces with others': flows, status, diff).
An object in a namespace it may not read gets 403 whether or not it exists (`require_namespace`,
`require_readable`), so the answer never tells another tenant's object names apart.

A write is checked object by object against both the stored object (what it would replace or
delete) and the new one, so that moving a policy out of a protected tier is as forbidden as
moving it in.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Callable, Mapping

from stockade.controller.auth import Principal
from stockade.errors import Forbidden
from stockade.model.kinds import ObjectKey
from stockade.model.naming import ATTACHED_BY

TENANT_KINDS = frozenset({"Workload", "Group", "Policy", "NetworkPolicy"})
TENANT_TIER = "application"
TENANT_READABLE_CLUSTER_KINDS = frozenset({"Tier", "Namespace"})


class Permission(Enum):
    READ_OBJECTS = "read objects"
    READ_STATE = "read the desired state (snapshot, watch); an agent its host's view"
    READ_STATUS = "read agent status"
    READ_FLOWS = "read flow records"
    READ_HISTORY = "read revision history"
    READ_AUDIT = "read the audit log"
    WRITE_OBJECTS = "change objects (apply, delete, rollback)"
    MANAGE_TOKENS = "create, list or revoke tokens"
    REPORT = "report an agent's status and flows"
    READ_METRICS = "read the controller's metrics (with --metrics-auth)"
    REGISTER_WORKLOADS = ("create, change or delete the Workloads its host's runtimes attach "
                          "(its own host, marked stockade.io/attached-by)")
    TAKE_BACKUP = "read the whole store, token hashes and audit log included (backup)"
    HAND_OFF_CONNECTIONS = ("hand a moving workload's open connections from the host it left to the "
                            "host it moved to (its agents only)")


_ALL = frozenset(Permission)
_READS = frozenset({Permission.READ_OBJECTS, Permission.READ_STATE, Permission.READ_STATUS,
                    Permission.READ_FLOWS, Permission.READ_HISTORY, Permission.READ_AUDIT,
                    Permission.READ_METRICS})

ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "admin": _ALL,
    "network-admin": _READS | {Permission.WRITE_OBJECTS},
    "tenant": frozenset({Permission.READ_OBJECTS, Permission.READ_STATUS, Permission.READ_FLOWS,
                         Permission.READ_HISTORY, Permission.WRITE_OBJECTS}),
    "viewer": _READS,
    # Not READ_OBJECTS: an agent syncs through snapshot and watch; listing objects by kind and
    # namespace is how a person browses, and a stolen agent token should not be a browser.
    "agent": frozenset({Permission.READ_STATE, Permission.REPORT, Permission.REGISTER_WORKLOADS,
                        Permission.HAND_OFF_CONNECTIONS}),
}


def _who(p: Principal) -> str:
    return f"{p.name!r} (role {p.role})"


def require(principal: Principal, permission: Permission, host: str | None = None) -> None:
    """Forbidden unless `principal` has `permission` (and, for reports, reports for its own host)."""
    require_any(principal, permission, host=host)
    if host is not None and principal.host is not None and host != principal.host:
        raise Forbidden(f"{_who(principal)} may only report for host {principal.host!r}, not {host!r}")


def require_any(principal: Principal, *permissions: Permission, host: str | None = None) -> None:
    """Forbidden unless `principal` has one of `permissions` (for reports: for its own host)."""
    held = ROLE_PERMISSIONS.get(principal.role, frozenset())
    if not any(p in held for p in permissions):
        raise Forbidden(f"{_who(principal)} may not {' or '.join(p.value for p in permissions)}")
    if host is not None and principal.host is not None and host != principal.host:
        raise Forbidden(f"{_who(principal)} may only report for host {principal.host!r}, not {host!r}")


def is_scoped(principal: Principal) -> bool:
    """True when the caller sees only some namespaces (a tenant)."""
    return principal.role == "tenant"


def may_read(principal: Principal, key: ObjectKey) -> bool:
    """Whether a scoped caller may see this object (everyone else sees everything they can list)."""
    if not is_scoped(principal):
        return True
    if key.namespace:
        return key.namespace in principal.namespaces
    if key.kind == "Namespace":
        return key.name in principal.namespaces
    return key.kind in TENANT_READABLE_CLUSTER_KINDS


def visible_namespaces(principal: Principal) -> Callable[[str], bool]:
    """namespace → whether `principal` may read it (always True for an unscoped caller)."""
    if not is_scoped(principal):
        return lambda namespace: True
    mine = principal.namespaces
    return lambda namespace: namespace in mine


def require_readable(principal: Principal, key: ObjectKey) -> None:
    """403 unless the caller may read `key` — asked before looking, so that the answer is the same
    whether the object exists or not."""
    if not may_read(principal, key):
        where = f"{key.namespace}/{key.name}" if key.namespace else key.name
        raise Forbidden(f"{_who(principal)} may not read {key.kind} {where}"
                        + (f" (its namespaces: {', '.join(sorted(principal.namespaces))})"
                           if principal.namespaces else ""))


def require_namespace(principal: Principal, namespace: str | None) -> None:
    """A tenant asking for a namespace that is not theirs is refused, not shown an empty list."""
    if is_scoped(principal) and namespace and namespace not in principal.namespaces:
        raise Forbidden(f"{_who(principal)} may not read namespace {namespace!r} "
                        f"(its namespaces: {', '.join(sorted(principal.namespaces))})")


def _tier(doc: Mapping[str, Any] | None) -> str:
    spec = (doc or {}).get("spec") or {}
    return str(spec.get("tier") or TENANT_TIER)


def check_write(principal: Principal, key: ObjectKey, old: Mapping[str, Any] | None,
                new: Mapping[str, Any] | None) -> None:
    """Forbidden unless `principal` may turn `old` into `new` (None: absent) for the object `key`."""
    if principal.role == "agent":
        _check_registration(principal, key, old, new)
        return
    require(principal, Permission.WRITE_OBJECTS)
    if principal.role in ("admin", "network-admin"):
        return
    # Only tenants get here (viewer and agent failed `require`).
    where = f"{key.namespace}/{key.name}" if key.namespace else key.name
    if key.kind not in TENANT_KINDS:
        raise Forbidden(f"{_who(principal)} may not write {key.kind} {where}: tenants write only "
                        f"{', '.join(sorted(TENANT_KINDS))} objects in their own namespaces")
    if key.namespace not in principal.namespaces:
        raise Forbidden(f"{_who(principal)} may not write {key.kind} {where}: namespace {key.namespace!r} "
                        f"is not one of its namespaces ({', '.join(sorted(principal.namespaces))})")
    if key.kind == "Policy":
        for label, doc in (("stored", old), ("new", new)):
            if doc is not None and _tier(doc) != TENANT_TIER:
                raise Forbidden(f"{_who(principal)} may not write Policy {where}: the {label} policy is in "
                                f"tier {_tier(doc)!r}; tenants write only tier {TENANT_TIER!r}")


def _check_registration(principal: Principal, key: ObjectKey, old: Mapping[str, Any] | None,
                        new: Mapping[str, Any] | None) -> None:
    """A host credential writes only Workloads its host's runtimes attach: on its own host, marked
    `stockade.io/attached-by`, before and after (a stolen host credential cannot reach another
    host's workloads, nor one an administrator placed on its host)."""
    require(principal, Permission.REGISTER_WORKLOADS)
    where = f"{key.namespace}/{key.name}" if key.namespace else key.name
    if key.kind != "Workload":
        raise Forbidden(f"{_who(principal)} may not write {key.kind} {where}: a host credential registers "
                        "only Workloads")
    for label, doc in (("stored", old), ("new", new)):
        if doc is None:
            continue
        host = ((doc.get("spec") or {}).get("host"))
        if principal.host is None or host != principal.host:
            raise Forbidden(f"{_who(principal)} may not write Workload {where}: the {label} workload is on host "
                            f"{host!r}; a host credential writes only workloads on its own host "
                            f"({principal.host!r})")
        if ATTACHED_BY not in ((doc.get("metadata") or {}).get("annotations") or {}):
            raise Forbidden(f"{_who(principal)} may not write Workload {where}: the {label} workload has no "
                            f"{ATTACHED_BY} annotation; a host credential writes only the workloads its "
                            "runtimes attach")


def require_own_workloads(principal: Principal, kind: str) -> None:
    """A host credential lists only Workloads (those of its own host: the service filters)."""
    require(principal, Permission.REGISTER_WORKLOADS)
    if kind != "Workload":
        raise Forbidden(f"{_who(principal)} may not read {kind} objects: a host credential reads only the "
                        "Workloads on its own host")
