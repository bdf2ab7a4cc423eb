"""The container's veth, wired as a routed Stockade workload (rtnetlink through pyroute2).

Runs in the host's network namespace (where the runtime runs the plugin). What ADD makes:

    host netns:       <stk…>  up, 169.254.1.1/32 and fe80::1/64, proxy ARP,
                      a route per workload address (ip/32, ip6/128) to it, protocol ROUTE_PROTO
    container netns:  <CNI_IFNAME>  the MAC, ip/32 and ip6/128, up, DAD off,
                      default routes via 169.254.1.1 (on-link) and via fe80::1

The gateways are the host agent's (`dataplane.attach`), which keeps the same host side on every
attached interface: the plugin wires it at once so the container is reachable when ADD returns,
and the agent keeps it (its routes, protocol 77, may replace ours for the same prefix).

Invariants: only the host-side veth this container's identity names is ever deleted (the
container side goes with it), and only routes of ROUTE_PROTO are added; a failed ADD removes
the veth it made. The container's network namespace is entered in a throwaway thread, so the
process's own thread never leaves the host's.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from stockade.cni.identity import Identity
from stockade.cni.spec import CONTAINER_UNKNOWN, WIRING_FAILED, Attached, CniError
from stockade.dataplane import rtnl
from stockade.dataplane.attach import GATEWAY_V4, GATEWAY_V6
from stockade.errors import DataplaneError

ROUTE_PROTO = 78   # our host routes (the agent's attachments use 77, the lab's endpoints 201)
CLONE_NEWNET = 0x40000000
RTNH_F_ONLINK = 4
_GONE = (errno.ENOENT, errno.ESRCH, errno.ENODEV)
T = TypeVar("T")


def _in_netns(netns_path: str, fn: Callable[[], T]) -> T:
    """Run `fn` in the network namespace at `netns_path`, in a throwaway thread; its result or error."""
    try:
        fd = os.open(netns_path, os.O_RDONLY)
    except OSError as e:
        raise CniError(CONTAINER_UNKNOWN, "the container's network namespace is not there",
                       f"CNI_NETNS {netns_path}: {e.strerror}") from None
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns({netns_path}): {os.strerror(ctypes.get_errno())}")
            result.append(fn())
        except BaseException as e:  # re-raised in the caller's thread
            error.append(e)

    try:
        thread = threading.Thread(target=target, name="cni-netns", daemon=True)
        thread.start()
        thread.join()
    finally:
        os.close(fd)
    if error:
        raise error[0]
    return result[0]


def _sysctl(path: str, value: str) -> None:
    Path("/proc/sys/net", path).write_text(value + "\n")


def _failed(what: str, e: BaseException) -> CniError:
    detail = e.message if isinstance(e, DataplaneError) else (e.args[1] if isinstance(e, NetlinkError)
                                                               and len(e.args) > 1 else str(e))
    return CniError(WIRING_FAILED, f"wiring failed: {what}", str(detail))


def _host_prefix(ip: str) -> str:
    return f"{ip}/{rtnl.host_prefixlen(ip)}"


# ------------------------------------------------------------------------------------- ADD

def _container_side(identity: Identity, ips: tuple[str, ...]) -> None:
    with IPRoute(groups=0) as ipr:
        link = rtnl.dump_links(ipr).get(identity.ifname)
        if link is None:
            raise DataplaneError(["netlink"], 1, f"{identity.ifname} did not appear in the container")
        # No duplicate address detection: nobody else is on this link, and DAD would hold the
        # addresses tentative for a second after ADD returns.
        _sysctl(f"ipv6/conf/{identity.ifname}/accept_dad", "0")
        for ip in ips:
            rtnl.add_address(ipr, link.index, identity.ifname, ip, rtnl.host_prefixlen(ip))
        rtnl.ensure_up(ipr, link)
        with rtnl.netlink_op(f"route default via {GATEWAY_V4} in the container", ignore=(errno.EEXIST,)):
            if any(":" not in ip for ip in ips):
                ipr.route("add", dst="0.0.0.0/0", gateway=GATEWAY_V4, oif=link.index, flags=RTNH_F_ONLINK)
        with rtnl.netlink_op(f"route default via {GATEWAY_V6} in the container", ignore=(errno.EEXIST,)):
            if any(":" in ip for ip in ips):
                ipr.route("add", dst="::/0", gateway=GATEWAY_V6, oif=link.index, family=rtnl.AF_INET6)


def _host_side(ipr: IPRoute, identity: Identity, ips: tuple[str, ...]) -> str:
    """Plumb the host side; its MAC."""
    link = rtnl.dump_links(ipr)[identity.host_interface]
    _sysctl(f"ipv6/conf/{identity.host_interface}/accept_dad", "0")
    rtnl.add_address(ipr, link.index, identity.host_interface, GATEWAY_V4, 32)
    rtnl.add_address(ipr, link.index, identity.host_interface, GATEWAY_V6, 64)
    _sysctl(f"ipv4/conf/{identity.host_interface}/proxy_arp", "1")
    rtnl.ensure_up(ipr, link)
    for ip in ips:
        with rtnl.netlink_op(f"route {_host_prefix(ip)} dev {identity.host_interface}"):
            # `replace`: a stale route to the same prefix (a container that had it before) is taken over.
            ipr.route("replace", dst=_host_prefix(ip), oif=link.index, proto=ROUTE_PROTO,
                      table=rtnl.RT_TABLE_MAIN, family=rtnl.family_of(ip),
                      scope=rtnl.RT_SCOPE_LINK if ":" not in ip else rtnl.RT_SCOPE_UNIVERSE)
    return str(link.mac)


def require_netns(netns_path: str) -> None:
    """CniError 3 unless the container's network namespace can be entered."""
    _in_netns(netns_path, lambda: None)


def attach(identity: Identity, netns_path: str, ips: tuple[str, ...]) -> Attached:
    """Make the veth and wire both sides; on any failure remove the veth again and raise."""
    require_netns(netns_path)
    with IPRoute(groups=0) as ipr:
        try:
            if identity.host_interface in rtnl.dump_links(ipr):
                # Left by an earlier ADD of this same container (the name is its identity's).
                _delete_link(ipr, identity.host_interface)
            with rtnl.netlink_op(f"create veth {identity.host_interface} <-> {identity.ifname} in {netns_path}"):
                ipr.link("add", ifname=identity.host_interface, kind="veth",
                         peer={"ifname": identity.ifname, "net_ns_fd": netns_path, "address": identity.mac})
        except (DataplaneError, NetlinkError, OSError) as e:
            raise _failed(f"creating the veth {identity.host_interface}", e) from None
        try:
            _in_netns(netns_path, lambda: _container_side(identity, ips))
            host_mac = _host_side(ipr, identity, ips)
        except (DataplaneError, NetlinkError, OSError, KeyError) as e:
            _delete_link(ipr, identity.host_interface)
            raise _failed(f"configuring {identity.host_interface} and {identity.ifname}", e) from None
    return Attached(host_interface=identity.host_interface, host_mac=host_mac,
                    container_interface=identity.ifname, container_mac=identity.mac, sandbox=netns_path,
                    ips=ips, gateway_v4=GATEWAY_V4, gateway_v6=GATEWAY_V6)


# ------------------------------------------------------------------------------------- DEL

def _delete_link(ipr: IPRoute, name: str) -> bool:
    link = rtnl.dump_links(ipr).get(name)
    if link is None:
        return False
    with rtnl.netlink_op(f"delete {name}", ignore=_GONE):
        ipr.link("del", index=link.index)   # the peer goes with it, and every route through it
    return True


def detach(identity: Identity) -> bool:
    """Delete the host-side veth if it is there; True when it was."""
    try:
        with IPRoute(groups=0) as ipr:
            return _delete_link(ipr, identity.host_interface)
    except (DataplaneError, NetlinkError, OSError) as e:
        raise _failed(f"deleting {identity.host_interface}", e) from None


# ----------------------------------------------------------------------------------- CHECK

@dataclass(frozen=True)
class _Seen:
    links: dict[str, rtnl.LinkView]
    addrs: dict[int, set[tuple[str, int]]]
    routes: list[rtnl.RouteView]


def _look() -> _Seen:
    with IPRoute(groups=0) as ipr:
        return _Seen(rtnl.dump_links(ipr), rtnl.dump_addrs(ipr), rtnl.dump_routes(ipr))


def check(identity: Identity, netns_path: str, ips: tuple[str, ...]) -> list[str]:
    """What differs from what ADD makes, one sentence each (empty: all in place)."""
    problems: list[str] = []
    try:
        host = _look()
        inside = _in_netns(netns_path, _look)
    except (DataplaneError, NetlinkError, OSError) as e:
        raise _failed("reading the interfaces", e) from None
    hif, cif = identity.host_interface, identity.ifname
    hlink = host.links.get(hif)
    if hlink is None:
        problems.append(f"the host has no interface {hif}")
    else:
        if hlink.kind != "veth" or hlink.peer_netnsid is None:
            problems.append(f"{hif} is not a veth into another network namespace")
        if not hlink.up:
            problems.append(f"{hif} is down")
        for gw, plen in ((GATEWAY_V4, 32), (GATEWAY_V6, 64)):
            if (gw, plen) not in host.addrs.get(hlink.index, set()):
                problems.append(f"{hif} lacks {gw}/{plen}")
        for ip in ips:
            plen = rtnl.host_prefixlen(ip)
            if not any(r.dst == rtnl.norm_ip(ip) and r.dst_len == plen and r.oif == hlink.index
                       for r in host.routes):
                problems.append(f"the host has no route {ip}/{plen} dev {hif}")
    clink = inside.links.get(cif)
    if clink is None:
        problems.append(f"the container has no interface {cif}")
        return problems
    if (clink.mac or "").lower() != identity.mac:
        problems.append(f"{cif} has MAC {clink.mac}, not {identity.mac}")
    if not clink.up:
        problems.append(f"{cif} is down")
    for ip in ips:
        plen = rtnl.host_prefixlen(ip)
        if (rtnl.norm_ip(ip), plen) not in inside.addrs.get(clink.index, set()):
            problems.append(f"{cif} lacks {ip}/{plen}")
    for gw, dst, present in ((GATEWAY_V4, "0.0.0.0", any(":" not in ip for ip in ips)),
                             (GATEWAY_V6, "::", any(":" in ip for ip in ips))):
        if present and not any(r.dst == dst and r.dst_len == 0 and r.gateway == gw and r.oif == clink.index
                               for r in inside.routes):
            problems.append(f"the container has no default route via {gw} dev {cif}")
    return problems


