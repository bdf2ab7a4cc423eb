"""Address arithmetic for sets: collapse, subtract exceptions, split by family. Pure."""

from __future__ import annotations

import ipaddress
import socket
from typing import Iterable

Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def interval_elements(addresses: Iterable[str], cidrs: Iterable[str] = (),
                      excepts: Iterable[str] = (), version: int = 4) -> tuple[str, ...]:
    """Canonical, non-overlapping prefixes of one family: addresses ∪ (cidrs − excepts).

    nftables interval sets refuse overlapping elements, so everything is
    collapsed here; the output is sorted, so equal inputs give equal sets.
    The result is the minimal prefix cover of the union (what
    `ipaddress.collapse_addresses` returns), computed on integer ranges:
    group sets hold thousands of addresses, and ipaddress objects per address
    made this the largest cost of compiling a big policy.
    """
    ranges: list[tuple[int, int]] = []
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
        ranges.extend((int(p.network_address), int(p.broadcast_address)) for p in pieces)
    bits = 32 if version == 4 else 128
    for a in addresses:
        # Cheap family test first: most addresses of a group are of the other family half the time.
        if (":" in a) == (version == 6):
            value = address_value(a, version)
            ranges.append((value, value))
    return tuple(f"{address_text(lo, version)}/{bits - size}" for lo, size in _prefixes(_merged(ranges), bits))


def address_value(text: str, version: int) -> int:
    """The address as an integer. inet_pton is ~10x cheaper than an ipaddress object, and every
    compile converts every member address of every group (a label change recompiles)."""
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET if version == 4 else socket.AF_INET6, text), "big")
    except OSError:
        # Forms inet_pton does not take (an IPv6 zone, say): ipaddress decides, and names the error.
        return int(ipaddress.IPv4Address(text) if version == 4 else ipaddress.IPv6Address(text))


def address_text(value: int, version: int) -> str:
    """The address's canonical text, as ipaddress writes it (RFC 5952), through inet_ntop. glibc
    writes an IPv6 address whose first 80 bits are zero with an embedded IPv4 part (::ffff:1.2.3.4)
    where ipaddress does not; those few go through ipaddress."""
    if version == 4:
        return socket.inet_ntop(socket.AF_INET, value.to_bytes(4, "big"))
    if value >> 48:
        return socket.inet_ntop(socket.AF_INET6, value.to_bytes(16, "big"))
    return str(ipaddress.IPv6Address(value))


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, disjoint, non-adjacent inclusive ranges covering the same addresses."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def _prefixes(ranges: list[tuple[int, int]], bits: int) -> list[tuple[int, int]]:
    """Each range as its minimal list of aligned blocks: (first address, log2 of block size)."""
    out: list[tuple[int, int]] = []
    for lo, hi in ranges:
        while lo <= hi:
            # The largest block that starts at `lo` (alignment) and ends within `hi`.
            size = (lo & -lo).bit_length() - 1 if lo else bits
            while size > 0 and lo + (1 << size) - 1 > hi:
                size -= 1
            out.append((lo, size))
            lo += 1 << size
    return out


def family_of(address: str) -> int:
    """4 or 6 for a valid address (the state is validated; `:` only occurs in IPv6 text)."""
    return 6 if ":" in address else 4
