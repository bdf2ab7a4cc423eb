"""The lab's fixed topology: a fabric netns with a bridge, a control-plane netns and N hypervisor
netns wired to it.

    P-fab:  br0 ── cp ── hv1 ── hv2 ── ...    (veth ends, bridge ports)
                   │     │      │
    P-cp:   fab0 ──┘  198.18.254.254/24  2001:db8:ffff::254/64   (the controller)
                         │      │
    P-hv1:  fab0 ─┘  198.18.254.1/24  2001:db8:ffff::1/64   lo: 198.18.255.1/32
    P-hv2:  fab0 ───┘ 198.18.254.2/24  2001:db8:ffff::2/64  lo: 198.18.255.1/32

Workloads are not built here: the agent of each hypervisor creates them
(endpoints.py). Invariants:
- `build` is idempotent and additive: it creates what is missing and repairs
  what it owns (addresses, link state, sysctls), never removes a hypervisor.
- `teardown` removes every netns whose name starts with `P-` (so also
  workload netns, and anything a crashed run left), and nothing else.
- Interfaces are created directly in their target netns (veth peers get
  their netns at creation), so concurrent labs never race on names in the
  root namespace.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyroute2 import IPRoute

from stockade.errors import LabError
from stockade.lab import naming
from stockade.lab import netns as ns
from stockade.lab.rtnl import (
    add_address,
    dump_addrs,
    dump_links,
    ensure_up,
    netlink_op,
)

# Quiet the L2 fabric: it has no addresses, so no link-local addresses, MLD or DAD either.
_FABRIC_SYSCTLS = {
    "net.ipv6.conf.all.disable_ipv6": "1",
    "net.ipv6.conf.default.disable_ipv6": "1",
}
# A hypervisor is a router. accept_dad=0: lab addresses are unique by construction, and
# DAD would hold every new IPv6 address tentative for a second. arp_announce=2: ARP
# on the fabric from the node address, never from the gateway address every host shares.
_HOST_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.ipv6.conf.all.forwarding": "1",
    "net.ipv6.conf.default.forwarding": "1",
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
    "net.ipv4.conf.all.arp_announce": "2",
}


@dataclass(frozen=True)
class HostInventory:
    name: str
    netns: str
    uplink_up: bool                  # fab0 exists and is up
    node_addresses: tuple[str, ...]  # what fab0 carries, "addr/len"
    workloads: tuple[str, ...]       # workload netns of this hypervisor


@dataclass(frozen=True)
class LabInventory:
    prefix: str
    fabric: bool                     # P-fab exists
    hosts: tuple[HostInventory, ...]
    other_netns: tuple[str, ...]     # P-* netns that are neither fabric, hypervisor nor workload

    @property
    def exists(self) -> bool:
        return self.fabric or bool(self.hosts) or bool(self.other_netns)

    @property
    def host_names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hosts)


def build(prefix: str, hosts: int, controllers: int = 1, etcd_members: int = 0) -> LabInventory:
    """Build (or complete) the fabric, the control plane (addresses for `controllers` replicas
    and `etcd_members` etcd members) and hypervisors hv1..hv`hosts`; returns what exists after."""
    naming.check_prefix(prefix)
    if not 1 <= hosts <= naming.MAX_HOSTS:
        raise LabError(f"a lab has 1 to {naming.MAX_HOSTS} hypervisors, not {hosts}")
    _ensure_fabric(prefix)
    _ensure_control_plane(prefix, controllers, etcd_members)
    for i in range(1, hosts + 1):
        _ensure_host(prefix, naming.host_name(i))
    return inspect(prefix)


def _ensure_netns(name: str, sysctls: dict[str, str]) -> None:
    if not ns.exists(name):
        ns.create(name)
    # Written every time: cheap, and repairs a namespace someone changed by hand.
    ns.write_sysctls(name, sysctls)


def _ensure_fabric(prefix: str) -> None:
    fab = naming.fabric_netns(prefix)
    _ensure_netns(fab, _FABRIC_SYSCTLS)
    with ns.open_rtnl(fab) as ipr:
        links = dump_links(ipr)
        ensure_up(ipr, links["lo"])
        bridge = links.get(naming.FABRIC_BRIDGE)
        if bridge is None:
            with netlink_op(f"create bridge {naming.FABRIC_BRIDGE} in {fab}"):
                # STP off (the default): ports forward as soon as they are up.
                ipr.link("add", ifname=naming.FABRIC_BRIDGE, kind="bridge")
            bridge = dump_links(ipr)[naming.FABRIC_BRIDGE]
        ensure_up(ipr, bridge)


def _ensure_host(prefix: str, host: str) -> None:
    hv = naming.host_netns(prefix, host)
    _ensure_netns(hv, _HOST_SYSCTLS)
    with ns.open_rtnl(hv) as ipr:
        links = dump_links(ipr)
        if naming.FABRIC_IFACE not in links:
            _create_uplink(prefix, host)
            links = dump_links(ipr)
        addrs = dump_addrs(ipr)
        lo = links["lo"]
        ensure_up(ipr, lo)
        if (naming.GATEWAY_V4, 32) not in addrs.get(lo.index, set()):
            add_address(ipr, lo.index, "lo", naming.GATEWAY_V4, 32)
        uplink = links[naming.FABRIC_IFACE]
        v4, v6 = naming.node_addresses(host)
        have = addrs.get(uplink.index, set())
        for addr, plen in ((v4, naming.NODE_V4_PREFIXLEN), (v6, naming.NODE_V6_PREFIXLEN)):
            if (addr, plen) not in have:
                add_address(ipr, uplink.index, naming.FABRIC_IFACE, addr, plen)
        ensure_up(ipr, uplink)
    attach_to_bridge(prefix, naming.fabric_port(host))


def _ensure_control_plane(prefix: str, controllers: int = 1, etcd_members: int = 0) -> None:
    """The control plane's netns on the fabric: each controller replica listens there on its
    own address, where each hypervisor's agent reaches it over TLS, as agents on real hosts do;
    etcd members, when the lab runs them, on theirs."""
    cp = naming.control_netns(prefix)
    _ensure_netns(cp, {"net.ipv6.conf.all.accept_dad": "0", "net.ipv6.conf.default.accept_dad": "0"})
    ensure_uplink(prefix, naming.CONTROL_SUFFIX, cp)
    with ns.open_rtnl(cp) as ipr:
        links = dump_links(ipr)
        ensure_up(ipr, links["lo"])
        uplink = links[naming.FABRIC_IFACE]
        have = dump_addrs(ipr).get(uplink.index, set())
        wanted = [(a, plen) for i in range(1, controllers + 1)
                  for a, plen in zip(naming.controller_addresses(i), (naming.NODE_V4_PREFIXLEN,
                                                                      naming.NODE_V6_PREFIXLEN))]
        wanted += [(naming.etcd_address(j), naming.NODE_V4_PREFIXLEN) for j in range(1, etcd_members + 1)]
        for addr, plen in wanted:
            if (addr, plen) not in have:
                add_address(ipr, uplink.index, naming.FABRIC_IFACE, addr, plen)
        ensure_up(ipr, uplink)
    attach_to_bridge(prefix, naming.CONTROL_SUFFIX)


def ensure_uplink(prefix: str, port: str, netns: str) -> None:
    """`netns`'s uplink fab0, made with its fabric end `port` unless it exists."""
    with ns.open_rtnl(netns) as ipr:
        if naming.FABRIC_IFACE in dump_links(ipr):
            return
    _make_uplink(prefix, port, netns)


def attach_to_bridge(prefix: str, port_name: str) -> None:
    fab = naming.fabric_netns(prefix)
    with ns.open_rtnl(fab) as ipr:
        links = dump_links(ipr)
        port = links[port_name]
        bridge = links[naming.FABRIC_BRIDGE]
        if port.master != bridge.index:
            with netlink_op(f"attach {port.name} to {naming.FABRIC_BRIDGE} in {fab}"):
                ipr.link("set", index=port.index, master=bridge.index)
        ensure_up(ipr, port)


def _create_uplink(prefix: str, host: str) -> None:
    """The veth pair hvN (fabric) ↔ fab0 (hypervisor)."""
    _make_uplink(prefix, naming.fabric_port(host), naming.host_netns(prefix, host))


def _make_uplink(prefix: str, port: str, netns: str) -> None:
    """The veth pair `port` (fabric) ↔ fab0 (`netns`), made in the fabric with its peer sent over."""
    fab = naming.fabric_netns(prefix)
    with ns.open_rtnl(fab) as ipr:
        if port in dump_links(ipr):
            # A stale port whose peer went with a deleted netns cannot exist (veth ends die
            # together); a same-named foreign link is in the way: replace it.
            with netlink_op(f"delete stale {port} in {fab}", ignore=(19,)):  # ENODEV
                ipr.link("del", ifname=port)
        with netlink_op(f"create veth {port} ({fab}) <-> {naming.FABRIC_IFACE} ({netns})"):
            ipr.link("add", ifname=port, kind="veth", peer={"ifname": naming.FABRIC_IFACE, "net_ns_fd": netns})


def teardown(prefix: str, kill_processes: bool = True) -> list[str]:
    """Remove every netns named `P-*`; with `kill_processes`, SIGKILL what still runs inside them first.

    Returns the removed netns. Hypervisors go first, so workload veths and
    fabric ports die with their peers rather than one by one.
    """
    naming.check_prefix(prefix)
    names = ns.list_netns(naming.lab_netns_prefix(prefix))
    if kill_processes:
        # A process inside would keep its netns (and interfaces) alive, unnamed.
        for pids in ns.pids_in(names).values():
            ns.kill_pids(pids)
    hosts = [n for n in names if _host_of(prefix, n) is not None]
    order = hosts + [n for n in names if n not in hosts]
    return [name for name in order if ns.remove(name)]


def _host_of(prefix: str, netns_name: str) -> str | None:
    """`P-hv2` → "hv2"; None for any other name."""
    rest = netns_name[len(naming.lab_netns_prefix(prefix)):]
    return rest if naming.is_lab_host(rest) else None


def inspect(prefix: str) -> LabInventory:
    """What of the lab exists now (reads the kernel, changes nothing)."""
    naming.check_prefix(prefix)
    names = ns.list_netns(naming.lab_netns_prefix(prefix))
    fab = naming.fabric_netns(prefix)
    host_names = sorted((h for n in names if (h := _host_of(prefix, n))), key=naming.host_index)
    hosts: list[HostInventory] = []
    claimed = {n for n in (fab, naming.control_netns(prefix)) if n in names}
    for host in host_names:
        hv = naming.host_netns(prefix, host)
        wl_prefix = naming.workload_netns_prefix(prefix, host)
        workloads = tuple(n for n in names if n.startswith(wl_prefix))
        claimed |= {hv, *workloads}
        try:
            with ns.open_rtnl(hv) as ipr:
                hosts.append(_inspect_host(ipr, host, hv, workloads))
        except LabError:
            continue  # removed while we looked
    others = tuple(n for n in names if n not in claimed)
    return LabInventory(prefix, fab in names, tuple(hosts), others)


def _inspect_host(ipr: IPRoute, host: str, hv: str, workloads: tuple[str, ...]) -> HostInventory:
    links = dump_links(ipr)
    uplink = links.get(naming.FABRIC_IFACE)
    addrs: tuple[str, ...] = ()
    if uplink is not None:
        have = dump_addrs(ipr).get(uplink.index, set())
        addrs = tuple(f"{a}/{p}" for a, p in sorted(have) if not a.startswith("fe80:"))
    return HostInventory(host, hv, uplink is not None and uplink.up, addrs, workloads)
