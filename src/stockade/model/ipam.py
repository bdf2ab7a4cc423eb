"""IPAM: give a Workload that names no addresses one IPv4 and one IPv6 from the pools (pure).

Invariants:
- An assigned address is written to `status.ips` only; `spec` stays as the user wrote it.
- Stable: a workload that had assigned addresses and still names none keeps them
  (per family), so re-applying the same file never renumbers anything.
- Unique: a new address is never one that any workload in the would-be state uses,
  whether from its spec or from an earlier assignment. (A user who writes an address
  already assigned to another workload is told so by validation; IPAM never moves a
  running workload to make room.)
- Deterministic: addresses are handed out lowest-free-first, in request order.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterator, Sequence

from stockade.errors import FieldProblem, ValidationError
from stockade.model.kinds import key_of
from stockade.model.kinds import StockadeObject
from stockade.model.objects import Workload
from stockade.model.state import DesiredState

# Where workloads without addresses get theirs, unless the deployment says otherwise
# (ControllerConfig.ipv4_pool / ipv6_pool); `stockade test` assigns from the same pools offline.
DEFAULT_IPV4_POOL = ipaddress.IPv4Network("198.18.64.0/18")
DEFAULT_IPV6_POOL = ipaddress.IPv6Network("2001:db8:64::/64")


@dataclass(frozen=True)
class Pools:
    ipv4: ipaddress.IPv4Network
    ipv6: ipaddress.IPv6Network


def _free(pool: ipaddress.IPv4Network | ipaddress.IPv6Network, used: set[str]) -> Iterator[str]:
    # One cursor per request: each call to next() continues where the last stopped,
    # so a request assigning n addresses walks the pool once, not n times.
    for addr in pool.hosts():
        text = str(addr)
        if text not in used:
            used.add(text)
            yield text


def _family(ip: str) -> int:
    return ipaddress.ip_address(ip).version


def assign_addresses(current: DesiredState, incoming: Sequence[StockadeObject],
                     pools: Pools) -> list[StockadeObject]:
    """`incoming` with addresses assigned to every Workload that has no `spec.ips`.

    `current` is the stored state (with earlier assignments in `status.ips`);
    `incoming` are the objects about to be put, without status. Raises a
    ValidationError naming each workload for which a pool is exhausted.
    """
    incoming_keys = {(o.metadata.namespace or "", o.metadata.name)
                     for o in incoming if isinstance(o, Workload)}
    used: set[str] = set()
    for key, wl in current.workloads.items():
        if key not in incoming_keys:
            used.update(current.workload_ips(wl))
    kept: dict[tuple[str, str], dict[int, str]] = {}
    for obj in incoming:
        if not isinstance(obj, Workload):
            continue
        key = (obj.metadata.namespace or "", obj.metadata.name)
        if obj.spec.ips:
            used.update(obj.spec.ips)
            continue
        old = current.workloads.get(key)
        if old is not None and not old.spec.ips:
            previous = {_family(ip): ip for ip in (old.status or {}).get("ips") or []}
            kept[key] = previous
            used.update(previous.values())

    cursors = {4: _free(pools.ipv4, used), 6: _free(pools.ipv6, used)}
    out: list[StockadeObject] = []
    problems: list[FieldProblem] = []
    for obj in incoming:
        if not isinstance(obj, Workload) or obj.spec.ips:
            out.append(obj)
            continue
        key = (obj.metadata.namespace or "", obj.metadata.name)
        ips = dict(kept.get(key, {}))
        for family, pool in ((4, pools.ipv4), (6, pools.ipv6)):
            if family not in ips:
                ip = next(cursors[family], None)
                if ip is None:
                    problems.append(FieldProblem(str(key_of(obj)), "spec.ips",
                                                 f"no free IPv{family} address left in pool {pool}; "
                                                 "give the address in spec.ips"))
                    continue
                ips[family] = ip
        status = {"ips": [ips[f] for f in (4, 6) if f in ips]}
        out.append(obj.model_copy(update={"status": status}))
    if problems:
        raise ValidationError(problems)
    return out
