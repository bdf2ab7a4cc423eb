"""Workloads' DNS to the trusted resolvers goes through the host's DNS proxy (issue 18). Pure.

An fqdn rule opens the addresses the trusted resolvers give a name, and they must be in the
kernel before the workload sees the answer. The kernel here has no NFQUEUE to hold an answer,
so the query itself is taken: a nat rule sends a workload's DNS (UDP and TCP port 53) for a
trusted resolver to the agent's proxy on this host, which asks the resolver, learns the
addresses, and only then answers (agent.dns_proxy).

Policy still decides who may ask: a workload's query is intercepted only when its own egress
policy allows that packet to that resolver (evaluated here, on the program being built, with the
same interpreter `trace` uses), so the set of intercepted (interface, resolver) pairs changes with
policy like any set. A query the policy denies is not intercepted and meets that deny in the
forward hook as before. What the nat rule sends to the proxy carries DNS_MARK, the only new
traffic from workloads the input hook accepts.

Only IPv4 resolvers are intercepted (a workload's IPv6 gateway is link-local, fe80::1, which a
dnat cannot name); AAAA answers are learned whatever the transport.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

from stockade.nft.interpret import Interpreter, Packet
from stockade.nft.ir import (
    IP_DADDR,
    META_IIFNAME,
    META_L4PROTO,
    TH_DPORT,
    BaseHook,
    Chain,
    Cmp,
    Dnat,
    InSet,
    MarkSet,
    NamedSet,
    Rule,
    Ruleset,
)

DNS_MARK = 0x20000000          # bit 29 (docs/architecture.md: the packet mark's bits)
DNS_PORT = 53
INTERCEPT_CHAIN = "dns_intercept"
PRIORITY_DSTNAT = -100         # the nat hook's usual place, after the guard (-300) and conntrack (-200)
CLIENT_SETS = {"udp": "dns_udp_clients", "tcp": "dns_tcp_clients"}
_OUTSIDE = ""                  # an output interface that is no local workload's: the resolver is off-host


@dataclass(frozen=True)
class DnsInterception:
    """Where the agent's DNS proxy listens, and which resolvers' answers it trusts."""

    resolvers: tuple[str, ...]   # IPv4 addresses of the trusted resolvers (the workloads' nameservers)
    proxy_address: str           # an IPv4 address of this host that workloads' packets can be sent to
    proxy_port: int

    def __post_init__(self) -> None:
        for ip in (*self.resolvers, self.proxy_address):
            if ipaddress.ip_address(ip).version != 4:
                raise ValueError(f"DNS interception: {ip} is not an IPv4 address")
        if not 0 < self.proxy_port < 65536:
            raise ValueError(f"DNS interception: port {self.proxy_port} is out of range")


def allowed_clients(ruleset: Ruleset, local: list[tuple[str, str]], resolvers: tuple[str, ...],
                    protocol: str) -> tuple[tuple[str, str], ...]:
    """(interface, resolver) for each local workload (interface, IPv4 address) whose egress
    policy accepts a new `protocol` packet to that resolver's port 53."""
    interpreter = Interpreter(ruleset)
    out = []
    for iface, ip in local:
        for resolver in resolvers:
            packet = Packet(4, ip, resolver, protocol, DNS_PORT, iifname=iface, oifname=_OUTSIDE)
            if interpreter.run_base_chain(packet, "egress").verdict == "accept":
                out.append((iface, resolver))
    return tuple(sorted(out))


def with_interception(ruleset: Ruleset, local: list[tuple[str, str]], dns: DnsInterception) -> Ruleset:
    """`ruleset` plus the sets of allowed clients and the nat chain that sends their DNS to the proxy."""
    sets = list(ruleset.sets)
    rules = []
    for protocol, set_name in CLIENT_SETS.items():
        clients = allowed_clients(ruleset, local, dns.resolvers, protocol)
        sets.append(NamedSet(set_name, ("ifname", "ipv4_addr"), clients, False,
                             f"workloads whose {protocol} DNS to a trusted resolver the proxy answers"))
        rules.append(Rule((Cmp(META_L4PROTO, protocol), Cmp(TH_DPORT, DNS_PORT),
                           InSet((META_IIFNAME, IP_DADDR), set_name)),
                          Dnat(dns.proxy_address, dns.proxy_port), f"dns-proxy-{protocol}", True,
                          mark=MarkSet(DNS_MARK)))
    chain = Chain(INTERCEPT_CHAIN, tuple(rules), BaseHook("prerouting", PRIORITY_DSTNAT, "accept", "nat"),
                  "workloads' DNS to trusted resolvers, to this host's DNS proxy")
    return replace(ruleset, sets=tuple(sorted(sets, key=lambda s: s.name)), chains=(*ruleset.chains, chain))
