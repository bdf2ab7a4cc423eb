"""Reachability of one workload: what it may reach, and what may reach it. Pure.

For every other workload (the peer) and each direction, the flows to try are the ports that the
policies in play name, plus "any other port":

- the policies in play for `src → dst` are those that apply to `src` (its egress rules) and to
  `dst` (its ingress rules), asked with the compiler's own `Selection.applies_to`;
- each port of their rules is one probe: a number (a range by its first port), a named port
  resolved on the destination's `spec.ports` as the compiler resolves it, an ICMP(v6) type
  (echo request when none is named); a rule without ports names only its protocols;
- "any other port": for TCP, and every other protocol named, the highest port that no port or
  range in play covers.

Every probe's verdict and deciding rule is `compile.trace.trace_flow`'s, the interpreter of the
compiled host programs that `stockade trace` and `stockade test` run, so this answer and a trace
of the same flow always agree (tests/controller/test_reach.py checks every pair). A flow is
traced over IPv4 when both ends have an IPv4 address, else over IPv6; ICMP probes in their own
family.

Bounded: an answer traces at most `MAX_PEERS` other workloads (above, it is refused with 413:
use `stockade trace` for one pair) and at most `MAX_PROBES_PER_PAIR` probes per peer and
direction (the rest are counted in `omittedProbes`, never dropped silently).

Scoping, for a caller that may read only some namespaces (a tenant), with the leak each closes:
- a peer of another namespace is not named: all such peers of one namespace are one entry,
  `NS/(hidden)` (`visibility.workload_ref`), whose rows are the distinct outcomes over them;
- rule ids of another namespace are redacted (`visibility.rule_ref`), global ones kept;
- probes come only from the policies the caller may read (its namespaces'), and a named port is
  resolved only on a destination it may read: another tenant's port numbers and the ports its
  policies name never show up as probes.
The subject itself must be readable; that is checked before it is looked up (`rbac`, in
`topology_views`), so asking about another tenant's workload says nothing about its existence.

Invariants: never mutates the state; deterministic (peers and rows sorted).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Literal

from stockade.compile.host import CompileOptions
from stockade.compile.program import L4_NAMES, AnyPolicy, Direction, policy_rules
from stockade.compile.selection import Selection, WorkloadKey
from stockade.compile.trace import Programs, Flow, trace_flow
from stockade.controller import visibility
from stockade.controller.visibility import Visible
from stockade.errors import NotFoundError, PayloadTooLarge
from stockade.model.objects import PortSpec, Workload
from stockade.model.state import DesiredState

MAX_PEERS = 500
MAX_PROBES_PER_PAIR = 32
PORT_PROTOCOLS = ("tcp", "udp", "sctp")
ECHO_REQUEST = {4: 8, 6: 128}
Way = Literal["outgoing", "incoming"]


@dataclass(frozen=True, order=True)
class Probe:
    """One flow to trace between two workloads; sorted by protocol, then port."""

    protocol: str                 # tcp, udp, sctp, icmp
    port: int | None = None       # for tcp/udp/sctp
    family: int | None = None     # for icmp: 4 or 6 (ICMP or ICMPv6); else the pair's family
    icmp_type: int | None = None
    icmp_code: int | None = None
    other: bool = False           # "any other port": no rule in play names this port
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"protocol": self.protocol, "port": self.port, "label": self.label,
                               "other": self.other}
        if self.protocol == "icmp":
            out.update(family=self.family, icmpType=self.icmp_type, icmpCode=self.icmp_code)
        return out


def _port_probes(spec: PortSpec, dst: Workload | None) -> list[Probe]:
    """The probes one port of a rule names (`dst`: the destination, when its ports may be read)."""
    l4 = L4_NAMES[spec.protocol]
    if spec.protocol in ("ICMP", "ICMPv6"):
        family = 4 if spec.protocol == "ICMP" else 6
        icmp_type = spec.type if spec.type is not None else ECHO_REQUEST[family]
        name = "icmp" if family == 4 else "icmpv6"
        label = f"{name} type {icmp_type}" + (f" code {spec.code}" if spec.code is not None else "")
        return [Probe("icmp", None, family, icmp_type, spec.code, False, label)]
    if isinstance(spec.port, str):
        found = [p for p in (dst.spec.ports if dst is not None else ()) if p.name == spec.port
                 and p.protocol == spec.protocol]
        return [Probe(l4, p.port, label=f"{l4}/{spec.port} ({p.port})") for p in found]
    if spec.port is None:
        return []  # the whole protocol: "any other port" of it stands for it
    if spec.endPort is not None and spec.endPort != spec.port:
        return [Probe(l4, spec.port, label=f"{l4}/{spec.port}-{spec.endPort}")]
    return [Probe(l4, spec.port, label=f"{l4}/{spec.port}")]


def _covered(spec: PortSpec, dst: Workload | None) -> tuple[str, int, int] | None:
    """The (protocol, first, last) port range a rule port covers, for choosing "any other port"."""
    if spec.protocol in ("ICMP", "ICMPv6"):
        return None
    l4 = L4_NAMES[spec.protocol]
    if isinstance(spec.port, str):
        found = [p.port for p in (dst.spec.ports if dst is not None else ()) if p.name == spec.port
                 and p.protocol == spec.protocol]
        return (l4, found[0], found[0]) if found else None
    if spec.port is None:
        return None
    return (l4, spec.port, spec.endPort or spec.port)


def probes_for(policies: list[tuple[AnyPolicy, Direction]], dst: Workload | None) -> list[Probe]:
    """The probes of a pair: the ports its policies in play name, then "any other port" per protocol."""
    named: set[Probe] = set()
    protocols = {"tcp"}
    covered: list[tuple[str, int, int]] = []
    for policy, direction in policies:
        for rule in policy_rules(policy, direction):
            for spec in rule.ports or ():
                named.update(_port_probes(spec, dst))
                if spec.protocol not in ("ICMP", "ICMPv6"):
                    protocols.add(L4_NAMES[spec.protocol])
                span = _covered(spec, dst)
                if span is not None:
                    covered.append(span)
    others = []
    for l4 in sorted(protocols):
        spans = [(lo, hi) for proto, lo, hi in covered if proto == l4]
        port = next((p for p in range(65535, 0, -1) if not any(lo <= p <= hi for lo, hi in spans)), None)
        if port is not None:
            others.append(Probe(l4, port, other=True, label=f"{l4}/other ({port})"))
    return sorted(named) + others


def _families(state: DesiredState, workload: Workload) -> set[int]:
    return {ipaddress.ip_address(ip).version for ip in state.workload_ips(workload)}


def _family(state: DesiredState, a: Workload, b: Workload) -> int | None:
    """4 when both ends have an IPv4 address, else 6 when both have IPv6, else None."""
    common = _families(state, a) & _families(state, b)
    return 4 if 4 in common else (6 if 6 in common else None)


class ReachTracer:
    """Traces probes for one state; host programs are compiled once and shared across calls."""

    def __init__(self, state: DesiredState, options: CompileOptions = CompileOptions()) -> None:
        self.state = state
        self.options = options
        self.programs: Programs = {}
        self.selection = Selection(state)
        self._applicable: dict[WorkloadKey, tuple[AnyPolicy, ...]] = {}

    def applicable(self, key: WorkloadKey) -> tuple[AnyPolicy, ...]:
        if key not in self._applicable:
            self._applicable[key] = tuple(p for p in self.state.enforced_policies
                                          if self.selection.applies_to(p, key))
        return self._applicable[key]

    def flow(self, src: WorkloadKey, dst: WorkloadKey, probe: Probe, family: int) -> Flow:
        if probe.protocol == "icmp":
            return Flow(src, dst, "icmp", None, probe.family or family, probe.icmp_type, probe.icmp_code)  # type: ignore[arg-type]
        return Flow(src, dst, probe.protocol, probe.port, family)  # type: ignore[arg-type]

    def outcome(self, src: WorkloadKey, dst: WorkloadKey, probe: Probe, family: int) -> dict[str, Any]:
        result = trace_flow(self.state, self.flow(src, dst, probe, family), self.options, self.programs)
        side = "ingress" if result.egress.verdict == "allow" and result.ingress is not None else "egress"
        return {"verdict": result.verdict, "rule": result.deciding_rule, "side": side}


def _pair(tracer: ReachTracer, src: WorkloadKey, dst: WorkloadKey, visible: Visible) -> dict[str, Any]:
    """The rows of one direction of one pair, as the caller may see them."""
    state = tracer.state
    a, b = state.workloads[src], state.workloads[dst]
    family = _family(state, a, b)
    if family is None:
        return {"rows": [], "omittedProbes": 0, "problem": "no address family in common"}
    in_play: list[tuple[AnyPolicy, Direction]] = [(p, "egress") for p in tracer.applicable(src)]
    in_play += [(p, "ingress") for p in tracer.applicable(dst)]
    # Only the policies the caller may read name probes (see the module docstring). A global
    # policy's namespace is "": visible to an unscoped caller, never to a tenant.
    readable = [(p, d) for p, d in in_play if visible(p.metadata.namespace or "")]
    probes = probes_for(readable, b if visible(dst[0]) else None)
    families = _families(state, a) & _families(state, b)
    probes = [p for p in probes if p.protocol != "icmp" or p.family in families]
    specific = [p for p in probes if not p.other]
    kept = specific[:MAX_PROBES_PER_PAIR] + [p for p in probes if p.other]
    rows = []
    for probe in kept:
        outcome = tracer.outcome(src, dst, probe, family)
        outcome["rule"] = visibility.rule_ref(outcome["rule"], visible)
        rows.append({**probe.to_dict(), **outcome})
    return {"rows": rows, "omittedProbes": len(specific) - min(len(specific), MAX_PROBES_PER_PAIR),
            "problem": None}


def _verdicts(rows: list[dict[str, Any]]) -> str:
    """One word for a peer: allow (every row), deny (none allows), partial, or none (no rows)."""
    allowed = {r["verdict"] == "allow" for r in rows}
    if not allowed:
        return "none"
    return "allow" if allowed == {True} else ("deny" if allowed == {False} else "partial")


def _entries(pairs: list[tuple[WorkloadKey, dict[str, Any]]], visible: Visible) -> list[dict[str, Any]]:
    """One entry per peer; another namespace's peers merged into one `NS/(hidden)` entry."""
    merged: dict[str, dict[str, Any]] = {}
    for peer, answer in pairs:
        ref = visibility.workload_ref(f"{peer[0]}/{peer[1]}", visible) or ""
        entry = merged.setdefault(ref, {"peer": ref, "namespace": peer[0], "hidden": not visible(peer[0]),
                                        "rows": [], "omittedProbes": 0, "problems": []})
        for row in answer["rows"]:
            if row not in entry["rows"]:
                entry["rows"].append(row)
        entry["omittedProbes"] = max(entry["omittedProbes"], answer["omittedProbes"])
        if answer["problem"] and answer["problem"] not in entry["problems"]:
            entry["problems"].append(answer["problem"])
    out = []
    for ref in sorted(merged):
        entry = merged[ref]
        entry["rows"].sort(key=lambda r: (r["other"], r["protocol"], r["port"] or 0, r.get("icmpType") or 0,
                                          r["verdict"], r["rule"] or ""))
        entry["summary"] = _verdicts(entry["rows"])
        out.append(entry)
    return out


def reach(state: DesiredState, subject: WorkloadKey, visible: Visible,
          options: CompileOptions = CompileOptions(), max_peers: int = MAX_PEERS) -> dict[str, Any]:
    """What `subject` may reach (`outgoing`) and what may reach it (`incoming`), per peer."""
    if subject not in state.workloads:
        raise NotFoundError(f"Workload {subject[0]}/{subject[1]} not found")
    peers = [k for k in sorted(state.workloads) if k != subject]
    if len(peers) > max_peers:
        raise PayloadTooLarge(f"reach of Workload {subject[0]}/{subject[1]}: the state holds more than "
                              f"{max_peers} other workloads, the most one answer traces; trace one pair "
                              "with `stockade trace` instead")
    tracer = ReachTracer(state, options)
    outgoing = [(peer, _pair(tracer, subject, peer, visible)) for peer in peers]
    incoming = [(peer, _pair(tracer, peer, subject, visible)) for peer in peers]
    return {"revision": state.revision, "workload": f"{subject[0]}/{subject[1]}",
            "outgoing": _entries(outgoing, visible), "incoming": _entries(incoming, visible),
            "limits": {"maxPeers": max_peers, "maxProbesPerPair": MAX_PROBES_PER_PAIR}}
