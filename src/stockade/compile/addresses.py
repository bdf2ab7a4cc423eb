"""Address arithmetic for sets: collapse, subtract exceptions, split by family. Pure."""

from __future__ import annotations

import ipaddress
from typing import Iterable

Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def interval_elements(addresses: Iterable[str], cidrs: Iterable[str] = (),
                      excepts: Iterable[str] = (), version: int = 4) -> tuple[str, ...]:
    """Canonical, non-overlapping prefixes of one family: addresses ∪ (cidrs − excepts).

    nftables interval sets refuse overlapping elements, so everything is
    collapsed here; the output is sorted, so equal inputs give equal sets.
    """
    nets: list[Net] = []
    ex = [n for n in (ipaddress.ip_network(e) for e in excepts) if n.version == version]
    for c in cidrs:
        net = ipaddress.ip_network(c)
        if net.version != version:
            continue
        pieces: list[Net] = [net]
        for e in ex:
            nxt: list[Net] = []
            for p in pieces:
                if e.subnet_of(p):  # type: ignore[arg-type]
                    nxt.extend(p.address_exclude(e))  # type: ignore[arg-type]
                elif p.subnet_of(e):  # type: ignore[arg-type]
                    continue
                else:
                    nxt.append(p)
            pieces = nxt
        nets.extend(pieces)
    for a in addresses:
        ip = ipaddress.ip_address(a)
        if ip.version == version:
            nets.append(ipaddress.ip_network(ip))
    collapsed = ipaddress.collapse_addresses(nets)  # type: ignore[type-var]
    return tuple(str(n) for n in sorted(collapsed))  # type: ignore[type-var]


def family_of(address: str) -> int:
    return ipaddress.ip_address(address).version
