"""What an agent tells the controller, as one type for the agent that sends it, the controller
that keeps it, the API that carries it: its status report, and the flow records it ships.
Pure; `to_dict` is the wire form (camelCase keys; for a flow record, in the order the agent
has always sent them) and `from_dict(x.to_dict()) == x`. Validation is the API schemas' job
(controller/schemas.py), which build these from what they accepted.

    FlowRecord   {"time", "host", "direction", "verdict", "rule", "protocol", "family",
                  "src": FlowEnd, "dst": FlowEnd, "icmpType", "event",
                  "packets", "bytes", "replyPackets", "replyBytes"}   (counts: end records)
    AgentReport  {"revision", "programHash", "appliedAt", "inSync", "error", "driftRepairs",
                  "lastDriftAt", "endpoints", "notProgrammed", "handoffs",
                  "ruleCounters": {RULE-ID: {DIRECTION: {"packets", "bytes"}}}, "ruleCountersOmitted"}

Rule counters are keyed by the rule id that trace and flow records name (`ns/policy/rule`,
`policy/rule` for a cluster-wide policy, `ns/default-deny/DIRECTION` for a namespace's default)
and then by direction: an ingress and an egress rule of one policy may share an id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping


Direction = Literal["egress", "ingress"]
FlowEvent = Literal["start", "end"]


@dataclass(frozen=True)
class FlowEnd:
    """One end of a flow: address, port, and the workload and namespace it belongs to (None outside)."""

    ip: str
    port: int | None = None
    workload: str | None = None     # "namespace/name"
    namespace: str | None = None
    # Outside every workload: the domain names the host learned this address for from its trusted
    # resolvers (issue 18), so that a record of an fqdn rule says which name it was.
    names: tuple[str, ...] = ()

    def to_dict(self, names: bool = False) -> dict[str, Any]:
        """`names`: always give the key (what the API serves); otherwise only when there are some,
        so that an agent's records of workloads stay what older controllers take."""
        out: dict[str, Any] = {"ip": self.ip, "port": self.port, "workload": self.workload,
                               "namespace": self.namespace}
        if names or self.names:
            out["names"] = list(self.names)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "FlowEnd":
        return cls(raw["ip"], raw.get("port"), raw.get("workload"), raw.get("namespace"),
                   tuple(raw.get("names") or ()))


@dataclass(frozen=True)
class FlowRecord:
    """A packet an enforcing rule logged (`start`), or the end of an allowed connection (`end`,
    with the counts conntrack had: both directions summed, and the reply direction alone)."""

    time: str                       # UTC ISO 8601
    host: str                       # the enforcing host
    direction: str                  # Direction
    verdict: str                    # model.verdicts.FlowVerdict
    rule: str                       # "ns/policy/rule-id"
    protocol: str
    family: int                     # 4 or 6
    src: FlowEnd
    dst: FlowEnd
    icmp_type: int | None = None
    event: str = "start"            # FlowEvent
    packets: int | None = None
    bytes: int | None = None
    reply_packets: int | None = None
    reply_bytes: int | None = None

    @property
    def ended(self) -> bool:
        return self.event == "end"

    def to_dict(self, *, counts: bool | None = None) -> dict[str, Any]:
        """The wire form. The counts are there for an end record (what an agent sends) or,
        with `counts=True`, always (null on a start: what the API serves)."""
        out: dict[str, Any] = {
            "time": self.time, "host": self.host, "direction": self.direction, "verdict": self.verdict,
            "rule": self.rule, "protocol": self.protocol, "family": self.family,
            "src": self.src.to_dict(counts is True), "dst": self.dst.to_dict(counts is True),
            "icmpType": self.icmp_type,
            "event": self.event,
        }
        if counts or (counts is None and self.ended):
            out.update(packets=self.packets, bytes=self.bytes, replyPackets=self.reply_packets,
                       replyBytes=self.reply_bytes)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "FlowRecord":
        """From the wire form (a record an older agent sent may lack `event` and the counts)."""
        return cls(time=raw["time"], host=raw["host"], direction=raw["direction"], verdict=raw["verdict"],
                   rule=raw["rule"], protocol=raw["protocol"], family=raw["family"],
                   src=FlowEnd.from_dict(raw["src"]), dst=FlowEnd.from_dict(raw["dst"]),
                   icmp_type=raw.get("icmpType"), event=raw.get("event") or "start",
                   packets=raw.get("packets"), bytes=raw.get("bytes"),
                   reply_packets=raw.get("replyPackets"), reply_bytes=raw.get("replyBytes"))


@dataclass(frozen=True)
class NotProgrammed:
    """A local workload the host program leaves out, and why; the agent reports it."""

    workload: str  # "namespace/name"
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"object": self.workload, "reason": self.reason}


@dataclass(frozen=True)
class Endpoint:
    """Where a workload's network stack lives on its host, as the agent found it."""

    netns: str | None = None
    interface: str | None = None
    mac: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in (("netns", self.netns), ("interface", self.interface), ("mac", self.mac))
                if v is not None}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "Endpoint":
        return cls(raw.get("netns"), raw.get("interface"), raw.get("mac"))


@dataclass(frozen=True)
class Handoff:
    """What a host took over of a workload that moved to it (agent.migration): the revision it
    arrived in, how many open connections came with it, and whether they came at all."""

    revision: int
    connections: int = 0
    taken: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"revision": self.revision, "connections": self.connections, "taken": self.taken}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "Handoff":
        return cls(int(raw.get("revision", 0)), int(raw.get("connections", 0)), bool(raw.get("taken", False)))


@dataclass(frozen=True)
class RuleCount:
    """What the kernel counted for one rule in one direction on one host, since the rule was programmed."""

    packets: int = 0
    bytes: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"packets": self.packets, "bytes": self.bytes}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "RuleCount":
        return cls(int(raw.get("packets") or 0), int(raw.get("bytes") or 0))


RuleCounters = Mapping[str, Mapping[str, RuleCount]]  # rule id -> direction -> counts


@dataclass(frozen=True)
class AgentReport:
    """An agent's account of itself: the revision it enforces, the program's hash, its endpoints.

    `endpoints` is keyed by `namespace/name` of the workload; `not_programmed` lists the local
    workloads the agent's program leaves out (the host cannot enforce their policy), and why.
    """

    revision: int
    program_hash: str | None = None
    applied_at: str | None = None
    in_sync: bool = False
    error: str | None = None
    endpoints: Mapping[str, Endpoint] = field(default_factory=dict)
    drift_repairs: int = 0
    last_drift_at: str | None = None
    not_programmed: tuple[NotProgrammed, ...] = ()
    handoffs: Mapping[str, Handoff] = field(default_factory=dict)  # by "namespace/name" of the workload
    # The kernel's per-rule counters at the time of the report (agent.rule_counters), and how many
    # rule entries the agent's cap left out (the least-hit ones).
    rule_counters: RuleCounters = field(default_factory=dict)
    rule_counters_omitted: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"revision": self.revision, "programHash": self.program_hash, "appliedAt": self.applied_at,
                "inSync": self.in_sync, "error": self.error, "driftRepairs": self.drift_repairs,
                "lastDriftAt": self.last_drift_at,
                "endpoints": {k: e.to_dict() for k, e in sorted(self.endpoints.items())},
                "notProgrammed": [n.to_dict() for n in self.not_programmed],
                "handoffs": {k: h.to_dict() for k, h in sorted(self.handoffs.items())},
                "ruleCounters": {rule: {d: c.to_dict() for d, c in sorted(by_dir.items())}
                                 for rule, by_dir in sorted(self.rule_counters.items())},
                "ruleCountersOmitted": self.rule_counters_omitted}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "AgentReport":
        """From the stored form (which `to_dict` wrote)."""
        return cls(revision=int(raw.get("revision", 0)), program_hash=raw.get("programHash"),
                   applied_at=raw.get("appliedAt"), in_sync=bool(raw.get("inSync", False)),
                   error=raw.get("error"), drift_repairs=int(raw.get("driftRepairs") or 0),
                   last_drift_at=raw.get("lastDriftAt"),
                   endpoints={k: Endpoint.from_dict(v) for k, v in (raw.get("endpoints") or {}).items()},
                   not_programmed=tuple(NotProgrammed(str(n["object"]), str(n["reason"]))
                                        for n in raw.get("notProgrammed") or ()),
                   handoffs={k: Handoff.from_dict(v) for k, v in (raw.get("handoffs") or {}).items()},
                   rule_counters={rule: {d: RuleCount.from_dict(c) for d, c in by_dir.items()}
                                  for rule, by_dir in (raw.get("ruleCounters") or {}).items()},
                   rule_counters_omitted=int(raw.get("ruleCountersOmitted") or 0))
