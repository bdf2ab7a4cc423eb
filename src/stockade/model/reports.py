"""What an agent reports about its host, as one type for the agent that sends it, the controller
that keeps it and the API that carries it. Pure; `to_dict` is the wire form (camelCase)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


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

    def to_dict(self) -> dict[str, Any]:
        return {"revision": self.revision, "programHash": self.program_hash, "appliedAt": self.applied_at,
                "inSync": self.in_sync, "error": self.error, "driftRepairs": self.drift_repairs,
                "lastDriftAt": self.last_drift_at,
                "endpoints": {k: e.to_dict() for k, e in sorted(self.endpoints.items())},
                "notProgrammed": [n.to_dict() for n in self.not_programmed]}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "AgentReport":
        """From the stored form (which `to_dict` wrote)."""
        return cls(revision=int(raw.get("revision", 0)), program_hash=raw.get("programHash"),
                   applied_at=raw.get("appliedAt"), in_sync=bool(raw.get("inSync", False)),
                   error=raw.get("error"), drift_repairs=int(raw.get("driftRepairs") or 0),
                   last_drift_at=raw.get("lastDriftAt"),
                   endpoints={k: Endpoint.from_dict(v) for k, v in (raw.get("endpoints") or {}).items()},
                   not_programmed=tuple(NotProgrammed(str(n["object"]), str(n["reason"]))
                                        for n in raw.get("notProgrammed") or ()))
