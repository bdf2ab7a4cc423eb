"""A hypervisor's workload endpoints: plan them from the desired state, make the kernel match.

Called by the agent of one lab hypervisor on every loop iteration. The agent
runs inside the hypervisor's netns (nsenter --net) and shares the mount
namespace, so it can see and create the other named netns; tests call the
same code from the root netns. Blocking: run it off the asyncio loop.

    plan_endpoints(state, host, prefix)   pure: DesiredState → EndpointPlan
    reconcile(plan, prefix, host)         kernel ← plan; returns a ReconcileReport
    reconcile_endpoints(plan, prefix, host) the statuses alone; raises when anything failed

What one endpoint is (routed, a veth per workload):

    P-<host>.<ns>.<name>:  eth0  ip/32 ip6/128, MAC, routes to 198.18.255.1 / fe80::1
    P-<host>:              <workload_interface>  fe80::1/64, ip/32 and ip6/128 routes to it

plus, in the hypervisor, a /32 or /128 route per remote workload via the
remote hypervisor's node address over fab0.

Invariants:
- Level-triggered and idempotent: each call compares one dump of the
  hypervisor's links, addresses and routes (and one listing of /run/netns)
  with the plan and repairs the difference; when nothing differs it sends
  no mutating request, and the report's `changes` is empty.
- It only touches what the lab owns: routes with protocol ROUTE_PROTO, veths
  whose ifalias carries ENDPOINT_ALIAS_TAG, netns starting `P-<host>.`.
- A workload the lab is moving (`lab.moves`) is left alone by both hosts until its link
  arrives: the host it leaves keeps its netns and veth (the move takes them over, processes
  and sockets included), the host it goes to does not make a fresh one in the meantime.
- The workload side (inside a workload's netns) is configured when the
  endpoint is created or its configuration changes; the host-side veth's
  ifalias records what it was configured with (key, MAC, addresses), so an
  unchanged workload costs no visit to its netns. The ifalias is written
  last, so a half-done configuration is redone on the next call.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass, field
from typing import Mapping

from pyroute2 import IPRoute

from stockade.errors import LabError
from stockade.lab import moves, naming, resolv
from stockade.lab import netns as ns
from stockade.lab.rtnl import (
    RT_SCOPE_LINK,
    RT_SCOPE_NOWHERE,
    RT_SCOPE_UNIVERSE,
    RT_TABLE_MAIN,
    LinkView,
    RouteView,
    add_address,
    dump_addrs,
    dump_links,
    dump_routes,
    ensure_up,
    family_of,
    host_prefixlen,
    netlink_op,
    norm_ip,
)
from stockade.model.naming import ATTACHED_BY, workload_interface
from stockade.model.state import DesiredState

log = logging.getLogger(__name__)

_WORKLOAD_SYSCTLS = {
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
}
_GONE = (errno.ENOENT, errno.ESRCH, errno.ENODEV)


# ------------------------------------------------------------------ the plan

@dataclass(frozen=True)
class LocalEndpoint:
    key: str                 # "namespace/name"
    netns: str
    interface: str           # host side, in the hypervisor netns
    ips: tuple[str, ...]     # IPv4 first
    mac: str                 # of eth0 in the workload netns

    @property
    def signature(self) -> str:
        """What the workload side is configured with; stored as the host veth's ifalias."""
        return f"{naming.ENDPOINT_ALIAS_TAG} {self.key} mac={self.mac} ips={','.join(self.ips)}"


@dataclass(frozen=True)
class EndpointPlan:
    prefix: str
    host: str
    local: tuple[LocalEndpoint, ...]                           # sorted by key
    remote_routes: Mapping[str, str] = field(default_factory=dict)  # workload ip → remote node address
    problems: tuple[str, ...] = ()                             # workloads left out, and why


def plan_endpoints(state: DesiredState, host: str, prefix: str) -> EndpointPlan:
    """The endpoints `host` must have, and its routes to workloads on other lab hypervisors. Pure."""
    naming.check_prefix(prefix)
    local: list[LocalEndpoint] = []
    remote: dict[str, str] = {}
    problems: list[str] = []
    taken_ifaces: dict[str, str] = {}
    for (namespace, name), wl in sorted(state.workloads.items()):
        key = f"{namespace}/{name}"
        ips = tuple(sorted((norm_ip(ip) for ip in state.workload_ips(wl)), key=lambda ip: (":" in ip, ip)))
        if wl.spec.host == host:
            if ATTACHED_BY in (wl.metadata.annotations or {}):
                continue  # a hypervisor or runtime made its interface: plumbed by dataplane.attach
            iface = workload_interface(wl)
            if iface in taken_ifaces:
                problems.append(f"Workload {key}: interface {iface} is already used by {taken_ifaces[iface]}")
                continue
            if iface in (naming.FABRIC_IFACE, "lo"):
                problems.append(f"Workload {key}: interface {iface} is reserved by the lab")
                continue
            taken_ifaces[iface] = key
            local.append(LocalEndpoint(
                key=key, netns=naming.workload_netns(prefix, host, namespace, name), interface=iface,
                ips=ips, mac=wl.spec.mac or naming.derived_mac(key)))
        elif naming.is_lab_host(wl.spec.host):
            v4, v6 = naming.node_addresses(wl.spec.host)
            for ip in ips:
                remote[ip] = v6 if ":" in ip else v4
        # A workload on a host that is not a lab hypervisor has no route in the lab.
    return EndpointPlan(prefix, host, tuple(local), dict(sorted(remote.items())), tuple(problems))


# ----------------------------------------------------------------- reconcile

@dataclass(frozen=True)
class EndpointStatus:
    netns: str
    interface: str
    mac: str
    ips: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReconcileReport:
    endpoints: dict[str, EndpointStatus]   # key "ns/name" → status, for endpoints that are in place
    changes: tuple[str, ...]               # every mutating operation done, in order
    errors: dict[str, str]                 # key (or "routes") → why it is not in place


def reconcile_endpoints(plan: EndpointPlan, prefix: str, host: str) -> dict[str, EndpointStatus]:
    """Make the kernel match `plan`; the status of every endpoint. LabError if any part failed.

    Everything that could be done is done before raising, and the next call
    retries the rest.
    """
    report = reconcile(plan, prefix, host)
    if report.errors:
        raise LabError("; ".join(f"{k}: {v}" for k, v in sorted(report.errors.items())))
    return report.endpoints


def reconcile(plan: EndpointPlan, prefix: str, host: str) -> ReconcileReport:
    """Make the kernel of hypervisor `host` match `plan`; what was done and what failed."""
    naming.check_prefix(prefix)
    if (plan.prefix, plan.host) != (prefix, host):
        raise LabError(f"plan is for {plan.prefix}/{plan.host}, not {prefix}/{host}")
    hv = naming.host_netns(prefix, host)
    in_flight = moves.in_flight(prefix)
    with ns.open_rtnl(hv) as ipr:
        return _Reconciler(ipr, plan, hv, in_flight).run()


@dataclass
class _Reconciler:
    """One reconcile pass over one hypervisor; records every change it makes."""

    ipr: IPRoute
    plan: EndpointPlan
    hv: str
    in_flight: Mapping[str, moves.Move] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    def change(self, what: str) -> None:
        log.info("lab %s: %s", self.hv, what)
        self.changes.append(what)

    def run(self) -> ReconcileReport:
        wl_prefix = naming.workload_netns_prefix(self.plan.prefix, self.plan.host)
        existing_ns = set(ns.list_netns(wl_prefix))
        links = dump_links(self.ipr)
        addrs = dump_addrs(self.ipr)
        uplink = links.get(naming.FABRIC_IFACE)
        if uplink is None:
            raise LabError(f"hypervisor {self.hv} has no {naming.FABRIC_IFACE}: build the lab topology first")

        done: dict[str, EndpointStatus] = {}
        for ep in self.plan.local:
            move = self.in_flight.get(ep.key)
            if move is not None and move.target == self.plan.host and ep.interface not in links:
                continue  # arriving: its link comes from the host it leaves (lab.migration)
            try:
                created = self.ensure_endpoint(ep, links.get(ep.interface), ep.netns in existing_ns, addrs)
            except LabError as e:
                self.errors[ep.key] = e.message
                continue
            if created:
                links = dump_links(self.ipr)  # a new index for its routes
            done[ep.key] = EndpointStatus(ep.netns, ep.interface, ep.mac, ep.ips)

        try:
            self.sync_routes(links, uplink)
        except LabError as e:
            self.errors["routes"] = e.message
        self.remove_stale(links, existing_ns)
        return ReconcileReport(done, tuple(self.changes), dict(self.errors))

    # -- one endpoint

    def ensure_endpoint(self, ep: LocalEndpoint, link: LinkView | None, ns_exists: bool,
                        addrs: dict[int, set[tuple[str, int]]]) -> bool:
        """Create or repair one endpoint; True when its host veth was (re)created."""
        if not ns_exists:
            self.change(f"create netns {ep.netns}")
            ns.create(ep.netns)
            ns.write_sysctls(ep.netns, _WORKLOAD_SYSCTLS)
        resolv.write(ep.netns)  # the lab's resolver (lab.resolv); a no-op when it is there
        healthy = (link is not None and link.kind == "veth" and link.peer_netnsid is not None
                   and ns_exists)
        if not healthy:
            if link is not None:
                self.change(f"delete {ep.interface} (not a veth into {ep.netns})")
                with netlink_op(f"delete {ep.interface}", ignore=_GONE):
                    self.ipr.link("del", index=link.index)
            self.create_veth(ep)
            self.configure_workload_side(ep)
            fresh = dump_links(self.ipr)[ep.interface]
            self.configure_host_side(ep, fresh, set())
            return True
        assert link is not None
        if link.alias != ep.signature:
            self.configure_workload_side(ep)
        self.configure_host_side(ep, link, addrs.get(link.index, set()))
        return False

    def create_veth(self, ep: LocalEndpoint) -> None:
        with ns.open_rtnl(ep.netns) as inner:
            stale = dump_links(inner).get(naming.WORKLOAD_IFACE)
            if stale is not None:
                # Someone else's eth0 in our netns would block the veth peer's name.
                self.change(f"delete stale {naming.WORKLOAD_IFACE} in {ep.netns}")
                with netlink_op(f"delete {naming.WORKLOAD_IFACE} in {ep.netns}", ignore=_GONE):
                    inner.link("del", index=stale.index)
        self.change(f"create veth {ep.interface} <-> {naming.WORKLOAD_IFACE}@{ep.netns}")
        with netlink_op(f"create veth {ep.interface} for {ep.key}"):
            # The peer is born in the workload netns with its MAC: no rename, no move.
            self.ipr.link("add", ifname=ep.interface, kind="veth",
                          peer={"ifname": naming.WORKLOAD_IFACE, "net_ns_fd": ep.netns, "address": ep.mac})

    def configure_workload_side(self, ep: LocalEndpoint) -> None:
        """eth0 with exactly the workload's addresses and MAC, lo up, routes to the gateways."""
        self.change(f"configure {naming.WORKLOAD_IFACE} in {ep.netns}: mac {ep.mac}, ips {','.join(ep.ips) or '-'}")
        with ns.open_rtnl(ep.netns) as inner:
            links = dump_links(inner)
            ensure_up(inner, links["lo"])
            eth0 = links.get(naming.WORKLOAD_IFACE)
            if eth0 is None:
                raise LabError(f"{ep.netns} has no {naming.WORKLOAD_IFACE}")
            if (eth0.mac or "").lower() != ep.mac:
                with netlink_op(f"set MAC of {naming.WORKLOAD_IFACE} in {ep.netns}"):
                    inner.link("set", index=eth0.index, state="down")
                    inner.link("set", index=eth0.index, address=ep.mac)
                eth0 = dump_links(inner)[naming.WORKLOAD_IFACE]
            ensure_up(inner, eth0)
            want = {(ip, host_prefixlen(ip)) for ip in ep.ips}
            have = {a for a in dump_addrs(inner).get(eth0.index, set()) if not a[0].startswith("fe80:")}
            for addr, plen in sorted(have - want):
                with netlink_op(f"remove {addr}/{plen} from {naming.WORKLOAD_IFACE} in {ep.netns}", ignore=_GONE):
                    inner.addr("del", index=eth0.index, address=addr, prefixlen=plen)
            for addr, plen in sorted(want - have):
                add_address(inner, eth0.index, f"{naming.WORKLOAD_IFACE} in {ep.netns}", addr, plen)
            common = {"oif": eth0.index, "proto": naming.ROUTE_PROTO, "table": RT_TABLE_MAIN}
            with netlink_op(f"routes of {ep.netns}"):
                # `replace`: idempotent, and the on-link route must exist before the default via it.
                inner.route("replace", dst=f"{naming.GATEWAY_V4}/32", scope=RT_SCOPE_LINK, **common)
                inner.route("replace", dst="0.0.0.0/0", gateway=naming.GATEWAY_V4, **common)
                inner.route("replace", dst="::/0", gateway=naming.GATEWAY_V6, **common)

    def configure_host_side(self, ep: LocalEndpoint, link: LinkView, have: set[tuple[str, int]]) -> None:
        if (naming.GATEWAY_V6, 64) not in have:
            self.change(f"add {naming.GATEWAY_V6}/64 to {ep.interface}")
            add_address(self.ipr, link.index, ep.interface, naming.GATEWAY_V6, 64)
        if not link.up:
            self.change(f"set {ep.interface} up")
            ensure_up(self.ipr, link)
        if link.alias != ep.signature:
            self.change(f"record {ep.key} on {ep.interface}")
            with netlink_op(f"set ifalias of {ep.interface}"):
                self.ipr.link("set", index=link.index, ifalias=ep.signature)

    # -- routes

    def sync_routes(self, links: dict[str, LinkView], uplink: LinkView) -> None:
        want: dict[tuple[str, int, int | None, str | None], int] = {}  # key → scope
        for ep in self.plan.local:
            link = links.get(ep.interface)
            if link is None or ep.key in self.errors:
                continue
            for ip in ep.ips:
                scope = RT_SCOPE_LINK if ":" not in ip else RT_SCOPE_UNIVERSE
                want[(ip, host_prefixlen(ip), link.index, None)] = scope
        for ip, via in self.plan.remote_routes.items():
            want[(ip, host_prefixlen(ip), uplink.index, via)] = RT_SCOPE_UNIVERSE
        have: dict[tuple[str, int, int | None, str | None], RouteView] = {
            r.key: r for r in dump_routes(self.ipr, proto=naming.ROUTE_PROTO)}
        by_index = {link.index: name for name, link in links.items()}
        for key in sorted(set(have) - set(want), key=str):
            dst, plen, oif, gw = key
            self.change(f"delete route {dst}/{plen} dev {by_index.get(oif or -1, oif)}" + (f" via {gw}" if gw else ""))
            with netlink_op(f"delete route {dst}/{plen}", ignore=_GONE):
                # Scope "nowhere" matches any scope, as `ip route del` asks: without it the kernel
                # refuses to delete a link-scope IPv4 route (ESRCH), which _GONE would hide.
                self.ipr.route("del", dst=f"{dst}/{plen}", oif=oif, proto=naming.ROUTE_PROTO,
                               table=RT_TABLE_MAIN, scope=RT_SCOPE_NOWHERE, **({"gateway": gw} if gw else {}))
        for key in sorted(set(want) - set(have), key=str):
            dst, plen, oif, gw = key
            self.change(f"add route {dst}/{plen} dev {by_index.get(oif or -1, oif)}" + (f" via {gw}" if gw else ""))
            with netlink_op(f"add route {dst}/{plen}"):
                # `replace` takes over a same-prefix route that is not ours (or a moved workload's).
                self.ipr.route("replace", dst=f"{dst}/{plen}", oif=oif, proto=naming.ROUTE_PROTO,
                               table=RT_TABLE_MAIN, scope=want[key], family=family_of(dst),
                               **({"gateway": gw} if gw else {}))

    # -- what is no longer planned

    def remove_stale(self, links: dict[str, LinkView], existing_ns: set[str]) -> None:
        leaving = [m.key for m in self.in_flight.values() if m.source == self.plan.host]
        planned_ifaces = {ep.interface for ep in self.plan.local}
        planned_ns = {ep.netns for ep in self.plan.local}
        # A workload leaving for another host keeps its veth and netns until the move takes them.
        planned_ns |= {naming.workload_netns(self.plan.prefix, self.plan.host, *k.split("/", 1)) for k in leaving}
        # Veths first: deleting one takes its peer along synchronously, whereas a
        # removed netns lets go of its devices asynchronously.
        for name, link in sorted(links.items()):
            if name in planned_ifaces or not (link.alias or "").startswith(naming.ENDPOINT_ALIAS_TAG + " "):
                continue
            if _alias_key(link.alias) in leaving:
                continue
            self.change(f"delete {name} ({_alias_key(link.alias) or '?'})")
            try:
                with netlink_op(f"delete {name}", ignore=_GONE):
                    self.ipr.link("del", index=link.index)
            except LabError as e:
                self.errors[name] = e.message
        for name in sorted(existing_ns - planned_ns):
            self.change(f"remove netns {name}")
            resolv.remove(name)
            try:
                ns.remove(name)
            except LabError as e:
                self.errors[name] = e.message


def _alias_key(alias: str | None) -> str | None:
    """The "namespace/name" a host veth's ifalias records (LocalEndpoint.signature)."""
    parts = (alias or "").split(" ")
    return parts[1] if len(parts) > 1 else None
