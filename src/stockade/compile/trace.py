"""Why a flow is allowed or denied, from the programs the hosts actually run. Pure.

The source host's compiled Ruleset decides egress and the destination host's
decides ingress; both are evaluated by `nft.interpret`, which runs the same IR
that is rendered into the kernel, so trace and enforcement cannot disagree.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Literal

from stockade.compile.host import CompileOptions, compile_host
from stockade.errors import NotFoundError, ValidationError
from stockade.model.fqdn import check_pattern
from stockade.model.naming import workload_interface
from stockade.model.state import DesiredState
from stockade.nft.interpret import Interpreter, Packet
from stockade.nft.ir import Ruleset

# What the lab's hypervisors call the interface towards other hosts; any name
# that is not a local workload's interface gives the same verdicts.
UPLINK = "fab0"
L4 = {"tcp": "tcp", "udp": "udp", "sctp": "sctp", "icmp": "icmp"}
VERDICT_WORDS = {"accept": "allow", "drop": "deny", "reject": "reject"}


@dataclass(frozen=True)
class Flow:
    src: tuple[str, str]
    dst: tuple[str, str]
    protocol: Literal["tcp", "udp", "sctp", "icmp"]
    port: int | None = None
    family: Literal[4, 6] = 4
    icmp_type: int | None = None
    icmp_code: int | None = None
    # A destination outside every workload, known by a domain name (`dst` is then ignored):
    # egress is traced alone, to `dst_ip` or, when none is given, to an address of no network
    # a policy would name (OUTSIDE_ADDRESS), so that only name rules and catch-all CIDRs match.
    dst_fqdn: str | None = None
    dst_ip: str | None = None


PROTOCOLS = ("tcp", "udp", "sctp", "icmp")


def check_request(protocol: str, family: int, has_dst: bool, to_fqdn: str | None,
                  field: Callable[[str], str] = lambda name: name) -> None:
    """What a trace request must hold whoever asks (`stockade trace`, GET /api/v1/trace): a known
    protocol and family, one destination (a workload or a domain name, not a pattern).
    ValidationError naming the field as the asker spells it (`field("protocol")`: `--protocol`)."""
    if protocol not in PROTOCOLS:
        raise ValidationError.single("trace", field("protocol"), f"{protocol!r} is not one of {', '.join(PROTOCOLS)}")
    if family not in (4, 6):
        raise ValidationError.single("trace", field("family"), "must be 4 or 6")
    if has_dst == (to_fqdn is not None):
        raise ValidationError.single("trace", field("to"), "give a destination: a workload, or a domain name")
    if to_fqdn is not None:
        try:
            check_pattern(to_fqdn)
        except ValueError as e:
            raise ValidationError.single("trace", field("to-fqdn"), str(e)) from None
        if to_fqdn.startswith("*."):
            raise ValidationError.single("trace", field("to-fqdn"), "a name, not a pattern")


OUTSIDE_ADDRESS = {4: "192.0.2.1", 6: "100::1"}

# Each host's compiled program, ready to evaluate, by host: a caller tracing many flows on one
# state passes the same dict to every call, so each host is compiled, and its sets indexed
# (nft.interpret), once.
Programs = dict[str, Interpreter]  # TEST-NET-1 and the discard prefix: never real peers


@dataclass
class SideTrace:
    host: str
    verdict: str
    rules: list[dict[str, str]] = field(default_factory=list)


@dataclass
class TraceResult:
    verdict: str
    src_ip: str
    dst_ip: str
    egress: SideTrace
    ingress: SideTrace | None
    dst_fqdn: str | None = None  # `--to-fqdn`: the destination's name, which the fqdn rules matched

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def deciding_rule(self) -> str | None:
        """The rule that ended evaluation: ingress's if egress let the packet go."""
        side = self.ingress if self.egress.verdict == "allow" and self.ingress else self.egress
        final = [r for r in side.rules if r["action"] in ("accept", "drop", "reject")]
        return final[-1]["rule"] if final else None


def _address(state: DesiredState, key: tuple[str, str], family: int) -> str:
    wl = state.workloads.get(key)
    if wl is None:
        raise NotFoundError(f"Workload {key[0]}/{key[1]}: not found")
    for ip in state.workload_ips(wl):
        if ipaddress.ip_address(ip).version == family:
            return ip
    raise ValidationError.single(f"Workload {key[0]}/{key[1]}", "status.ips", f"has no IPv{family} address")


def trace_flow(state: DesiredState, flow: Flow, options: CompileOptions = CompileOptions(),
               programs: Programs | None = None) -> TraceResult:
    """Trace one flow. `programs` caches compiled host programs across calls on the same state."""
    cache = programs if programs is not None else {}
    if flow.dst_fqdn is not None:
        return _trace_to_name(state, flow, options, cache)
    src, dst = state.workloads.get(flow.src), state.workloads.get(flow.dst)
    if src is None or dst is None:
        missing = flow.src if src is None else flow.dst
        raise NotFoundError(f"Workload {missing[0]}/{missing[1]}: not found")
    src_ip, dst_ip = _address(state, flow.src, flow.family), _address(state, flow.dst, flow.family)
    same_host = src.spec.host == dst.spec.host
    src_if, dst_if = workload_interface(src), workload_interface(dst)
    packet = _packet(flow, src_ip, dst_ip)
    egress = _side(state, options, cache, src.spec.host, "egress", packet, src_if, dst_if if same_host else UPLINK)
    if egress.verdict != "allow":
        return TraceResult(egress.verdict, src_ip, dst_ip, egress, None)
    ingress = _side(state, options, cache, dst.spec.host, "ingress", packet, src_if if same_host else UPLINK, dst_if)
    return TraceResult(ingress.verdict, src_ip, dst_ip, egress, ingress)


def _packet(flow: Flow, src_ip: str, dst_ip: str) -> Packet:
    """The flow's first packet (for ICMP an echo request unless the flow says otherwise)."""
    l4 = "ipv6-icmp" if flow.protocol == "icmp" and flow.family == 6 else L4[flow.protocol]
    icmp_type = flow.icmp_type
    if flow.protocol == "icmp" and icmp_type is None:
        icmp_type = 8 if flow.family == 4 else 128  # echo request
    return Packet(flow.family, src_ip, dst_ip, l4, flow.port if flow.protocol != "icmp" else None,
                  icmp_type, flow.icmp_code if flow.icmp_code is not None else (0 if icmp_type is not None else None),
                  dst_names=(flow.dst_fqdn,) if flow.dst_fqdn else ())


def _side(state: DesiredState, options: CompileOptions, programs: Programs, host: str, chain: str,
          packet: Packet, iif: str, oif: str) -> SideTrace:
    """`packet` through one base chain of `host`'s program (compiled once per host into `programs`)."""
    if host not in programs:
        programs[host] = Interpreter(compile_host(state, host, options))
    outcome = programs[host].run_base_chain(replace(packet, iifname=iif, oifname=oif), chain)
    return SideTrace(host, VERDICT_WORDS[outcome.verdict],
                     [{"rule": s.comment or "", "action": s.action, "chain": s.chain} for s in outcome.steps])


def _trace_to_name(state: DesiredState, flow: Flow, options: CompileOptions,
                   programs: Programs) -> TraceResult:
    """Egress of `flow.src` to a destination outside the workloads that has the name `flow.dst_fqdn`."""
    src = state.workloads.get(flow.src)
    if src is None:
        raise NotFoundError(f"Workload {flow.src[0]}/{flow.src[1]}: not found")
    src_ip = _address(state, flow.src, flow.family)
    dst_ip = flow.dst_ip or OUTSIDE_ADDRESS[flow.family]
    try:
        version = ipaddress.ip_address(dst_ip).version
    except ValueError:
        raise ValidationError.single("trace", "--to-ip", f"{dst_ip!r} is not an IP address") from None
    if version != flow.family:
        raise ValidationError.single("trace", "--to-ip", f"{dst_ip} is not an IPv{flow.family} address")
    egress = _side(state, options, programs, src.spec.host, "egress", _packet(flow, src_ip, dst_ip),
                   workload_interface(src), UPLINK)
    return TraceResult(egress.verdict, src_ip, dst_ip, egress, None, flow.dst_fqdn)
