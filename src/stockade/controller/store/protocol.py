"""The store seam: the few operations the controller needs on desired state.

A backend (`store.sqlite`, `store.etcd`) implements `StateStore`; the service
(`controller.service`) uses nothing else of it, and `tests/controller/store/test_contract.py`
runs one suite against every backend. Tokens, audit entries and agent reports are
repositories of their own (`store.tokens`, `store.audit_log`, `store.agent_reports`), not
methods of this one.

What every backend guarantees:
- Revisions are numbered 1, 2, 3, ... without gaps; 0 is the empty store. `commit`
  makes exactly one new revision holding every change given, or raises and makes none.
- Compare-and-swap: `commit(expected=...)` checks, inside its own transaction, that each
  named object was last changed by the revision given (its `metadata.resourceVersion`);
  else `ConflictError` and nothing changes.
- `commit(base=N)` commits only on top of revision N, the state the change set was planned
  and validated on; else `StaleBase` (a signal for the caller to plan again, not an error of
  the tree) and nothing changes. Without `base`
  a commit lands on whatever revision is newest, if `expected` holds there. With several
  writers on one store (controller replicas on etcd) this is what keeps a write validated
  against the state it replaces.
- The audit rows handed to `commit` are stored in the revision's own transaction: both
  exist, or neither.
- `events_since(n)` gives every event of the revisions after `n`, in commit order, or
  raises `Gone` when those are no longer all kept (or `n` is newer than the store).
- History keeps every change of every revision: `objects_at` and `changes_of` answer
  for any revision, whatever the event window.
- `cluster_id` is made once, when the store is created, and never changes, but by a restore
  (`store.archive`), which makes a new one and adds the old one to `lineage`.

Blocking: every method may wait on I/O; call them off the event loop. What a watcher gets
from memory (the event tail, rendered answers, wake-ups) lives above this seam, in the
service layer, so it is the same for every backend.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping, Protocol, Sequence

from stockade.controller.store.types import AuditRows, Change, Committed, Event, EventType, Revision
from stockade.model.kinds import ObjectKey


class StateStore(Protocol):
    @property
    def cluster_id(self) -> str:
        """The store's identity, made when it was created (agents check it)."""
        ...

    @property
    def lineage(self) -> tuple[str, ...]:
        """The identities this store was restored from, oldest first (`stockade restore`); an
        agent that enforces a program of one of them takes this store as their successor."""
        ...

    def revision(self) -> int:
        """The latest revision number; 0 for the empty store."""
        ...

    def objects(self, kind: str | None = None, namespace: str | None = None,
                name: str | None = None) -> tuple[int, list[dict[str, Any]]]:
        """(revision, documents) matching the filters at one revision, by kind, namespace, name."""
        ...

    def object_revisions(self) -> dict[ObjectKey, int]:
        """The revision that last changed each object: its `metadata.resourceVersion`."""
        ...

    def objects_at(self, revision: int) -> list[dict[str, Any]]:
        """Every document as it stood right after `revision` (0: none); ValueError beyond the newest."""
        ...

    def commit(self, changes: Sequence[Change], author: str, message: str, time: datetime, *,
               expected: Mapping[ObjectKey, str] | None = None, audit: AuditRows | None = None,
               base: int | None = None) -> Committed:
        """Apply `changes` as one new revision, atomically, if every object in `expected` is still
        at that resourceVersion (else ConflictError) and, with `base`, the store is still at that
        revision (else StaleBase); with `audit`, store the rows it gives for the new revision
        number in the same transaction."""
        ...

    def events_since(self, since: int) -> tuple[int, list[Event]]:
        """(revision, events of revisions after `since`), or Gone when they are no longer all kept."""
        ...

    def compacted(self) -> int:
        """Events of revisions up to this one have been dropped from the event window."""
        ...

    def revisions(self, limit: int | None = None) -> list[Revision]:
        """Revisions, newest first."""
        ...

    def revision_info(self, number: int) -> Revision | None:
        """One revision's author, message and time; None for 0 or an unknown number."""
        ...

    def changes_of(self, revisions: Sequence[int]) -> dict[int, list[tuple[EventType, ObjectKey]]]:
        """What each of `revisions` put or deleted, in commit order."""
        ...

    def close(self) -> None:
        ...
