"""The bridge-family table of a host with bridged workloads (`Ruleset.ports`). Pure.

A bridged workload's interface is a port of a Linux bridge (libvirt's virbr0, OpenStack's
linuxbridge). With `br_netfilter`, bridged IPv4/IPv6 traffic passes the `inet` hooks (and
conntrack), but there the in and out interfaces are the bridge itself, not its ports: the
port names are only visible in the bridge family. So this table, on hooks that run before
br_netfilter's (priority < 0), names the ports in the packet mark, and the inet table's
forward chains dispatch on the mark (`PORT_IN_MASK`, `PORT_OUT_MASK` in compile.program):

    chain ports_in   hook prerouting prio -300  iifname vmap @port_in_dispatch (goto bin_<name>);
                                                iifname @workload_port_names drop: no program
    chain ports_out  hook forward    prio -200  oifname vmap @port_out_dispatch (goto bout_<name>);
                                                oifname @workload_port_names drop: no program
    bin_<name>_<h>   one per bridged local workload: its MAC (when known) as the frame's and
                     the ARP sender's source, its IPv4 as the ARP sender's address (or 0.0.0.0,
                     an ARP probe); then the in-port id into the mark; neighbour discovery,
                     multicast listener messages and a DHCP request go on; its addresses as the IPv4/IPv6 source; no ethertype
                     but IPv4, IPv6 and ARP (a VLAN tag would carry a frame past br_netfilter)
    bout_<name>_<h>  one per bridged local workload: the out-port id into the mark

Anti-spoofing of bridged workloads lives here and not in the inet guard chain: the inet
prerouting hook sees the bridge as the input interface (checked on this kernel), while ARP
never reaches the inet hooks at all. Port ids are the workloads' positions among the host's
bridged workloads sorted by interface: deterministic, and a change of them comes with a
change of the program's structure anyway (a full replace).

Invariants: the marks are ORed into bits that are zero on a frame entering from a port (a
frame crossing into this netns from a veth or tap carries no mark); a flooded frame is cloned
per out port before `ports_out` runs, so each copy carries its own out-port id.
"""

from __future__ import annotations

from dataclasses import dataclass

from stockade.compile.addresses import family_of
from stockade.compile.program import (
    ND_TYPES,
    PORT_OUT_SHIFT,
    PRIORITY_PORTS_IN,
    PRIORITY_PORTS_OUT,
    UNKNOWN_INTERFACE,
    WORKLOAD_PORT_NAMES,
    CompileOptions,
)
from stockade.compile.selection import WorkloadKey
from stockade.model.naming import object_name
from stockade.model.state import DesiredState
from stockade.nft.ir import (
    ARP_SADDR_ETHER,
    ARP_SADDR_IP,
    ETHER_SADDR,
    ICMPV6_TYPE,
    IP6_SADDR,
    IP_SADDR,
    META_IIFNAME,
    META_L4PROTO,
    META_OIFNAME,
    TH_DPORT,
    Accept,
    BaseHook,
    Chain,
    Cmp,
    Continue,
    Dispatch,
    Drop,
    Goto,
    InAnon,
    InSet,
    MarkSet,
    NamedSet,
    Rule,
    Ruleset,
    VerdictMap,
    ports_table,
)

ETHER_TYPE = ("ether", "type")
MLD_TYPES = (130, 131, 132, 143)  # multicast listener query, report, done; MLDv2 report
ANTISPOOF = "antispoof"


@dataclass(frozen=True)
class BridgedPort:
    key: WorkloadKey
    interface: str
    port_id: int  # 1..MAX_BRIDGE_PORTS


def bridge_ruleset(state: DesiredState, ports: list[BridgedPort], options: CompileOptions) -> Ruleset:
    """The bridge-family table for the host's bridged workloads `ports` (not empty). Its revision
    is 0: it goes with its inet table's, and two revisions with the same ports are equal."""
    chains: list[Chain] = []
    in_map: list[tuple[str, Goto]] = []
    out_map: list[tuple[str, Goto]] = []
    for port in ports:
        ns, name = port.key
        chain_in = object_name("bin", f"{ns}/{name}", name)
        chain_out = object_name("bout", f"{ns}/{name}", name)
        chains.append(Chain(chain_in, _port_in_rules(state, port),
                            comment=f"Workload {ns}/{name} sends as itself on bridge port {port.interface}"))
        chains.append(Chain(chain_out, (Rule((), Continue(), mark=MarkSet(port.port_id << PORT_OUT_SHIFT)),),
                            comment=f"to Workload {ns}/{name} on bridge port {port.interface}"))
        in_map.append((port.interface, Goto(chain_in)))  # goto: the chain's end accepts
        out_map.append((port.interface, Goto(chain_out)))
    base = [
        Chain("ports_in", (
            Rule((), Dispatch(META_IIFNAME, "port_in_dispatch")),
            Rule((InSet((META_IIFNAME,), WORKLOAD_PORT_NAMES),), Drop(), UNKNOWN_INTERFACE, True),
        ), BaseHook("prerouting", PRIORITY_PORTS_IN), "bridge ports: name the in-port; each workload sends as itself"),
        Chain("ports_out", (
            Rule((), Dispatch(META_OIFNAME, "port_out_dispatch")),
            Rule((InSet((META_OIFNAME,), WORKLOAD_PORT_NAMES),), Drop(), UNKNOWN_INTERFACE, True),
        ), BaseHook("forward", PRIORITY_PORTS_OUT), "bridge ports: name the out-port"),
    ]
    names = NamedSet(WORKLOAD_PORT_NAMES, ("ifname",),
                     tuple(sorted(f"{p}*" for p in options.workload_interface_prefixes)), True,
                     "names of workload ports: one without a program is dropped")
    maps = (
        VerdictMap("port_in_dispatch", "ifname", tuple(sorted(in_map, key=lambda e: e[0]))),
        VerdictMap("port_out_dispatch", "ifname", tuple(sorted(out_map, key=lambda e: e[0]))),
    )
    return Ruleset(ports_table(options.table), "bridge", (names,), maps,
                   tuple(base + sorted(chains, key=lambda c: c.name)))


def _port_in_rules(state: DesiredState, port: BridgedPort) -> tuple[Rule, ...]:
    wl = state.workloads[port.key]
    ips = state.workload_ips(wl)
    own4 = next((ip for ip in ips if family_of(ip) == 4), None)
    own6 = next((ip for ip in ips if family_of(ip) == 6), None)
    rules: list[Rule] = []
    if wl.spec.mac:
        mac = wl.spec.mac.lower()
        rules.append(Rule((Cmp(ETHER_SADDR, mac, negate=True),), Drop(), ANTISPOOF, True))
        rules.append(Rule((Cmp(ARP_SADDR_ETHER, mac, negate=True),), Drop(), ANTISPOOF, True))
    # An ARP probe (duplicate address detection) has the sender address 0.0.0.0.
    arp_ok = ("0.0.0.0",) + ((own4,) if own4 else ())
    rules.append(Rule((InAnon(ARP_SADDR_IP, arp_ok, negate=True),), Drop(), ANTISPOOF, True))
    rules.append(Rule((), Continue(), mark=MarkSet(port.port_id)))
    # Neighbour discovery comes from link-local or unspecified addresses; the inet forward
    # chains let it through too (conntrack does not track it).
    rules.append(Rule((Cmp(META_L4PROTO, "ipv6-icmp"), InAnon(ICMPV6_TYPE, ND_TYPES)), Accept(),
                      "neighbour-discovery"))
    # Multicast listener reports and queries come from link-local addresses too, and the bridge's
    # multicast snooping needs them to deliver neighbour solicitations; they never leave the link.
    rules.append(Rule((Cmp(META_L4PROTO, "ipv6-icmp"), InAnon(ICMPV6_TYPE, MLD_TYPES)), Accept(),
                      "multicast-listener"))
    # A DHCP request is sent before the workload has its address (libvirt's networks serve DHCP).
    rules.append(Rule((Cmp(IP_SADDR, "0.0.0.0"), Cmp(META_L4PROTO, "udp"), Cmp(TH_DPORT, 67)), Accept(),
                      "dhcp-request"))
    for own, saddr, ethertype in ((own4, IP_SADDR, "ip"), (own6, IP6_SADDR, "ip6")):
        if own:
            rules.append(Rule((Cmp(saddr, own, negate=True),), Drop(), ANTISPOOF, True))
        else:
            rules.append(Rule((Cmp(ETHER_TYPE, ethertype),), Drop(), ANTISPOOF, True))
    rules.append(Rule((InAnon(ETHER_TYPE, ("ip", "ip6", "arp"), negate=True),), Drop(), ANTISPOOF, True))
    return tuple(rules)
