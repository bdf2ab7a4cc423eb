"""Kernel rules of one policy rule: its peer and port alternatives, and its verdict with logging. Pure.

A policy rule becomes one kernel rule per (peer set, port) alternative that one address
family allows, each carrying the rule's id as its comment, a counter, and (with flow
logging) its logging twin under the table's shared rate limit (see compile.host).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from stockade.compile.addresses import family_of
from stockade.compile.program import (
    L4_NAMES,
    LOG_LIMIT,
    LOG_SUPPRESSED,
    PASS_BIT,
    Alternative,
    AnyPolicy,
    CompileOptions,
    Direction,
    rule_ref,
    source_kind,
)
from stockade.compile.selection import Selection, WorkloadKey
from stockade.compile.sets import SetBuilder
from stockade.model.naming import object_name
from stockade.model.objects import PortSpec, Rule
from stockade.model.state import DesiredState
from stockade.model.verdicts import would

from stockade.nft.ir import (
    ICMP_CODE,
    ICMP_TYPE,
    ICMPV6_CODE,
    ICMPV6_TYPE,
    IP6_DADDR,
    IP6_SADDR,
    IP_DADDR,
    IP_SADDR,
    META_L4PROTO,
    TH_DPORT,
    Accept,
    Cmp,
    Continue,
    Drop,
    FieldRef,
    InRange,
    InSet,
    Log,
    MarkSet,
    Match,
    Reject,
    Return,
)
from stockade.nft.ir import Rule as NftRule


def _addr_fields(direction: Direction) -> dict[int, FieldRef]:
    """The peer's address: the source of ingress traffic, the destination of egress."""
    return {4: IP_SADDR, 6: IP6_SADDR} if direction == "ingress" else {4: IP_DADDR, 6: IP6_DADDR}



@dataclass
class RuleBuilder:
    state: DesiredState
    host: str
    options: CompileOptions
    sel: Selection
    sets: SetBuilder
    applied_cache: dict[tuple[str, str, str], tuple[WorkloadKey, ...]] = field(default_factory=dict)

    def applied(self, policy: AnyPolicy) -> tuple[WorkloadKey, ...]:
        key = (source_kind(policy), policy.metadata.namespace or "", policy.metadata.name)
        if key not in self.applied_cache:
            self.applied_cache[key] = self.sel.applied(policy)
        return self.applied_cache[key]

    def peer_alternatives(self, policy: AnyPolicy, direction: Direction, rule: Rule) -> list[Alternative]:
        peers = rule.from_ if direction == "ingress" else rule.to
        if not peers:
            return [(None, ())]
        fields = _addr_fields(direction)
        alts: list[Alternative] = []
        for peer in peers:
            for fam, set_name in self.sets.peer_sets(policy.metadata.namespace, peer):
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
        if source_kind(policy) != policy.kind:  # NetworkPolicy, ClusterNetworkPolicy
            identity = f"{source_kind(policy)}:{identity}"
        for fam in (4, 6):
            name = object_name("np", identity, str(port.port)) + f"_{fam}"
            addr_type = "ipv4_addr" if fam == 4 else "ipv6_addr"
            self.sets.add_set(name, (addr_type, "inet_proto", "inet_service"), tuple(elements[fam]), False,
                          f"named port {port.port}/{port.protocol} of {ref}")
            alts.append((fam, (InSet((daddr[fam], META_L4PROTO, TH_DPORT), name),)))
        return alts

    def verdict_rules(self, policy: AnyPolicy, rule: Rule, ref: str, matches: tuple[Match, ...]) -> list[NftRule]:
        action = rule.action
        if policy.spec.mode == "audit":
            return self.logged([NftRule(matches, Continue(), ref, True)], would(action), ref, records=True)
        if action == "allow":
            return self.logged([NftRule(matches, Accept(), ref, True)], "allow", ref)
        if action == "deny":
            return self.logged([NftRule(matches, Drop(), ref, True)], "deny", ref)
        if action == "log":
            return self.logged([NftRule(matches, Continue(), ref, True)], "log", ref, records=True)
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
        return self.logged(rules, "reject", ref)

    def logged(self, rules: list[NftRule], verdict: str, ref: str, records: bool = False) -> list[NftRule]:
        """The rules with their logging: see the module docstring (twins under a shared limit)."""
        if self.options.log_group is None:
            return [replace(r, log=self._log(verdict, ref)) for r in rules] if records else rules
        out: list[NftRule] = []
        for r in rules:
            out.append(replace(r, limit=LOG_LIMIT, count_into=LOG_SUPPRESSED))
            out.append(replace(r, log=self._log(verdict, ref)))
        return out
    def _log(self, verdict: str, ref: str) -> Log:
        return Log(f"stk {verdict} {ref} "[:127], self.options.log_group)
