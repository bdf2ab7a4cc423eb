"""Small typed views of rtnetlink dumps, and error translation for netlink requests.

Pure helpers over an open pyroute2 `IPRoute`: they read dumps into frozen
views and translate `NetlinkError` into one of our errors naming the operation
(`DataplaneError` here, `LabError` through `lab.rtnl`), so the rest of the code
never handles pyroute2 exceptions or message objects. Used by the agent's
attachments (`dataplane.attach`) and the lab's topology and endpoints.
"""

from __future__ import annotations

import functools
import ipaddress
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from stockade.errors import DataplaneError, StockadeError

IFF_UP = 0x1
IFA_F_NODAD = 0x02
RT_TABLE_MAIN = 254
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_NOWHERE = 255  # in a route delete: any scope
AF_INET = 2
AF_INET6 = 10


def _dataplane_error(message: str) -> StockadeError:
    return DataplaneError(["netlink"], 1, message)


@contextmanager
def netlink_op(what: str, ignore: tuple[int, ...] = (),
               error: Callable[[str], StockadeError] = _dataplane_error) -> Iterator[None]:
    """Run one netlink request; errno in `ignore` is success, any other error `error(...)` naming `what`."""
    try:
        yield
    except NetlinkError as e:
        if e.code in ignore:
            return
        raise error(f"{what}: {e.args[1] if len(e.args) > 1 else e}") from e


@dataclass(frozen=True)
class LinkView:
    index: int
    name: str
    kind: str | None
    up: bool
    alias: str | None
    mac: str | None
    master: int | None
    peer_netnsid: int | None  # set for a veth whose peer lives in another netns


@dataclass(frozen=True)
class RouteView:
    family: int
    dst: str           # normalised address
    dst_len: int
    oif: int | None
    gateway: str | None
    proto: int
    table: int

    @property
    def key(self) -> tuple[str, int, int | None, str | None]:
        return self.dst, self.dst_len, self.oif, self.gateway


@functools.lru_cache(maxsize=1 << 15)
def norm_ip(text: str) -> str:
    # Cached: the endpoint plan normalises every workload's addresses on every reconcile, and
    # one ipaddress object costs ~5 µs (0.5 ms per label change in a 20-workload lab).
    return str(ipaddress.ip_address(text))


def _attr(msg: Any, name: str) -> Any:
    return msg.get(name)


def dump_links(ipr: IPRoute) -> dict[str, LinkView]:
    out: dict[str, LinkView] = {}
    for msg in ipr.get_links():
        name = _attr(msg, "IFLA_IFNAME")
        out[name] = LinkView(
            index=msg["index"],
            name=name,
            kind=msg.get(("IFLA_LINKINFO", "IFLA_INFO_KIND")),
            up=bool(msg["flags"] & IFF_UP),
            alias=_attr(msg, "IFLA_IFALIAS"),
            mac=_attr(msg, "IFLA_ADDRESS"),
            master=_attr(msg, "IFLA_MASTER"),
            peer_netnsid=_attr(msg, "IFLA_LINK_NETNSID"),
        )
    return out


def dump_addrs(ipr: IPRoute) -> dict[int, set[tuple[str, int]]]:
    """interface index → {(address, prefixlen)}."""
    out: dict[int, set[tuple[str, int]]] = {}
    for msg in ipr.get_addr():
        addr = _attr(msg, "IFA_ADDRESS")
        if addr is None:
            continue
        out.setdefault(msg["index"], set()).add((norm_ip(addr), msg["prefixlen"]))
    return out


def dump_routes(ipr: IPRoute, proto: int | None = None, table: int = RT_TABLE_MAIN) -> list[RouteView]:
    """Unicast routes of `table` (both families), only those of `proto` when given."""
    out: list[RouteView] = []
    for msg in ipr.get_routes():
        rtable = _attr(msg, "RTA_TABLE") or msg["table"]
        if rtable != table or (proto is not None and msg["proto"] != proto):
            continue
        dst = _attr(msg, "RTA_DST")
        if dst is None:
            dst = "0.0.0.0" if msg["family"] == AF_INET else "::"
        gw = _attr(msg, "RTA_GATEWAY")
        out.append(RouteView(
            family=msg["family"], dst=norm_ip(dst), dst_len=msg["dst_len"], oif=_attr(msg, "RTA_OIF"),
            gateway=norm_ip(gw) if gw else None, proto=msg["proto"], table=rtable))
    return out


def host_prefixlen(ip: str) -> int:
    return 32 if ipaddress.ip_address(ip).version == 4 else 128


def family_of(ip: str) -> int:
    return AF_INET if ipaddress.ip_address(ip).version == 4 else AF_INET6


def ensure_up(ipr: IPRoute, link: LinkView, error: Callable[[str], StockadeError] = _dataplane_error) -> bool:
    """Set `link` up; True when that was a change."""
    if link.up:
        return False
    with netlink_op(f"set {link.name} up", error=error):
        ipr.link("set", index=link.index, state="up")
    return True


def add_address(ipr: IPRoute, index: int, ifname: str, address: str, prefixlen: int,
                error: Callable[[str], StockadeError] = _dataplane_error) -> None:
    """Add an address; IPv6 ones without duplicate address detection (no 1 s wait, nobody else has it)."""
    flags = {"flags": IFA_F_NODAD} if ipaddress.ip_address(address).version == 6 else {}
    with netlink_op(f"add address {address}/{prefixlen} to {ifname}", ignore=(17,), error=error):  # EEXIST
        ipr.addr("add", index=index, address=address, prefixlen=prefixlen, **flags)
