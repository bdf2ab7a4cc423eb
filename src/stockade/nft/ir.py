"""The Ruleset IR: a backend-neutral, frozen description of one host's nftables program.

Pure data, no I/O. The compiler produces it, `nft.render` turns it into
libnftables JSON, and `nft.interpret` evaluates it for `trace` — so what the
kernel runs and what trace explains come from the same object.

Invariants: every collection is sorted or in evaluation order (rules), so two
equal desired states give byte-identical programs; every policy rule carries
the rule id that counters, logs and traces name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

# ------------------------------------------------------------------ fields

# A packet field the IR can match: (source, key), e.g. ("meta", "iifname"),
# ("ip", "saddr"), ("th", "dport"), ("icmp", "type").
FieldRef = tuple[str, str]

META_IIFNAME: FieldRef = ("meta", "iifname")
META_OIFNAME: FieldRef = ("meta", "oifname")
META_L4PROTO: FieldRef = ("meta", "l4proto")
META_NFPROTO: FieldRef = ("meta", "nfproto")
META_MARK: FieldRef = ("meta", "mark")
ETHER_SADDR: FieldRef = ("ether", "saddr")
ARP_SADDR_ETHER: FieldRef = ("arp", "saddr ether")  # ARP sender hardware address (bridge family)
ARP_SADDR_IP: FieldRef = ("arp", "saddr ip")        # ARP sender protocol address
IP_SADDR: FieldRef = ("ip", "saddr")
IP_DADDR: FieldRef = ("ip", "daddr")
IP6_SADDR: FieldRef = ("ip6", "saddr")
IP6_DADDR: FieldRef = ("ip6", "daddr")
TH_DPORT: FieldRef = ("th", "dport")
ICMP_TYPE: FieldRef = ("icmp", "type")
ICMP_CODE: FieldRef = ("icmp", "code")
ICMPV6_TYPE: FieldRef = ("icmpv6", "type")
ICMPV6_CODE: FieldRef = ("icmpv6", "code")

Value = Union[int, str]


# ----------------------------------------------------------------- matches

@dataclass(frozen=True)
class Cmp:
    """`field == value` (or `!=`)."""

    field: FieldRef
    value: Value
    negate: bool = False


@dataclass(frozen=True)
class InRange:
    """`field lo-hi` (inclusive)."""

    field: FieldRef
    low: int
    high: int


@dataclass(frozen=True)
class InSet:
    """`field . field ... @set` (or `!=`): membership of one field, or of a concatenation."""

    fields: tuple[FieldRef, ...]
    set_name: str
    negate: bool = False


@dataclass(frozen=True)
class InAnon:
    """`field { v1, v2 }` (or `!=`): membership in a small literal set (ct states, ICMPv6 types)."""

    field: FieldRef
    values: tuple[Value, ...]
    negate: bool = False


@dataclass(frozen=True)
class CtState:
    states: tuple[str, ...]


@dataclass(frozen=True)
class MarkHas:
    """`meta mark & bit == bit` (or `== 0` when negated); with `any_bit`, `!= 0` (`== 0` when
    negated): some bit of the mask `bit` is set."""

    bit: int
    negate: bool = False
    any_bit: bool = False


Match = Union[Cmp, InRange, InSet, InAnon, CtState, MarkHas]


# ---------------------------------------------------------------- verdicts

@dataclass(frozen=True)
class Accept:
    pass


@dataclass(frozen=True)
class Drop:
    pass


@dataclass(frozen=True)
class Reject:
    """`tcp-reset` for TCP, else an ICMP/ICMPv6 port unreachable (`icmpx`)."""

    kind: Literal["tcp-reset", "icmpx"] = "icmpx"


@dataclass(frozen=True)
class Return:
    pass


@dataclass(frozen=True)
class Jump:
    target: str


@dataclass(frozen=True)
class Goto:
    target: str


@dataclass(frozen=True)
class Dispatch:
    """`field vmap @map` (`field & mask vmap @map` with a mask): jump by lookup; no verdict
    when the key is absent."""

    field: FieldRef
    map_name: str
    mask: int | None = None


@dataclass(frozen=True)
class Continue:
    """No verdict: the rule only counts/logs and evaluation goes on."""


@dataclass(frozen=True)
class Dnat:
    """`dnat ip to ADDRESS:PORT` (in a nat chain): the connection goes to a local server instead
    (the DNS interception of compile.dns). Ends evaluation like accept."""

    address: str
    port: int


Verdict = Union[Accept, Drop, Reject, Return, Jump, Goto, Dispatch, Continue, Dnat]


@dataclass(frozen=True)
class Log:
    prefix: str
    group: int | None = None


@dataclass(frozen=True)
class RateLimit:
    """A named, shared token bucket (`limit NAME { rate [over] R/per burst B packets }`).

    With `over`, a rule that names it matches only while the bucket is empty, i.e.
    above the rate; below it the rule consumes a token and does not match.
    """

    name: str
    rate: int
    per: Literal["second", "minute"] = "second"
    burst: int = 0
    over: bool = False


@dataclass(frozen=True)
class NamedCounter:
    """A named counter object that rules add to (`counter name NAME`)."""

    name: str


# ------------------------------------------------------------------ objects

@dataclass(frozen=True)
class MarkSet:
    """`meta mark set mark | bits` (set) or `meta mark set mark & ~bits` (clear)."""

    bits: int
    clear: bool = False


@dataclass(frozen=True)
class Rule:
    matches: tuple[Match, ...]
    verdict: Verdict
    comment: str | None = None
    counter: bool = False
    log: Log | None = None
    mark: MarkSet | None = None
    limit: str | None = None          # the rule matches only if this named RateLimit does
    count_into: str | None = None     # also add the packet to this NamedCounter


@dataclass(frozen=True)
class BaseHook:
    hook: Literal["forward", "input", "output", "prerouting", "postrouting"]
    priority: int
    policy: Literal["accept", "drop"] = "accept"
    type: Literal["filter", "nat"] = "filter"


@dataclass(frozen=True)
class Chain:
    name: str
    rules: tuple[Rule, ...] = ()
    base: BaseHook | None = None
    comment: str | None = None


SetElement = Union[str, tuple[Value, ...]]


FQDN_SET_PREFIX = "fqdn_"  # the names of learned-address sets start so (compile.sets.fqdn_sets)


@dataclass(frozen=True)
class NamedSet:
    """A named set; `type` has one entry, or several for a concatenation.

    `fqdn`: the set holds the addresses learned at run time for this domain name or `*.` pattern
    (issue 18). The program declares it empty with element timeouts; the agent adds what the
    trusted resolvers answer, each element for its record's TTL, and carries what it learned into
    every full replacement. Its elements are never part of the program, its hash or its drift.
    """

    name: str
    type: tuple[str, ...]
    elements: tuple[SetElement, ...] = ()
    interval: bool = False
    comment: str | None = None
    fqdn: str | None = None


@dataclass(frozen=True)
class VerdictMap:
    name: str
    key_type: str  # "ifname", or "mark" (integer keys)
    elements: tuple[tuple[Value, Verdict], ...] = ()
    comment: str | None = None


def ports_table(table: str) -> str:
    """The name of the bridge-family table that goes with the `inet` table `table` (see
    `Ruleset.ports`): one name per inet table, so the agent knows which one is its own."""
    return f"{table}_ports"


@dataclass(frozen=True)
class Ruleset:
    table: str
    family: Literal["inet", "bridge"] = "inet"
    sets: tuple[NamedSet, ...] = ()
    maps: tuple[VerdictMap, ...] = ()
    chains: tuple[Chain, ...] = ()
    # What the program was compiled from; not rendered into the kernel.
    revision: int = 0
    meta: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    limits: tuple[RateLimit, ...] = ()
    counters: tuple[NamedCounter, ...] = ()
    # The bridge-family table that goes with this one (named `ports_table(table)`), present only
    # when the host has bridged workloads: it marks bridge ports' frames for the inet chains and
    # checks what they send at layer 2. Applied, listed and fingerprinted with this table.
    ports: "Ruleset | None" = None

    def chain(self, name: str) -> Chain:
        for c in self.chains:
            if c.name == name:
                return c
        raise KeyError(name)

    def set(self, name: str) -> NamedSet:
        for s in self.sets:
            if s.name == name:
                return s
        raise KeyError(name)

    def vmap(self, name: str) -> VerdictMap:
        for m in self.maps:
            if m.name == name:
                return m
        raise KeyError(name)

    def limit(self, name: str) -> RateLimit:
        for lim in self.limits:
            if lim.name == name:
                return lim
        raise KeyError(name)

    def structure(self) -> "Ruleset":
        """The ruleset with set elements removed: equal structures differ only in membership."""
        return Ruleset(self.table, self.family,
                       tuple(NamedSet(s.name, s.type, (), s.interval, s.comment) for s in self.sets),
                       self.maps, self.chains, 0, limits=self.limits, counters=self.counters,
                       ports=self.ports.structure() if self.ports is not None else None)
