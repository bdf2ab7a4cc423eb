"""Compile the desired state into one host's Ruleset. Pure: same input, same bytes out.

Layout of the program (one `inet` table, owned by Stockade alone):

    chain guard    hook prerouting prio -300  iifname vmap @guard_dispatch (goto sp_<name>);
                                           iifname @workload_port_names drop: no program
    chain egress   hook forward prio -10   ct established,related accept; ct invalid drop;
                                           iifname vmap @egress_dispatch
    chain ingress  hook forward prio 0     oifname @workload_port_names oifname != @workload_ifaces drop;
                                           ct established,related accept; ct invalid drop;
                                           oifname vmap @ingress_dispatch
    chain input    hook input   prio 0     iifname @workload_ifaces jump from_workloads

    sp_<name>_<h>            one per local workload: its MAC (when known) and its
                             addresses, else drop; neighbour discovery goes on.
                             Before conntrack (-200), so a forged packet never
                             matches another workload's established flow.

    wl_<name>_<h>_eg / _in   one per local workload and direction:
                             per tier: clear the
                             pass mark, jump each policy chain of that tier in
                             order; then the namespace's default action
    pol_<name>_<h>_eg / _in  one per policy and direction, shared by every local
                             workload it applies to: `return` at once if an
                             earlier policy of the tier passed; then its rules
    rec_<name>_<h>_eg / _in  one per log or audit rule with peer x port alternatives
                             that one packet could match together: the first that
                             matches logs and returns, so a packet is recorded once

Fail closed: a port whose name is in the workload naming scheme
(`CompileOptions.workload_interface_prefixes`) but that has no program here (a VM
started before its object exists, or whose object was deleted while it runs) is
dropped in both directions, established flows included, and counted
(`unknown-interface`). The host's own interfaces are not touched.

Egress and ingress are separate base chains on the forward hook, so `accept`
in egress ends only the egress decision and the destination's ingress policy
still runs, also when both workloads share this host. Peers live in named sets
(interval sets of addresses), so a membership change is an element update.
Each policy rule becomes one or more kernel rules (peers × ports × family),
all carrying the rule's id in their comment and a counter.

Flow logging (`CompileOptions.log_group` set): every kernel rule that decides
(allow, deny, reject, a namespace default) or records (log, audit) logs to that
NFLOG group with the prefix `stk <verdict> <rule id> `. Only new connections
reach these chains, so that is one record per connection attempt. Logging is
rate-limited by one token bucket shared by the whole table (`flowlog_limit`):
each logging rule has an over-the-limit twin just before it, with the same
matches, comment, counter and verdict but no log, that also counts the packet
into the `flowlog_suppressed` counter. Exactly one of the two takes each packet,
so per-rule counters stay exact. Log and audit rules then always live in a
record chain (their twins need a verdict that ends the evaluation: `return`).
With `log_group=None`, log and audit rules use the kernel log and nothing else logs.

Workloads that cannot be programmed: the dispatch maps are keyed by interface, and the
kernel refuses the whole transaction ("File exists") when two keys are equal, which would
leave every workload of the host without its new policy. So a local workload whose
interface another local workload already has (the first by namespace/name keeps it), or
that names an interface the host owns (`CompileOptions.reserved_interfaces`), is left out
of the program and listed in `HostProgram.not_programmed`, for the agent to report.
Validation refuses both; this guards states that predate it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from stockade.compile.addresses import family_of, interval_elements
from stockade.compile.selection import Selection, WorkloadKey, selector_key
from stockade.model.k8s import SOURCE_KIND_ANNOTATION
from stockade.model.naming import object_name, workload_interface
from stockade.model.objects import GlobalPolicy, Peer, Policy, PortSpec, Rule
from stockade.model.state import DesiredState
from stockade.model.validation import DEFAULT_RESERVED_INTERFACES, WORKLOAD_INTERFACE_PREFIXES, group_ref
from stockade.nft.ir import (
    ETHER_SADDR,
    ICMP_CODE,
    ICMP_TYPE,
    ICMPV6_CODE,
    ICMPV6_TYPE,
    IP6_DADDR,
    IP6_SADDR,
    IP_DADDR,
    IP_SADDR,
    META_IIFNAME,
    META_L4PROTO,
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
    FieldRef,
    Goto,
    InAnon,
    InRange,
    InSet,
    Jump,
    Log,
    MarkHas,
    MarkSet,
    Match,
    NamedCounter,
    NamedSet,
    RateLimit,
    Reject,
    Return,
)
from stockade.nft.ir import Rule as NftRule
from stockade.nft.ir import Ruleset, Verdict, VerdictMap

Direction = Literal["ingress", "egress"]
AnyPolicy = Policy | GlobalPolicy

TABLE = "stockade"
# Packet-mark bit meaning "a policy of the current tier said pass". Cleared
# before every tier; documented in docs/architecture.md.
PASS_BIT = 0x10000000
PRIORITY_GUARD = -300  # prerouting, before conntrack (-200): a forged packet never reaches a ct lookup
PRIORITY_EGRESS = -10
PRIORITY_INGRESS = 0
UNKNOWN_INTERFACE = "unknown-interface"  # comment (and counter) of the fail-closed drops
WORKLOAD_PORT_NAMES = "workload_port_names"  # set of the workload naming scheme's wildcards
ND_TYPES = (133, 134, 135, 136, 137)  # router/neighbour solicitation/advert, redirect
L4_NAMES = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp", "ICMP": "icmp", "ICMPv6": "ipv6-icmp"}
DIR_SUFFIX = {"ingress": "in", "egress": "eg"}
LOG_LIMIT = "flowlog_limit"            # named limit, `rate over`: the twins that do not log
LOG_SUPPRESSED = "flowlog_suppressed"  # named counter: packets decided but not logged

Alternative = tuple[int | None, tuple[Match, ...]]  # (address family or None for both, matches)


@dataclass(frozen=True)
class CompileOptions:
    table: str = TABLE
    log_group: int | None = None  # NFLOG group for flow logging of every decision; None: see module doc
    log_rate: int = 200           # flow records per second the kernel may log, for the whole table
    log_burst: int = 400          # packets the bucket may hold above the rate
    tiers: tuple[str, ...] | None = None  # None: the state's tiers (built-in and Tier objects)
    # Interfaces of the host itself: a workload naming one is not programmed (see the module doc).
    reserved_interfaces: frozenset[str] = DEFAULT_RESERVED_INTERFACES
    # Names that are workload ports on this host: one of these without a program (a VM started
    # before its object exists, or whose object was deleted) is dropped, not left open.
    workload_interface_prefixes: tuple[str, ...] = WORKLOAD_INTERFACE_PREFIXES
    # Local workloads to leave out, as ("ns/name", why): those whose part of the program the
    # kernel refused (agent.reconciler isolates them), so that the rest is enforced. Their
    # ports are then dropped like any workload port without a program.
    left_out: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class NotProgrammed:
    """A local workload the host program leaves out, and why; the agent reports it."""

    workload: str  # "namespace/name"
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"object": self.workload, "reason": self.reason}


@dataclass(frozen=True)
class HostProgram:
    """What compiling for one host gives: the program, and the local workloads it could not hold."""

    ruleset: Ruleset
    not_programmed: tuple[NotProgrammed, ...] = ()


def rule_id(rule: Rule, direction: Direction, index: int) -> str:
    """The rule's stable id: given, or derived from its direction and position."""
    return rule.id or f"{direction}-{index}"


def rule_ref(policy: AnyPolicy, direction: Direction, index: int, rule: Rule) -> str:
    """The id every counter, log and trace names: `ns/policy/rule` (`policy/rule` if global)."""
    ns = policy.metadata.namespace
    owner = f"{ns}/{policy.metadata.name}" if ns else policy.metadata.name
    return f"{owner}/{rule_id(rule, direction, index)}"


def policy_rules(policy: AnyPolicy, direction: Direction) -> list[Rule]:
    return list(policy.spec.ingress if direction == "ingress" else policy.spec.egress)


def selects(policy: AnyPolicy, direction: Direction) -> bool:
    """Does the policy take its workloads' decisions in this direction? Its `types`, or
    else whether it has rules there (a NetworkPolicy always lists its policyTypes)."""
    if policy.spec.types is not None:
        return direction.capitalize() in policy.spec.types
    # Rules that only pass or log take no decision, so on their own they do not
    # close a direction of an allowUntilSelected namespace.
    return any(r.action in ("allow", "deny", "reject") for r in policy_rules(policy, direction))


def source_kind(policy: AnyPolicy) -> str:
    """Policy, GlobalPolicy, or NetworkPolicy for the translated Kubernetes object."""
    return policy.metadata.annotations.get(SOURCE_KIND_ANNOTATION, policy.kind)


def ordered_policies(state: DesiredState, tiers: tuple[str, ...]) -> list[AnyPolicy]:
    """Evaluation order: tier, then order, then name (namespace and kind break ties)."""
    rank = {t: i for i, t in enumerate(tiers)}
    return sorted(state.enforced_policies, key=lambda p: (
        rank.get(p.spec.tier, len(tiers)), p.spec.order, p.metadata.name,
        p.metadata.namespace or "", p.kind))


def _addr_fields(direction: Direction) -> dict[int, FieldRef]:
    """The peer's address: the source of ingress traffic, the destination of egress."""
    return {4: IP_SADDR, 6: IP6_SADDR} if direction == "ingress" else {4: IP_DADDR, 6: IP6_DADDR}


@dataclass
class _Builder:
    state: DesiredState
    host: str
    options: CompileOptions
    sel: Selection = field(init=False)
    sets: dict[str, NamedSet] = field(default_factory=dict)
    chains: dict[str, Chain] = field(default_factory=dict)
    applied_cache: dict[tuple[str, str, str], tuple[WorkloadKey, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sel = Selection(self.state)
        self.tiers = self.options.tiers or self.state.tier_order()

    # ------------------------------------------------------------ sets

    def _add_set(self, name: str, type_: tuple[str, ...], elements: tuple, interval: bool,
                 comment: str) -> str:
        if name not in self.sets:
            self.sets[name] = NamedSet(name, type_, tuple(sorted(elements, key=str)), interval, comment[:128])
        return name

    def _address_sets(self, prefix: str, identity: str, hint: str, ips: list[str], cidrs: list[str],
                      excepts: list[str], families: tuple[int, ...], comment: str) -> list[tuple[int, str]]:
        out = []
        for fam in families:
            name = object_name(prefix, identity, hint) + f"_{fam}"
            elements = interval_elements(ips, cidrs, excepts, fam)
            out.append((fam, self._add_set(name, ("ipv4_addr" if fam == 4 else "ipv6_addr",),
                                           elements, True, comment)))
        return out

    def group_sets(self, gkey: tuple[str, str]) -> list[tuple[int, str]]:
        group = self.state.groups.get(gkey)
        members = self.sel.group_workloads(gkey)
        cidrs = list(group.spec.cidrs) if group else []
        excepts = list(group.spec.except_) if group else []
        return self._address_sets("grp", f"group:{gkey[0]}/{gkey[1]}", gkey[1], self.sel.ips(members),
                                  cidrs, excepts, (4, 6), f"group {gkey[0]}/{gkey[1]}")

    def peer_sets(self, policy_ns: str | None, peer: Peer) -> list[tuple[int, str]]:
        if peer.group is not None:
            return self.group_sets(group_ref(policy_ns or "", peer.group))
        if peer.cidr is not None:
            fam = family_of(peer.cidr.split("/")[0])
            identity = f"cidr:{peer.cidr}-{','.join(peer.except_)}"
            return self._address_sets("net", identity, "", [], [peer.cidr], list(peer.except_), (fam,),
                                      f"cidr {peer.cidr}" + (f" except {','.join(peer.except_)}" if peer.except_ else ""))
        scope = self.sel.scope(policy_ns, peer.selector, peer.namespaceSelector)
        members = self.sel.members(scope)
        text = f"selector {selector_key(peer.selector)} ns {policy_ns or '*'} nsSelector {selector_key(peer.namespaceSelector)}"
        return self._address_sets("sel", "sel:" + scope.identity, "", self.sel.ips(members), [], [], (4, 6), text)

    # ------------------------------------------------------- applied-to

    def applied(self, policy: AnyPolicy) -> tuple[WorkloadKey, ...]:
        key = (source_kind(policy), policy.metadata.namespace or "", policy.metadata.name)
        if key not in self.applied_cache:
            self.applied_cache[key] = self.sel.applied(policy)
        return self.applied_cache[key]

    # ----------------------------------------------------------- rules

    def peer_alternatives(self, policy: AnyPolicy, direction: Direction, rule: Rule) -> list[Alternative]:
        peers = rule.from_ if direction == "ingress" else rule.to
        if not peers:
            return [(None, ())]
        fields = _addr_fields(direction)
        alts: list[Alternative] = []
        for peer in peers:
            for fam, set_name in self.peer_sets(policy.metadata.namespace, peer):
                alt = (fam, (InSet((fields[fam],), set_name),))
                if alt not in alts:
                    alts.append(alt)
        return alts

    def named_port_candidates(self, policy: AnyPolicy, direction: Direction, rule: Rule) -> tuple[WorkloadKey, ...]:
        """Whose `ports` resolve a name: the destination workload, as in Kubernetes."""
        if direction == "ingress":
            return tuple(k for k in self.applied(policy) if self.state.workloads[k].spec.host == self.host)
        if not rule.to:
            return self.sel.all_workloads()
        found: set[WorkloadKey] = set()
        for peer in rule.to:
            found.update(self.sel.peer_workloads(policy.metadata.namespace, peer))
        return tuple(sorted(found))

    def port_alternatives(self, policy: AnyPolicy, direction: Direction, index: int,
                          rule: Rule) -> list[Alternative]:
        if not rule.ports:
            return [(None, ())]
        alts: list[Alternative] = []
        for p_index, port in enumerate(rule.ports):
            alts.extend(self._port_alternative(policy, direction, index, rule, p_index, port))
        return alts

    def _port_alternative(self, policy: AnyPolicy, direction: Direction, index: int, rule: Rule,
                          p_index: int, port: PortSpec) -> list[Alternative]:
        l4 = L4_NAMES[port.protocol]
        if port.protocol in ("ICMP", "ICMPv6"):
            fam = 4 if port.protocol == "ICMP" else 6
            type_f, code_f = (ICMP_TYPE, ICMP_CODE) if fam == 4 else (ICMPV6_TYPE, ICMPV6_CODE)
            matches: list[Match] = [Cmp(META_L4PROTO, l4)]
            if port.type is not None:
                matches.append(Cmp(type_f, port.type))
            if port.code is not None:
                matches.append(Cmp(code_f, port.code))
            return [(fam, tuple(matches))]
        if isinstance(port.port, str):
            return self._named_port(policy, direction, index, rule, p_index, port)
        if port.port is None:
            return [(None, (Cmp(META_L4PROTO, l4),))]
        if port.endPort is not None and port.endPort != port.port:
            return [(None, (Cmp(META_L4PROTO, l4), InRange(TH_DPORT, port.port, port.endPort)))]
        return [(None, (Cmp(META_L4PROTO, l4), Cmp(TH_DPORT, port.port)))]

    def _named_port(self, policy: AnyPolicy, direction: Direction, index: int, rule: Rule,
                    p_index: int, port: PortSpec) -> list[Alternative]:
        l4 = L4_NAMES[port.protocol]
        elements: dict[int, list[tuple[str, str, int]]] = {4: [], 6: []}
        for key in self.named_port_candidates(policy, direction, rule):
            wl = self.state.workloads[key]
            for wp in wl.spec.ports:
                if wp.name == port.port and wp.protocol == port.protocol:
                    for ip in self.state.workload_ips(wl):
                        elements[family_of(ip)].append((ip, l4, wp.port))
        ref = rule_ref(policy, direction, index, rule)
        daddr = {4: IP_DADDR, 6: IP6_DADDR}
        alts: list[Alternative] = []
        # The direction is part of the identity: an ingress and an egress rule may share an
        # id (ids are unique per direction), yet resolve the name on different workloads. So is
        # the kind of a NetworkPolicy: it may share namespace, name and so rule refs with a
        # native Policy, whose set would otherwise be taken for its own (native names unchanged).
        identity = f"{ref}:{direction}#{p_index}:{self.host}"
        if source_kind(policy) == "NetworkPolicy":
            identity = f"NetworkPolicy:{identity}"
        for fam in (4, 6):
            name = object_name("np", identity, str(port.port)) + f"_{fam}"
            addr_type = "ipv4_addr" if fam == 4 else "ipv6_addr"
            self._add_set(name, (addr_type, "inet_proto", "inet_service"), tuple(elements[fam]), False,
                          f"named port {port.port}/{port.protocol} of {ref}")
            alts.append((fam, (InSet((daddr[fam], META_L4PROTO, TH_DPORT), name),)))
        return alts

    def verdict_rules(self, policy: AnyPolicy, rule: Rule, ref: str, matches: tuple[Match, ...]) -> list[NftRule]:
        action = rule.action
        if policy.spec.mode == "audit":
            return self._logged([NftRule(matches, Continue(), ref, True)], f"would-{action}", ref, records=True)
        if action == "allow":
            return self._logged([NftRule(matches, Accept(), ref, True)], "allow", ref)
        if action == "deny":
            return self._logged([NftRule(matches, Drop(), ref, True)], "deny", ref)
        if action == "log":
            return self._logged([NftRule(matches, Continue(), ref, True)], "log", ref, records=True)
        if action == "pass":
            return [NftRule(matches, Return(), ref, True, mark=MarkSet(PASS_BIT))]
        # reject: a TCP reset for TCP, an ICMP(v6) port unreachable for the rest.
        l4 = next((m.value for m in matches if isinstance(m, Cmp) and m.field == META_L4PROTO), None)
        if l4 == "tcp":
            rules = [NftRule(matches, Reject("tcp-reset"), ref, True)]
        elif l4 is not None:
            rules = [NftRule(matches, Reject("icmpx"), ref, True)]
        else:
            rules = [NftRule(matches + (Cmp(META_L4PROTO, "tcp"),), Reject("tcp-reset"), ref, True),
                     NftRule(matches, Reject("icmpx"), ref, True)]
        return self._logged(rules, "reject", ref)

    def _logged(self, rules: list[NftRule], verdict: str, ref: str, records: bool = False) -> list[NftRule]:
        """The rules with their logging: see the module docstring (twins under a shared limit)."""
        if self.options.log_group is None:
            return [replace(r, log=self._log(verdict, ref)) for r in rules] if records else rules
        out: list[NftRule] = []
        for r in rules:
            out.append(replace(r, limit=LOG_LIMIT, count_into=LOG_SUPPRESSED))
            out.append(replace(r, log=self._log(verdict, ref)))
        return out

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
                     for r in self.verdict_rules(policy, rule, ref, m))
        self.chains[name] = Chain(name, body, comment=f"records of {ref} ({direction})")
        return name

    def _log(self, verdict: str, ref: str) -> Log:
        return Log(f"stk {verdict} {ref} "[:127], self.options.log_group)

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
                            for pf, pm in self.peer_alternatives(policy, direction, rule)
                            for qf, qm in self.port_alternatives(policy, direction, index, rule)
                            if pf is None or qf is None or pf == qf]
            records_only = policy.spec.mode == "audit" or rule.action == "log"
            overlap = any(sum(1 for f, _ in alternatives if f in (fam, None)) > 1 for fam in (4, 6))
            if records_only and alternatives and (overlap or self.options.log_group is not None):
                matches = [m for _, m in alternatives]
                rules.append(NftRule((), Jump(self.record_chain(policy, direction, index, ref, matches))))
                continue
            for _, matches in alternatives:
                rules.extend(self.verdict_rules(policy, rule, ref, matches))
        owner = f"{ns}/{policy.metadata.name}" if ns else policy.metadata.name
        self.chains[name] = Chain(name, tuple(rules), comment=f"{source_kind(policy)} {owner} {direction}")
        return name

    # -------------------------------------------------------- workloads

    def workload_chain(self, key: WorkloadKey, direction: Direction, policies: list[AnyPolicy]) -> str:
        wl = self.state.workloads[key]
        name = object_name("wl", f"{key[0]}/{key[1]}", key[1]) + "_" + DIR_SUFFIX[direction]
        rules: list[NftRule] = []
        # Every policy with something to do in this direction runs; only some of them isolate.
        active = [p for p in policies if policy_rules(p, direction) or selects(p, direction)]
        for tier in self.tiers:
            in_tier = [p for p in active if p.spec.tier == tier]
            if not in_tier:
                continue
            rules.append(NftRule((), Continue(), f"tier {tier}", mark=MarkSet(PASS_BIT, clear=True)))
            for p in in_tier:
                rules.append(NftRule((), Jump(self.policy_chain(p, direction))))
        rules.append(NftRule((), Continue(), None, mark=MarkSet(PASS_BIT, clear=True)))
        ns = self.state.namespaces.get(key[0])
        default = ns.spec.defaultAction if ns is not None else "deny"
        # Only enforcing policies isolate a workload: an audit-mode policy must not change
        # the verdict, so it cannot close an allowUntilSelected namespace either.
        enforcing = [p for p in active if p.spec.mode == "enforce" and selects(p, direction)]
        if default == "allowUntilSelected" and not enforcing:
            ref = f"{key[0]}/default-allow/{direction}"
            rules.extend(self._logged([NftRule((), Accept(), ref, True)], "allow", ref))
        else:
            ref = f"{key[0]}/default-deny/{direction}"
            rules.extend(self._logged([NftRule((), Drop(), ref, True)], "deny", ref))
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


def _base_chains(options: CompileOptions) -> list[Chain]:
    stateful = (
        NftRule((CtState(("established", "related")),), Accept()),
        NftRule((CtState(("invalid",)),), Drop(), "invalid", True),
    )
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
        Chain("egress", stateful + (NftRule((), Dispatch(META_IIFNAME, "egress_dispatch")),),
              BaseHook("forward", PRIORITY_EGRESS), "egress policy of the source workload"),
        Chain("ingress", unknown_to + stateful + (NftRule((), Dispatch(META_OIFNAME, "ingress_dispatch")),),
              BaseHook("forward", PRIORITY_INGRESS), "ingress policy of the destination workload"),
        Chain("input", (NftRule((InSet((META_IIFNAME,), "workload_ifaces"),), Jump("from_workloads")),),
              BaseHook("input", 0), "traffic from workloads to this host"),
        Chain("from_workloads", (
            NftRule((CtState(("established", "related")),), Accept()),
            NftRule((Cmp(META_L4PROTO, "ipv6-icmp"), InAnon(ICMPV6_TYPE, ND_TYPES)), Accept(), "neighbour-discovery"),
            NftRule((), Drop(), "workload-to-host", True),
        )),
    ]


def programmable_workloads(state: DesiredState, host: str, reserved: frozenset[str] = DEFAULT_RESERVED_INTERFACES,
                           left_out: tuple[tuple[str, str], ...] = ()
                           ) -> tuple[list[tuple[WorkloadKey, str]], tuple[NotProgrammed, ...]]:
    """The local workloads with their interfaces, sorted, each interface once and none of the
    host's own; and the local workloads left out (also those in `left_out`). Deterministic: of
    two workloads on one interface the first by namespace/name keeps it, whatever order the
    state came in."""
    kept: list[tuple[WorkloadKey, str]] = []
    owner: dict[str, WorkloadKey] = {}
    skipped: list[NotProgrammed] = []
    refused = dict(left_out)
    for key in sorted(k for k, wl in state.workloads.items() if wl.spec.host == host):
        iface = workload_interface(state.workloads[key])
        name = f"{key[0]}/{key[1]}"
        if name in refused:
            skipped.append(NotProgrammed(name, refused[name]))
        elif iface in reserved:
            skipped.append(NotProgrammed(name, f"interface {iface} belongs to host {host}, not to a workload"))
        elif iface in owner:
            first = owner[iface]
            skipped.append(NotProgrammed(name, f"interface {iface} is also Workload {first[0]}/{first[1]}'s "
                                         f"on host {host}, which keeps it"))
        else:
            owner[iface] = key
            kept.append((key, iface))
    return kept, tuple(skipped)


def compile_host(state: DesiredState, host: str, options: CompileOptions = CompileOptions()) -> Ruleset:
    """The program that `host` must run for `state` (see `compile_host_program`)."""
    return compile_host_program(state, host, options).ruleset


def compile_host_program(state: DesiredState, host: str, options: CompileOptions = CompileOptions()) -> HostProgram:
    """The program that `host` must run for `state`, and the local workloads it leaves out."""
    b = _Builder(state, host, options)
    policies = ordered_policies(state, b.tiers)
    local, not_programmed = programmable_workloads(state, host, options.reserved_interfaces, options.left_out)
    egress_map: list[tuple[str, Verdict]] = []
    ingress_map: list[tuple[str, Verdict]] = []
    guard_map: list[tuple[str, Verdict]] = []
    ifaces: list[str] = []
    # Each local workload asks each policy that could select it "do you apply to me?"; a
    # namespaced policy selects in its own namespace alone, even when its appliesTo names
    # another's group (refused by validation; see compile.selection), and a GlobalPolicy naming
    # a group in that group's. Listing every policy's members and scanning them per local
    # workload made this quadratic in the size of the whole policy (see docs/performance.md).
    by_ns: dict[str, list[AnyPolicy]] = {}
    for p in policies:
        target = p.spec.appliesTo.group
        home = p.metadata.namespace or (group_ref("", target)[0] if target else "")
        by_ns.setdefault(home, []).append(p)
    rank = {id(p): i for i, p in enumerate(policies)}
    for key, iface in local:
        candidates = sorted(by_ns.get(key[0], []) + by_ns.get("", []), key=lambda p: rank[id(p)])
        applicable = [p for p in candidates if b.sel.applies_to(p, key)]
        ifaces.append(iface)
        guard_map.append((iface, Goto(b.spoof_chain(key))))  # goto: its end accepts, no unknown-port drop
        egress_map.append((iface, Jump(b.workload_chain(key, "egress", applicable))))
        ingress_map.append((iface, Jump(b.workload_chain(key, "ingress", applicable))))
    chains = _base_chains(options) + sorted(b.chains.values(), key=lambda c: c.name)
    sets = sorted(b.sets.values(), key=lambda s: s.name)
    sets.append(NamedSet("workload_ifaces", ("ifname",), tuple(sorted(ifaces)), False, "local workload interfaces"))
    sets.append(NamedSet(WORKLOAD_PORT_NAMES, ("ifname",),
                         tuple(sorted(f"{p}*" for p in options.workload_interface_prefixes)), True,
                         "names of workload ports: one without a program is dropped"))
    maps = (
        VerdictMap("egress_dispatch", "ifname", tuple(sorted(egress_map, key=lambda e: e[0]))),
        VerdictMap("guard_dispatch", "ifname", tuple(sorted(guard_map, key=lambda e: e[0]))),
        VerdictMap("ingress_dispatch", "ifname", tuple(sorted(ingress_map, key=lambda e: e[0]))),
    )
    limits: tuple[RateLimit, ...] = ()
    counters: tuple[NamedCounter, ...] = ()
    if options.log_group is not None:
        limits = (RateLimit(LOG_LIMIT, options.log_rate, "second", options.log_burst, over=True),)
        counters = (NamedCounter(LOG_SUPPRESSED),)
    ruleset = Ruleset(options.table, "inet", tuple(sorted(sets, key=lambda s: s.name)), maps, tuple(chains),
                      state.revision, limits=limits, counters=counters)
    return HostProgram(ruleset, not_programmed)
