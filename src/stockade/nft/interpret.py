"""Evaluate a Ruleset for one packet, the way the kernel's nftables does. Pure.

This is how `trace` explains a verdict: it runs the very Ruleset that was
rendered for the kernel, so the explanation and the enforcement cannot drift
apart. Semantics follow nftables: base chains of a hook run by priority;
`accept` ends only the current base chain, `drop`/`reject` end the packet;
`jump` pushes, `goto` replaces, `return` pops; a rule with a payload match of
another family (e.g. `ip saddr` on an IPv6 packet) does not match, negated or not.
Logging and rate limits never change a verdict: the packet is evaluated as if
every rate limit had tokens left (a `rate over` rule never matches, a plain
`rate` rule always does), so a logged rule's over-the-limit twin is skipped.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import Collection, Literal, Mapping

from stockade.model import fqdn

from stockade.nft.ir import (
    Accept,
    Chain,
    Cmp,
    Continue,
    Dnat,
    CtState,
    Dispatch,
    Drop,
    FieldRef,
    Goto,
    InAnon,
    InRange,
    InSet,
    Jump,
    MarkHas,
    Match,
    NamedSet,
    Reject,
    Return,
    Rule,
    Ruleset,
    Value,
    Verdict,
)

L4_NUMBERS = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "ipv6-icmp": 58}
PORTED = ("tcp", "udp", "sctp")


@dataclass(frozen=True)
class Packet:
    family: Literal[4, 6]
    saddr: str
    daddr: str
    l4proto: str                     # tcp, udp, sctp, icmp, ipv6-icmp
    dport: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    iifname: str = ""
    oifname: str = ""
    ct_state: str = "new"
    mark: int = 0
    # The domain names the destination address stands for (`trace --to-fqdn`): an fqdn set
    # (issue 18) holds the address when one of them falls under the set's pattern.
    dst_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Step:
    """One rule that matched on the way: its chain, its comment (rule id) and what it did."""

    chain: str
    comment: str | None
    action: str


@dataclass
class Outcome:
    verdict: Literal["accept", "drop", "reject"]
    steps: list[Step] = field(default_factory=list)


class _Missing(Exception):
    """The packet lacks the field (wrong family or protocol): the match fails either way."""


def _field_value(p: Packet, f: FieldRef) -> Value:
    source, key = f
    if source == "meta":
        if key == "iifname":
            return p.iifname
        if key == "oifname":
            return p.oifname
        if key == "l4proto":
            return p.l4proto
        if key == "nfproto":
            return "ipv4" if p.family == 4 else "ipv6"
        if key == "mark":
            return p.mark
    if source == "ip" and p.family == 4 or source == "ip6" and p.family == 6:
        return p.saddr if key == "saddr" else p.daddr
    if source == "th" and p.l4proto in PORTED and p.dport is not None and key == "dport":
        return p.dport
    if source == "icmp" and p.l4proto == "icmp" or source == "icmpv6" and p.l4proto == "ipv6-icmp":
        value = p.icmp_type if key == "type" else p.icmp_code
        if value is not None:
            return value
    raise _Missing(f)


def _same(a: Value, b: Value) -> bool:
    """Equality as the kernel sees it: addresses by value, protocols by name or number."""
    if a == b:
        return True
    if isinstance(a, str) and isinstance(b, int):
        return L4_NUMBERS.get(a) == b
    if isinstance(a, int) and isinstance(b, str):
        return L4_NUMBERS.get(b) == a
    if isinstance(a, str) and isinstance(b, str):
        try:
            return ipaddress.ip_address(a) == ipaddress.ip_address(b)
        except ValueError:
            return False
    return False


def _element_has(element: object, value: tuple[Value, ...], interval: bool) -> bool:
    if isinstance(element, tuple):
        return len(element) == len(value) and all(_same(e, v) for e, v in zip(element, value))
    if interval and len(value) == 1 and isinstance(element, str) and element.endswith("*"):
        return isinstance(value[0], str) and value[0].startswith(element[:-1])  # an ifname wildcard
    if interval and len(value) == 1:
        try:
            return ipaddress.ip_address(value[0]) in ipaddress.ip_network(str(element))  # type: ignore[arg-type]
        except ValueError:
            return False
    return len(value) == 1 and _same(element, value[0])  # type: ignore[arg-type]


def _set_has(s: NamedSet, value: tuple[Value, ...]) -> bool:
    """The definition: one element after another (`_SetIndex` answers the same, faster)."""
    return any(_element_has(e, value, s.interval) for e in s.elements)


def _identity(v: object) -> object:
    """What `_same` compares a value by: a protocol by its number, an address by its value."""
    if isinstance(v, str):
        number = L4_NUMBERS.get(v)
        if number is not None:
            return number
        try:
            return ipaddress.ip_address(v)
        except ValueError:
            return v
    return v


class _SetIndex:
    """A named set's elements parsed once, for lookups that do not scan it: exact values (and
    concatenations) by identity in a hash set; an interval set's networks and interface
    wildcards in lists. Answers exactly as `_set_has` does (tests/nft/test_interpret_index.py).
    Trace and reach evaluate thousands of packets against the same sets; parsing every element
    of a set for every packet was most of their time."""

    def __init__(self, s: NamedSet) -> None:
        self.exact: set[tuple[object, ...]] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.wildcards: list[str] = []
        for e in s.elements:
            if isinstance(e, tuple):
                self.exact.add(tuple(_identity(x) for x in e))
            elif not s.interval:
                self.exact.add((_identity(e),))
            elif isinstance(e, str) and e.endswith("*"):
                self.wildcards.append(e[:-1])
            else:
                try:
                    self.networks.append(ipaddress.ip_network(str(e)))
                except ValueError:
                    pass  # never matches a single value, as in `_element_has`

    def has(self, value: tuple[Value, ...]) -> bool:
        if self.exact and tuple(_identity(v) for v in value) in self.exact:
            return True
        if len(value) != 1:
            return False
        v = value[0]
        if self.wildcards and isinstance(v, str) and any(v.startswith(w) for w in self.wildcards):
            return True
        if not self.networks:
            return False
        try:
            address = ipaddress.ip_address(v)  # type: ignore[arg-type]
        except ValueError:
            return False
        return any(address in n for n in self.networks)


def _fqdn_set_has(s: NamedSet, p: Packet, value: tuple[Value, ...], learned: Mapping[str, Collection[str]]) -> bool:
    """A learned-address set: the address was learned for it, or it is the destination's and one
    of the names the packet says the destination has falls under the set's pattern."""
    if len(value) == 1 and any(_same(ip, value[0]) for ip in learned.get(s.name, ())):
        return True
    return value == (p.daddr,) and s.fqdn is not None and any(fqdn.matches(s.fqdn, n) for n in p.dst_names)


class Interpreter:
    def __init__(self, ruleset: Ruleset, learned: Mapping[str, Collection[str]] | None = None) -> None:
        """`learned`: per fqdn set, the addresses the host has learned for it (none offline)."""
        self.learned = learned or {}
        self.rs = ruleset
        self.chains = {c.name: c for c in ruleset.chains}
        self.sets = {s.name: s for s in ruleset.sets}
        self.maps = {m.name: {str(k): v for k, v in m.elements} for m in ruleset.maps}
        self._indexes: dict[str, _SetIndex] = {}  # built on a set's first lookup

    def matches(self, p: Packet, m: Match) -> bool:
        try:
            if isinstance(m, Cmp):
                return _same(_field_value(p, m.field), m.value) != m.negate
            if isinstance(m, InRange):
                v = _field_value(p, m.field)
                return isinstance(v, int) and m.low <= v <= m.high
            if isinstance(m, InSet):
                value = tuple(_field_value(p, f) for f in m.fields)
                named = self.sets[m.set_name]
                if named.fqdn is not None:
                    return _fqdn_set_has(named, p, value, self.learned) != m.negate
                index = self._indexes.get(named.name)
                if index is None:
                    index = self._indexes[named.name] = _SetIndex(named)
                return index.has(value) != m.negate
            if isinstance(m, InAnon):
                v = _field_value(p, m.field)
                return any(_same(v, x) for x in m.values) != m.negate
            if isinstance(m, CtState):
                return p.ct_state in m.states
            if isinstance(m, MarkHas):
                if m.any_bit:
                    return bool(p.mark & m.bit) != m.negate
                return (p.mark & m.bit == m.bit) != m.negate
        except _Missing:
            return False
        raise TypeError(f"unknown match {m!r}")

    def run_hook(self, p: Packet, hook: str) -> Outcome:
        """All base chains of `hook` by priority: accept passes to the next, drop/reject end."""
        outcome = Outcome("accept")
        bases = sorted((c for c in self.rs.chains if c.base and c.base.hook == hook),
                       key=lambda c: (c.base.priority if c.base else 0, c.name))
        for base in bases:
            verdict, p = self._run_base(p, base, outcome.steps)
            if verdict in ("drop", "reject"):
                outcome.verdict = verdict
                return outcome
        return outcome

    def run_base_chain(self, p: Packet, name: str) -> Outcome:
        """One base chain alone (e.g. only `egress`): its verdict and the rules that matched."""
        steps: list[Step] = []
        verdict, _ = self._run_base(p, self.chains[name], steps)
        return Outcome(verdict, steps)  # type: ignore[arg-type]

    def _run_base(self, p: Packet, base: Chain, steps: list[Step]) -> tuple[str, Packet]:
        stack: list[tuple[Chain, int]] = []
        chain, index = base, 0
        while True:
            if index >= len(chain.rules):
                if not stack:
                    return (base.base.policy if base.base else "accept"), p
                chain, index = stack.pop()
                continue
            rule: Rule = chain.rules[index]
            index += 1
            if not all(self.matches(p, m) for m in rule.matches):
                continue
            if rule.limit is not None and self.rs.limit(rule.limit).over:
                continue
            if rule.mark is not None:
                p = replace(p, mark=(p.mark & ~rule.mark.bits) if rule.mark.clear else (p.mark | rule.mark.bits))
            verdict: Verdict | None = rule.verdict
            if isinstance(verdict, Dispatch):
                key = _field_value(p, verdict.field)
                if verdict.mask is not None and isinstance(key, int):
                    key &= verdict.mask
                verdict = self.maps[verdict.map_name].get(str(key))
                if verdict is None:
                    continue
            action = _action_name(verdict, rule)
            if rule.comment and rule.counter:
                steps.append(Step(chain.name, rule.comment, action))
            if isinstance(verdict, (Accept, Dnat)):
                return "accept", p
            if isinstance(verdict, Drop):
                return "drop", p
            if isinstance(verdict, Reject):
                return "reject", p
            if isinstance(verdict, Jump):
                stack.append((chain, index))
                chain, index = self.chains[verdict.target], 0
            elif isinstance(verdict, Goto):
                chain, index = self.chains[verdict.target], 0
            elif isinstance(verdict, Return):
                if not stack:
                    return (base.base.policy if base.base else "accept"), p
                chain, index = stack.pop()


def _action_name(verdict: Verdict | None, rule: Rule) -> str:
    if isinstance(verdict, Return) and rule.mark is not None and not rule.mark.clear:
        return "pass"
    if rule.log is not None and isinstance(verdict, (Continue, Return)):  # log, then go on (or back)
        return rule.log.prefix.split()[1] if len(rule.log.prefix.split()) > 1 else "log"
    return {Accept: "accept", Drop: "drop", Reject: "reject", Return: "return", Continue: "continue",
            Jump: "jump", Goto: "goto"}.get(type(verdict), "continue")  # type: ignore[arg-type]
