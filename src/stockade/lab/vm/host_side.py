"""The host side of a VM's tap, configured as the lab configures a routed workload's veth.

    configure_routed_tap("P-hv1", "w-web1", ("198.18.1.10", "2001:db8:1::10"))

In netns `netns`: the tap up, fe80::1/64 on it (the guest's IPv6 gateway), proxy ARP on it,
and a /32 or /128 route per guest address through it (protocol ROUTE_PROTO, as endpoints.py
marks the lab's routes). The guest's IPv4 gateway 198.18.255.1 is answered by the hypervisor
itself (the lab puts it on lo), so nothing here is specific to QEMU beyond the tap's name.
Idempotent (`replace` routes, an existing address is fine); never touches another interface.
"""

from __future__ import annotations

from stockade.errors import LabError
from stockade.lab import naming
from stockade.lab import netns as ns
from stockade.lab.rtnl import (RT_SCOPE_LINK, RT_SCOPE_UNIVERSE, RT_TABLE_MAIN, add_address, dump_links,
                               ensure_up, family_of, host_prefixlen, netlink_op, norm_ip)


def configure_routed_tap(netns: str, tap: str, ips: tuple[str, ...]) -> None:
    """Give tap `tap` in `netns` the lab's routed host-side configuration for a guest with `ips`."""
    with ns.open_rtnl(netns) as ipr:
        link = dump_links(ipr).get(tap)
        if link is None:
            raise LabError(f"network namespace {netns} has no interface {tap} (is the VM running?)")
        ensure_up(ipr, link)
        add_address(ipr, link.index, tap, naming.GATEWAY_V6, 64)
        for ip in ips:
            ip = norm_ip(ip)
            v6 = ":" in ip
            with netlink_op(f"route {ip} via {tap} in {netns}"):
                ipr.route("replace", dst=f"{ip}/{host_prefixlen(ip)}", oif=link.index, proto=naming.ROUTE_PROTO,
                          table=RT_TABLE_MAIN, scope=RT_SCOPE_UNIVERSE if v6 else RT_SCOPE_LINK,
                          family=family_of(ip))
    ns.write_sysctls(netns, {f"net.ipv4.conf.{tap}.proxy_arp": "1"})
