"""The vocabulary of a host program: its options, names and constants, and what a policy rule
is called in it. Pure; shared by the compile stages (host_view, sets, rules, chains, host)
and by those who read programs (trace, agent, flows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stockade.model.k8s import SOURCE_KIND_ANNOTATION
from stockade.model.objects import GlobalPolicy, Policy, Rule
from stockade.model.state import DesiredState
from stockade.model.validation import DEFAULT_RESERVED_INTERFACES, WORKLOAD_INTERFACE_PREFIXES
from stockade.model.reports import NotProgrammed  # a compile result; the type is the report's
from stockade.model.verdicts import DECIDING

from stockade.compile.dns import DnsInterception
from stockade.nft.ir import Match
from stockade.nft.ir import Ruleset

Direction = Literal["ingress", "egress"]
AnyPolicy = Policy | GlobalPolicy

TABLE = "stockade"
# The tier NetworkPolicies are enforced in (model.k8s.to_native): a workload one selects is denied,
# in that direction, what no policy up to this tier allowed (chains.workload_chain).
NETWORK_POLICY_TIER = "application"
# Packet-mark bit meaning "a policy of the current tier said pass". Cleared
# before every tier; documented in docs/architecture.md.
PASS_BIT = 0x10000000
# Packet-mark bits naming the bridge ports of bridged workloads (see compile.bridge): the port
# a frame came in on (bits 0-11) and the port it goes out on (bits 16-27), each a port id of
# 1-4095 (0: not a bridged workload's port). Bits 12-15 stay free (kube-proxy's 0x4000 and
# 0x8000), and so do 29-31; PASS_BIT is bit 28.
PORT_IN_MASK = 0x00000FFF
PORT_OUT_MASK = 0x0FFF0000
PORT_OUT_SHIFT = 16
MAX_BRIDGE_PORTS = 0xFFF
PORT_EGRESS_DISPATCH = "port_egress_dispatch"    # inet verdict maps: in-port id -> egress chain
PORT_INGRESS_DISPATCH = "port_ingress_dispatch"  # out-port id (shifted) -> ingress chain
# Address of a bridged workload -> its ingress chain: for what the host routes into the bridge,
# which leaves by the bridge's output path and so carries no out-port id.
BRIDGED_INGRESS_V4 = "bridged_ingress_v4"
BRIDGED_INGRESS_V6 = "bridged_ingress_v6"
PRIORITY_PORTS_IN = -300   # bridge prerouting, before br_netfilter's inet hooks (NF_BR_PRI_BRNF = 0)
PRIORITY_PORTS_OUT = -200  # bridge forward, likewise before br_netfilter's inet forward
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
    # Workloads' DNS to trusted resolvers through this host's DNS proxy (compile.dns), which
    # fqdn rules need; None: no interception, and fqdn rules learn nothing.
    dns: DnsInterception | None = None


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
    return any(r.action in DECIDING for r in policy_rules(policy, direction))


def source_kind(policy: AnyPolicy) -> str:
    """Policy, GlobalPolicy, or NetworkPolicy for the translated Kubernetes object."""
    return policy.metadata.annotations.get(SOURCE_KIND_ANNOTATION, policy.kind)


def ordered_policies(state: DesiredState, tiers: tuple[str, ...]) -> list[AnyPolicy]:
    """Evaluation order: tier, then order, then name (namespace and kind break ties)."""
    rank = {t: i for i, t in enumerate(tiers)}
    return sorted(state.enforced_policies, key=lambda p: (
        rank.get(p.spec.tier, len(tiers)), p.spec.order, p.metadata.name,
        p.metadata.namespace or "", p.kind))

