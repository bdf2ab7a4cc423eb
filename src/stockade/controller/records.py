"""Typed values the controller's use cases take and return, with their JSON wire form.

Pure data. `to_dict` gives exactly the JSON the REST API sends (camelCase,
`namespace: null` for cluster-scoped objects), so the API layer never invents
keys of its own.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal, Sequence

from stockade.model.reports import AgentReport
from stockade.controller.store.types import Event
from stockade.model.kinds import ObjectKey

Action = Literal["created", "configured", "unchanged", "deleted"]


def _ns(namespace: str) -> str | None:
    return namespace or None


@dataclass(frozen=True)
class ObjectResult:
    key: ObjectKey
    action: Action
    warnings: tuple[str, ...] = ()  # what the object was taken to mean, where its text says otherwise

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.key.kind, "namespace": _ns(self.key.namespace), "name": self.key.name,
                               "action": self.action}
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


@dataclass(frozen=True)
class WriteResult:
    """What an apply or delete did: the revision now current, and one result per object asked for.

    When nothing changed, `revision` is the existing revision and no new one was made.
    """

    revision: int
    results: tuple[ObjectResult, ...]

    @property
    def changed(self) -> bool:
        return any(r.action != "unchanged" for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {"revision": self.revision, "results": [r.to_dict() for r in self.results]}


ApplyResult = WriteResult


def event_to_dict(event: Event) -> dict[str, Any]:
    return {"revision": event.revision, "type": event.type, "kind": event.key.kind,
            "namespace": _ns(event.key.namespace), "name": event.key.name, "object": event.document}


@dataclass(frozen=True)
class AgentStatus:
    host: str
    report: AgentReport
    last_seen: str
    reporting: bool  # a report arrived within the staleness window

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "revision": self.report.revision, "programHash": self.report.program_hash,
                "appliedAt": self.report.applied_at, "inSync": self.report.in_sync, "error": self.report.error,
                "driftRepairs": self.report.drift_repairs, "lastDriftAt": self.report.last_drift_at,
                "notProgrammed": [n.to_dict() for n in self.report.not_programmed],
                "handoffs": {k: h.to_dict() for k, h in sorted(self.report.handoffs.items())},
                "lastSeen": self.last_seen, "reporting": self.reporting}


@dataclass(frozen=True)
class ControllerStatus:
    """The controller's revision and every agent that ever reported.

    `enforced_revision` is the lowest revision over the agents that are
    reporting (None when none is): every such agent enforces at least that.
    """

    revision: int
    agents: tuple[AgentStatus, ...]

    @property
    def enforced_revision(self) -> int | None:
        live = [a.report.revision for a in self.agents if a.reporting]
        return min(live) if live else None

    def to_dict(self) -> dict[str, Any]:
        return {"revision": self.revision, "enforcedRevision": self.enforced_revision,
                "agents": [a.to_dict() for a in self.agents]}


class WatchAnswers:
    """The JSON of watch answers, each rendered once for every watcher that gets it.

    After a commit every agent's watch asks with the same `since` and gets the same events;
    rendering (and validating) that answer once per agent was most of the controller's work
    for a change (docs/performance.md). An answer is fixed by (since, revision, view): the
    events of a revision never change, and an agent's view (controller.host_views) decides
    which of them it gets. Keeps the newest `size` answers that carry events, each of at
    most `max_bytes` (a large apply's answer is rendered per watcher rather than held).
    """

    def __init__(self, cluster_id: str, size: int = 32, max_bytes: int = 256 * 1024) -> None:
        self.cluster_id = cluster_id
        self.size = size
        self.max_bytes = max_bytes
        self._answers: OrderedDict[tuple[int, int, str | None], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def render(self, since: int, revision: int, events: Sequence[Event], view: str | None = None) -> bytes:
        key = (since, revision, view)
        with self._lock:
            cached = self._answers.get(key)
        if cached is not None:
            return cached
        answer: dict[str, Any] = {"revision": revision, "clusterId": self.cluster_id}
        if view is not None:
            answer["view"] = view
        answer["events"] = [event_to_dict(e) for e in events]
        body = json.dumps(answer, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        if events and len(body) <= self.max_bytes:
            with self._lock:
                self._answers[key] = body
                while len(self._answers) > self.size:
                    self._answers.popitem(last=False)
        return body
