"""Chains of a host program: per policy, per local workload (its tiers and default), per
workload's spoof guard, record chains, and the base chains on the hooks. Pure.
"""

from __future__ import annotations


from dataclasses import dataclass, field, replace

from stockade.compile.addresses import family_of
from stockade.compile.dns import DNS_MARK
from stockade.compile.program import (
    NETWORK_POLICY_TIER,
    BRIDGED_INGRESS_V4,
    BRIDGED_INGRESS_V6,
    DIR_SUFFIX,
    ND_TYPES,
    PASS_BIT,
    PORT_EGRESS_DISPATCH,
    PORT_IN_MASK,
    PORT_INGRESS_DISPATCH,
    PORT_OUT_MASK,
    PRIORITY_EGRESS,
    PRIORITY_GUARD,
    PRIORITY_INGRESS,
    UNKNOWN_INTERFACE,
    WORKLOAD_PORT_NAMES,
    AnyPolicy,
    CompileOptions,
    Direction,
    policy_rules,
    rule_ref,
    selects,
    source_kind,
)
from stockade.compile.rules import RuleBuilder
from stockade.compile.selection import WorkloadKey
from stockade.model.naming import object_name
from stockade.model.state import DesiredState
from stockade.model.verdicts import FinalVerdict
from stockade.nft.ir import (
    ETHER_SADDR,
    ICMPV6_TYPE,
    IP6_DADDR,
    IP6_SADDR,
    IP_DADDR,
    IP_SADDR,
    META_IIFNAME,
    META_L4PROTO,
    META_MARK,
    META_NFPROTO,
    META_OIFNAME,
    TH_DPORT,
    Accept,
    BaseHook,
    Chain,
    Cmp,
    Continue,
    CtState,
    Dispatch,
    Drop,
    InAnon,
    InSet,
    Jump,
    MarkHas,
    MarkSet,
    Match,
    Return,
)
from stockade.nft.ir import Rule as NftRule


def default_rule_ref(namespace: str, verdict: FinalVerdict, direction: str) -> str:
    """The rule id of a namespace's default in one direction (`shop/default-deny/ingress`), as its
    kernel rule's comment, trace, flow records and the rules view name it."""
    return f"{namespace}/default-{verdict}/{direction}"


@dataclass
class ChainBuilder:
    state: DesiredState
    options: CompileOptions
    tiers: tuple[str, ...]
    rules: RuleBuilder
    chains: dict[str, Chain] = field(default_factory=dict)

    def record_chain(self, policy: AnyPolicy, direction: Direction, index: int, ref: str,
                     alternatives: list[tuple[Match, ...]]) -> str:
        """A log or audit rule whose peer x port alternatives overlap records a packet once.

        Its kernel rules have no verdict, so in the policy chain every alternative that
        matched would log and count the same packet again (e.g. two peers that both hold
        the source). They live in a chain of their own instead, where the first
        alternative that matches logs, counts and returns. (Alternatives of different
        address families cannot both match, so a plain selector peer needs no chain.)
        """
        ns = policy.metadata.namespace or ""
        name = object_name("rec", f"{source_kind(policy)}:{ns}/{policy.metadata.name}:{direction}:{index}",
                           policy.metadata.name) + "_" + DIR_SUFFIX[direction]
        rule = policy_rules(policy, direction)[index]
        body = tuple(replace(r, verdict=Return()) for m in alternatives
                     for r in self.rules.verdict_rules(policy, rule, ref, m))
        self.chains[name] = Chain(name, body, comment=f"records of {ref} ({direction})")
        return name
    def policy_chain(self, policy: AnyPolicy, direction: Direction) -> str:
        ns = policy.metadata.namespace or ""
        name = object_name("pol", f"{source_kind(policy)}:{ns}/{policy.metadata.name}", policy.metadata.name) \
            + "_" + DIR_SUFFIX[direction]
        if name in self.chains:
            return name
        rules: list[NftRule] = [NftRule((MarkHas(PASS_BIT),), Return(), "tier-passed")]
        for index, rule in enumerate(policy_rules(policy, direction)):
            ref = rule_ref(policy, direction, index, rule)
            alternatives = [(pf if pf is not None else qf, pm + qm)
                            for pf, pm in self.rules.peer_alternatives(policy, direction, rule)
                            for qf, qm in self.rules.port_alternatives(policy, direction, index, rule)
                            if pf is None or qf is None or pf == qf]
            records_only = policy.spec.mode == "audit" or rule.action == "log"
            overlap = any(sum(1 for f, _ in alternatives if f in (fam, None)) > 1 for fam in (4, 6))
            if records_only and alternatives and (overlap or self.options.log_group is not None):
                matches = [m for _, m in alternatives]
                rules.append(NftRule((), Jump(self.record_chain(policy, direction, index, ref, matches))))
                continue
            for _, matches in alternatives:
                rules.extend(self.rules.verdict_rules(policy, rule, ref, matches))
        owner = f"{ns}/{policy.metadata.name}" if ns else policy.metadata.name
        self.chains[name] = Chain(name, tuple(rules), comment=f"{source_kind(policy)} {owner} {direction}")
        return name

    def workload_chain(self, key: WorkloadKey, direction: Direction, policies: list[AnyPolicy]) -> str:
        name = object_name("wl", f"{key[0]}/{key[1]}", key[1]) + "_" + DIR_SUFFIX[direction]
        rules: list[NftRule] = []
        # Every policy with something to do in this direction runs; only some of them isolate.
        active = [p for p in policies if policy_rules(p, direction) or selects(p, direction)]
        # Kubernetes: a pod a NetworkPolicy selects is decided at the NetworkPolicy level; what no
        # NetworkPolicy allows is denied there, and the baseline tier after it is never asked.
        k8s_isolated = any(source_kind(p) == "NetworkPolicy" and p.spec.mode == "enforce" and selects(p, direction)
                           for p in active)
        for tier in self.tiers:
            in_tier = [p for p in active if p.spec.tier == tier]
            if not in_tier:
                continue
            rules.append(NftRule((), Continue(), f"tier {tier}", mark=MarkSet(PASS_BIT, clear=True)))
            for p in in_tier:
                rules.append(NftRule((), Jump(self.policy_chain(p, direction))))
            if tier == NETWORK_POLICY_TIER and k8s_isolated:
                ref = default_rule_ref(key[0], "deny", direction)
                rules.extend(self.rules.logged([NftRule((), Drop(), ref, True)], "deny", ref))
                self.chains[name] = Chain(name, tuple(rules), comment=f"Workload {key[0]}/{key[1]} {direction}")
                return name
        rules.append(NftRule((), Continue(), None, mark=MarkSet(PASS_BIT, clear=True)))
        ns = self.state.namespaces.get(key[0])
        default = ns.spec.defaultAction if ns is not None else "deny"
        # Only enforcing policies isolate a workload: an audit-mode policy must not change
        # the verdict, so it cannot close an allowUntilSelected namespace either.
        enforcing = [p for p in active if p.spec.mode == "enforce" and selects(p, direction)]
        if default == "allowUntilSelected" and not enforcing:
            ref = default_rule_ref(key[0], "allow", direction)
            rules.extend(self.rules.logged([NftRule((), Accept(), ref, True)], "allow", ref))
        else:
            ref = default_rule_ref(key[0], "deny", direction)
            rules.extend(self.rules.logged([NftRule((), Drop(), ref, True)], "deny", ref))
        self.chains[name] = Chain(name, tuple(rules), comment=f"Workload {key[0]}/{key[1]} {direction}")
        return name

    def spoof_chain(self, key: WorkloadKey) -> str:
        """The guard chain of one local workload: what it sends must carry its own MAC (when
        known) and addresses. Neighbour discovery (link-local or unspecified sources) goes on to
        the input chain, which takes nothing else from workloads."""
        name = object_name("sp", f"{key[0]}/{key[1]}", key[1])
        wl = self.state.workloads[key]
        rules: list[NftRule] = []
        if wl.spec.mac:
            rules.append(NftRule((Cmp(ETHER_SADDR, wl.spec.mac.lower(), negate=True),), Drop(), "antispoof", True))
        rules.append(NftRule((Cmp(META_L4PROTO, "ipv6-icmp"), InAnon(ICMPV6_TYPE, ND_TYPES)), Accept(),
                             "neighbour-discovery"))
        rules.extend(self.antispoof(key))
        self.chains[name] = Chain(name, tuple(rules), comment=f"Workload {key[0]}/{key[1]} sends as itself")
        return name

    def antispoof(self, key: WorkloadKey) -> list[NftRule]:
        """A workload may only send from its own addresses (one per family)."""
        ips = self.state.workload_ips(self.state.workloads[key])
        out: list[NftRule] = []
        for fam, saddr, nfproto in ((4, IP_SADDR, "ipv4"), (6, IP6_SADDR, "ipv6")):
            own = [ip for ip in ips if family_of(ip) == fam]
            if own:
                out.append(NftRule((Cmp(saddr, own[0], negate=True),), Drop(), "antispoof", True))
            else:
                out.append(NftRule((Cmp(META_NFPROTO, nfproto),), Drop(), "antispoof", True))
        return out



def base_chains(options: CompileOptions, bridged: bool = False) -> list[Chain]:
    """The chains on the hooks. `bridged`: the host has bridged workloads (compile.bridge), so the
    forward chains also dispatch on the port ids in the mark and let neighbour discovery through
    (bridged ND crosses the forward hook, and conntrack leaves it untracked: `ct invalid`)."""
    nd = (NftRule((Cmp(META_L4PROTO, "ipv6-icmp"), InAnon(ICMPV6_TYPE, ND_TYPES)), Accept(), "neighbour-discovery"),)
    stateful = (
        NftRule((CtState(("established", "related")),), Accept()),
        *(nd if bridged else ()),
        NftRule((CtState(("invalid",)),), Drop(), "invalid", True),
    )
    by_port_in = (NftRule((), Dispatch(META_MARK, PORT_EGRESS_DISPATCH, PORT_IN_MASK)),) if bridged else ()
    # Routed into the bridge by this host (no out-port id: the bridge's output path, not its
    # forward hook): the destination address names the bridged workload. ARP anti-spoofing keeps
    # the bridge delivering that address to its workload's port.
    by_port_out = (
        NftRule((), Dispatch(META_MARK, PORT_INGRESS_DISPATCH, PORT_OUT_MASK)),
        NftRule((MarkHas(PORT_OUT_MASK, any_bit=True, negate=True),), Dispatch(IP_DADDR, BRIDGED_INGRESS_V4)),
        NftRule((MarkHas(PORT_OUT_MASK, any_bit=True, negate=True),), Dispatch(IP6_DADDR, BRIDGED_INGRESS_V6)),
    ) if bridged else ()
    # A bridged workload reaches this host through the bridge (the input interface): known by the
    # in-port id in the mark. It may ask for DHCP (a hypervisor's network serves it on the bridge).
    from_ports = (
        NftRule((MarkHas(PORT_IN_MASK, any_bit=True, negate=True),), Accept()),
        NftRule((Cmp(META_L4PROTO, "udp"), Cmp(TH_DPORT, 67)), Accept(), "dhcp-request"),
        NftRule((), Jump("from_workloads")),
    ) if bridged else ()
    # Fail closed: a workload port with no program (not in the dispatch maps) is dropped in both
    # directions, established flows included, and counted; the host's own interfaces are untouched.
    # The naming scheme is data (`workload_port_names`, nft wildcards in an interval set): one
    # set lookup per packet however many prefixes a deployment names.
    unknown_from = (NftRule((InSet((META_IIFNAME,), WORKLOAD_PORT_NAMES),), Drop(), UNKNOWN_INTERFACE, True),)
    unknown_to = (NftRule((InSet((META_OIFNAME,), WORKLOAD_PORT_NAMES), InSet((META_OIFNAME,), "workload_ifaces", True)),
                          Drop(), UNKNOWN_INTERFACE, True),)
    return [
        # Before conntrack: spoof checks come first, so a forged packet can never ride another
        # workload's established flow (the `ct state established accept` below never sees it).
        Chain("guard", (NftRule((), Dispatch(META_IIFNAME, "guard_dispatch")),) + unknown_from,
              BaseHook("prerouting", PRIORITY_GUARD), "each workload sends as itself; unknown ports drop"),
        Chain("egress", stateful + (NftRule((), Dispatch(META_IIFNAME, "egress_dispatch")),) + by_port_in,
              BaseHook("forward", PRIORITY_EGRESS), "egress policy of the source workload"),
        Chain("ingress", unknown_to + stateful + (NftRule((), Dispatch(META_OIFNAME, "ingress_dispatch")),)
              + by_port_out,
              BaseHook("forward", PRIORITY_INGRESS), "ingress policy of the destination workload"),
        Chain("input", (NftRule((InSet((META_IIFNAME,), "workload_ifaces"),), Jump("from_workloads")),)
              + from_ports, BaseHook("input", 0), "traffic from workloads to this host"),
        Chain("from_workloads", (
            NftRule((CtState(("established", "related")),), Accept()),
            *nd,
            # DNS the interception (compile.dns) sent to this host's proxy, and nothing else.
            *((NftRule((MarkHas(DNS_MARK),), Accept(), "dns-to-proxy", True),) if options.dns else ()),
            NftRule((), Drop(), "workload-to-host", True),
        )),
    ]
