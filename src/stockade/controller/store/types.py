"""What crosses the store seam: frozen values every backend takes and returns.

Pure data, no I/O. A backend (`store.sqlite`, later etcd) and the service above it
agree on these and nothing else: documents are plain JSON-able dicts, already
validated by the service; the store knows nothing of them beyond kind, namespace, name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Sequence

from stockade.model.kinds import ObjectKey

EventType = Literal["PUT", "DELETE"]
# Revision number → the audit entries to store in that revision's own transaction.
AuditRows = Callable[[int], Sequence[dict[str, Any]]]


def canonical_json(value: Any) -> str:
    """The one JSON spelling the stores write documents and records in: sorted keys, no spaces."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# Events (whole revisions) the event window keeps; older ones are history only (docs/architecture.md).
DEFAULT_EVENT_RETENTION = 10_000

@dataclass(frozen=True)
class Revision:
    number: int
    author: str
    message: str
    time: str  # UTC, ISO 8601


@dataclass(frozen=True)
class Change:
    """One object put (document given) or deleted (document None) in a revision."""

    key: ObjectKey
    document: dict[str, Any] | None


@dataclass(frozen=True)
class Event:
    revision: int
    seq: int
    type: EventType
    key: ObjectKey
    document: dict[str, Any] | None


@dataclass(frozen=True)
class Committed:
    """What one commit made: the revision, its events in commit order, and the seqs of the
    audit entries stored in the same transaction (empty when none were given)."""

    revision: Revision
    events: tuple[Event, ...]
    audit_seqs: tuple[int, ...] = ()


class StaleBase(Exception):
    """A commit given `base` found the store past that revision: another writer (another
    controller replica) committed since the change set was planned and validated, so it was
    not stored. A signal to the caller, not an error of the tree (`stockade.errors`): the
    service plans the write again on the new state, and answers ConflictError (409) when
    it keeps being overtaken."""


def stale_versions(expected: Mapping[ObjectKey, str], versions: Mapping[ObjectKey, int]) -> list[str]:
    """One message per object whose `metadata.resourceVersion` (`expected`) is no longer the
    revision that last changed it (`versions`); empty when every one still holds. The same
    text whether the service finds it before planning or a backend during its commit."""
    stale: list[str] = []
    for key, wanted in expected.items():
        now = versions.get(key)
        if now is None:
            stale.append(f"{key}: resourceVersion {wanted} was given but the object does not exist "
                         "(deleted since it was read?)")
        elif str(now) != str(wanted).strip():
            stale.append(f"{key}: resourceVersion {wanted} is stale, the object was changed in "
                         f"revision {now}; get it again and re-apply your change")
    return stale
