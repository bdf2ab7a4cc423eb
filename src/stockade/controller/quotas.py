"""Per-namespace quotas: how many workloads, pool addresses and policies one namespace may hold (pure).

Without them one tenant could take the whole IPAM pool (10,000 workloads in one apply) and
leave every other namespace without addresses. Each namespace's limit is its Namespace's
`spec.quota.<field>` when set (only admins and network-admins write Namespaces), else the
controller's default (`Quotas`); `addresses` defaults to a share of the IPv4 pool.

A write is refused (`QuotaExceeded`, 403, nothing stored) when it makes a namespace hold more
than its limit *and* more than it held before: so lowering a quota below what a namespace
holds refuses its growth, never its edits or deletes.

Counted: workloads; addresses of the IPAM pools (per family, whether assigned by IPAM or
written in `spec.ips` — both take an address from the pool); Policies and NetworkPolicies.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass

from stockade.errors import QuotaExceeded
from stockade.model.state import DesiredState

DEFAULT_WORKLOADS = 2_000
DEFAULT_POLICIES = 1_000
DEFAULT_POOL_SHARE = 0.25
FIELDS = ("workloads", "addresses", "policies")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Quotas:
    """The controller's default limits per namespace; None: no limit."""

    workloads: int | None
    addresses: int | None
    policies: int | None


def default_quotas(workloads: int | None, policies: int | None, pool_share: float,
                   ipv4_pool: ipaddress.IPv4Network) -> Quotas:
    """Defaults with `addresses` = `pool_share` of the IPv4 pool's usable addresses (at least 1)."""
    usable = max(1, ipv4_pool.num_addresses - 2) if ipv4_pool.prefixlen < 31 else ipv4_pool.num_addresses
    return Quotas(workloads, max(1, int(usable * pool_share)), policies)


def usage(state: DesiredState, pools: tuple[Network, ...], only: set[str]) -> dict[str, Counter[str]]:
    """What each namespace of `only` holds: workloads, addresses (the larger count of the two
    families, in `pools`) and policies."""
    out: dict[str, Counter[str]] = {ns: Counter() for ns in only}
    per_family: dict[str, Counter[int]] = {ns: Counter() for ns in only}
    for (ns, _), wl in state.workloads.items():
        if ns in out:
            out[ns]["workloads"] += 1
            for ip in state.workload_ips(wl):
                address = ipaddress.ip_address(ip)
                if any(address in pool for pool in pools):
                    per_family[ns][address.version] += 1
    for ns, counts in per_family.items():
        out[ns]["addresses"] = max(counts.values(), default=0)
    for (ns, _) in [*state.policies, *state.network_policies]:
        if ns in out:
            out[ns]["policies"] += 1
    return out


def limit_of(state: DesiredState, namespace: str, field: str, defaults: Quotas) -> int | None:
    ns = state.namespaces.get(namespace)
    quota = ns.spec.quota if ns is not None else None
    own = getattr(quota, field) if quota is not None else None
    return own if own is not None else getattr(defaults, field)


def check(before: DesiredState, after: DesiredState, namespaces: set[str], defaults: Quotas,
          pools: tuple[Network, ...]) -> None:
    """QuotaExceeded naming each namespace of `namespaces` that `after` grows beyond a limit."""
    namespaces = {ns for ns in namespaces if ns}
    if not namespaces:
        return
    old, new = usage(before, pools, namespaces), usage(after, pools, namespaces)
    problems: list[str] = []
    for ns in sorted(namespaces):
        for field in FIELDS:
            limit = limit_of(after, ns, field, defaults)
            held = new[ns][field]
            if limit is not None and held > limit and held > old[ns][field]:
                source = (f"Namespace {ns} spec.quota.{field}" if _own(after, ns, field) else
                          f"the controller's default; an admin may set spec.quota.{field} on Namespace {ns}")
                problems.append(f"namespace {ns!r} would hold {held} {field}, over its quota of {limit} ({source})")
    if problems:
        raise QuotaExceeded("quota exceeded: " + "; ".join(problems) + "; nothing was changed")


def _own(state: DesiredState, namespace: str, field: str) -> bool:
    ns = state.namespaces.get(namespace)
    return ns is not None and ns.spec.quota is not None and getattr(ns.spec.quota, field) is not None
