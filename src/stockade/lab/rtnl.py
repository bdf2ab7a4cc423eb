"""The lab's netlink helpers: `dataplane.rtnl`'s, with failures reported as `LabError`
(the lab builds topology; a failed request there is the lab's error, not the dataplane's)."""

from __future__ import annotations

from contextlib import AbstractContextManager

from pyroute2 import IPRoute

from stockade.dataplane import rtnl as _rtnl
from stockade.dataplane.rtnl import (AF_INET, AF_INET6, IFA_F_NODAD, IFF_UP, RT_SCOPE_LINK, RT_SCOPE_NOWHERE,
                                     RT_SCOPE_UNIVERSE,
                                     RT_TABLE_MAIN, LinkView, RouteView, dump_addrs, dump_links, dump_routes,
                                     family_of, host_prefixlen, norm_ip)
from stockade.errors import LabError

__all__ = ["AF_INET", "AF_INET6", "IFA_F_NODAD", "IFF_UP", "RT_SCOPE_LINK", "RT_SCOPE_NOWHERE", "RT_SCOPE_UNIVERSE", "RT_TABLE_MAIN",
           "LinkView", "RouteView", "add_address", "dump_addrs", "dump_links", "dump_routes", "ensure_up",
           "family_of", "host_prefixlen", "netlink_op", "norm_ip"]


def netlink_op(what: str, ignore: tuple[int, ...] = ()) -> AbstractContextManager[None]:
    """One netlink request of the lab's; errno in `ignore` is success, any other error a LabError."""
    return _rtnl.netlink_op(what, ignore, error=LabError)


def ensure_up(ipr: IPRoute, link: LinkView) -> bool:
    return _rtnl.ensure_up(ipr, link, error=LabError)


def add_address(ipr: IPRoute, index: int, ifname: str, address: str, prefixlen: int) -> None:
    _rtnl.add_address(ipr, index, ifname, address, prefixlen, error=LabError)
