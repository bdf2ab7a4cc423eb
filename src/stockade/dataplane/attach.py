"""The host side of workloads on interfaces Stockade did not create (routed or bridged).

A hypervisor makes a VM's tap, a container runtime (through `stockade-cni` or another plugin)
a veth; the workload's own side holds its addresses (/32, /128) and a default route to a
gateway on the link. What this host must add, and what `AttachDriver.reconcile` keeps equal to
the plan whenever the interface exists (the agent calls it on every pass, and at once when
`dataplane.link_events` says an interface appeared):

- the interface up;
- `169.254.1.1/32` and `fe80::1/64` on it: the gateways the workload routes through (the
  same on every attached interface, so a workload that moves keeps its configuration);
- proxy ARP on it, so the host also answers for another gateway address a workload was given,
  when the host routes to it elsewhere;
- a host route per workload address to the interface (protocol `ROUTE_PROTO`, ours alone).

The nftables program needs none of this: it matches the interface by name, so a workload is
filtered from its interface's first packet whether the interface came before or after its
object, and an interface of the workload naming scheme with no object is dropped (fail closed).

A bridged workload (`spec.attachment: bridged`: its interface is a port of a Linux bridge, e.g.
libvirt's virbr0) is on the bridge's network, which is the hypervisor's: nothing above is done
for it (no gateway addresses, routes or proxy ARP, which would take its packets off the bridge).
The driver only sets it up, and makes bridged IPv4/IPv6 traffic of this network namespace pass
the inet hooks (`net.bridge.bridge-nf-call-iptables` and `-ip6tables` to 1, per netns: the
program filters bridged workloads there, see compile.bridge). A bridged workload whose interface
is not a bridge port, or a routed one whose interface is, is reported in the log and not
attached: its traffic would bypass the part of the program written for it, and the program's
fail-closed rules drop what the naming scheme names.

Invariants: level-triggered and idempotent (one dump of links, addresses and our routes per
call; nothing sent when nothing differs); it only removes routes of `ROUTE_PROTO`, never a link,
an address or a route of anyone else. pyroute2's IPRoute is imported only when the host has an
attachment (the agent's memory: `dataplane.pyroute2_lean`).
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from stockade.model.naming import ATTACHED_BY, workload_interface
from stockade.model.state import DesiredState

log = logging.getLogger(__name__)

ROUTE_PROTO = 77          # our host routes to attached workloads (the lab's own endpoints use 201)
GATEWAY_V4 = "169.254.1.1"  # on every attached interface: the next hop workloads route IPv4 through
GATEWAY_V6 = "fe80::1"      # and IPv6
_GONE = (errno.ENOENT, errno.ESRCH, errno.ENODEV)


@dataclass(frozen=True)
class Attachment:
    key: str                 # "namespace/name"
    interface: str           # host side, made by the hypervisor or runtime
    ips: tuple[str, ...]
    mac: str | None = None
    bridged: bool = False    # spec.attachment: bridged (a bridge port; see the module doc)


def plan_attachments(state: DesiredState, host: str,
                     only_marked: bool = False) -> tuple[Attachment, ...]:
    """The workloads of `host` this driver plumbs: every local one, or (`only_marked`: in the lab,
    whose own workloads the lab wires) those marked `stockade.io/attached-by`. Pure."""
    found = []
    for (namespace, name), wl in sorted(state.workloads.items()):
        if wl.spec.host != host:
            continue
        if only_marked and ATTACHED_BY not in (wl.metadata.annotations or {}):
            continue
        found.append(Attachment(f"{namespace}/{name}", workload_interface(wl), tuple(state.workload_ips(wl)),
                                wl.spec.mac, wl.spec.attachment == "bridged"))
    return tuple(found)


def _set_proxy_arp(interface: str, root: Path = Path("/proc/sys/net/ipv4/conf")) -> bool:
    """proxy_arp on `interface`; True when that was a change."""
    path = root / interface / "proxy_arp"
    if path.read_text().strip() == "1":
        return False
    path.write_text("1\n")
    return True


BRIDGE_NF_SYSCTLS = ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables")


def _set_bridge_nf(name: str, root: Path = Path("/proc/sys/net/bridge")) -> bool:
    """net.bridge.`name` = 1 in this network namespace; True when that was a change."""
    path = root / name
    if path.read_text().strip() == "1":
        return False
    path.write_text("1\n")
    return True


class AttachDriver:
    """Keeps the host side of attached workloads equal to the plan, in this network namespace."""

    def __init__(self, set_proxy_arp: Callable[[str], bool] = _set_proxy_arp,
                 set_bridge_nf: Callable[[str], bool] = _set_bridge_nf) -> None:
        self._set_proxy_arp = set_proxy_arp
        self._set_bridge_nf = set_bridge_nf
        self._had_any = False  # once we plumbed something, an empty plan must still clean up

    def reconcile(self, attachments: tuple[Attachment, ...]) -> dict[str, dict[str, Any]]:
        """Plumb every attachment whose interface exists; remove our routes no attachment wants.
        Returns the endpoint report (`model.reports.Endpoint` fields) of each attached one."""
        if not attachments and not self._had_any:
            return {}
        self._had_any = bool(attachments)
        from pyroute2 import IPRoute

        from stockade.dataplane import rtnl

        statuses: dict[str, dict[str, Any]] = {}
        with IPRoute() as ipr:
            links = rtnl.dump_links(ipr)
            addrs = rtnl.dump_addrs(ipr)
            want: dict[tuple[str, int, int], int] = {}
            for att in attachments:
                link = links.get(att.interface)
                if link is None:
                    continue  # not there yet: the link event that announces it brings us back
                if (link.master is not None) != att.bridged:
                    # A routed workload on a bridge port would have its packets taken off the
                    # bridge by our routes; a bridged one off a bridge is never seen by the
                    # bridge table. Either way its object says something else than the host.
                    log.warning("%s: %s is %sa bridge port but the workload's spec.attachment is %s; "
                                "left as it is", att.key, att.interface, "" if link.master else "not ",
                                "bridged" if att.bridged else "routed")
                    continue
                try:
                    if att.bridged:
                        self._bridge_port(ipr, rtnl, att, link)
                    else:
                        self._plumb(ipr, rtnl, att, link, addrs.get(link.index, set()))
                except Exception as e:  # noqa: BLE001 - one interface's trouble must not stop the others
                    log.warning("attaching %s on %s failed: %s", att.key, att.interface, e)
                    continue
                statuses[att.key] = {"interface": att.interface, **({"mac": att.mac} if att.mac else {})}
                if att.bridged:
                    continue  # the bridge's network routes to it, not this host
                for ip in att.ips:
                    ip = rtnl.norm_ip(ip)
                    want[(ip, rtnl.host_prefixlen(ip), link.index)] = (
                        rtnl.RT_SCOPE_LINK if ":" not in ip else rtnl.RT_SCOPE_UNIVERSE)
            self._sync_routes(ipr, rtnl, want)
        return statuses

    def _plumb(self, ipr: Any, rtnl: Any, att: Attachment, link: Any, have: set[tuple[str, int]]) -> None:
        if rtnl.ensure_up(ipr, link):
            log.info("set %s up (%s)", att.interface, att.key)
        for address, prefixlen in ((GATEWAY_V4, 32), (GATEWAY_V6, 64)):
            if (address, prefixlen) not in have:
                rtnl.add_address(ipr, link.index, att.interface, address, prefixlen)
        if self._set_proxy_arp(att.interface):
            log.info("proxy ARP on %s (%s)", att.interface, att.key)

    def _bridge_port(self, ipr: Any, rtnl: Any, att: Attachment, link: Any) -> None:
        if rtnl.ensure_up(ipr, link):
            log.info("set %s up (%s, bridged)", att.interface, att.key)
        for name in BRIDGE_NF_SYSCTLS:
            if self._set_bridge_nf(name):
                log.info("%s set to 1: bridged traffic passes the inet hooks (%s)", name, att.key)

    @staticmethod
    def _sync_routes(ipr: Any, rtnl: Any, want: dict[tuple[str, int, int], int]) -> None:
        have = {(r.key[0], r.key[1], r.key[2]): r for r in rtnl.dump_routes(ipr, proto=ROUTE_PROTO)}
        for dst, plen, oif in sorted(set(have) - set(want), key=str):
            with rtnl.netlink_op(f"delete route {dst}/{plen}", ignore=_GONE):
                # Scope "nowhere" matches any scope (as `ip route del` asks): ours are scope link.
                ipr.route("del", dst=f"{dst}/{plen}", oif=oif, proto=ROUTE_PROTO, table=rtnl.RT_TABLE_MAIN,
                          scope=rtnl.RT_SCOPE_NOWHERE)
        for key in sorted(set(want) - set(have), key=str):
            dst, plen, oif = key
            with rtnl.netlink_op(f"add route {dst}/{plen}"):
                # `replace`: takes over the same prefix from a route that is not ours (a workload that moved here).
                ipr.route("replace", dst=f"{dst}/{plen}", oif=oif, proto=ROUTE_PROTO, table=rtnl.RT_TABLE_MAIN,
                          scope=want[key], family=rtnl.family_of(dst))


class HostAttachments:
    """The agent's endpoint driver for interfaces it did not make: plans this host's attachments
    from the state and plumbs them (`AttachDriver`). `only_marked`: the lab's agents, whose own
    driver wires the lab's workloads, plumb only those marked `stockade.io/attached-by`."""

    def __init__(self, host: str, only_marked: bool = False, driver: AttachDriver | None = None) -> None:
        self.host = host
        self.only_marked = only_marked
        self.driver = driver or AttachDriver()

    def reconcile(self, state: DesiredState) -> dict[str, dict[str, Any]]:
        return self.driver.reconcile(plan_attachments(state, self.host, self.only_marked))
