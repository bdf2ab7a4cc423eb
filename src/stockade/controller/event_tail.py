"""The events of the newest revisions committed through this controller, in memory, for watchers.

After a commit every agent's watch asks for exactly those events, and twenty agents meant
twenty store reads per change (docs/performance.md). The service adds each revision it
commits; a watch woken by that commit is answered from here. This sits above the store
seam, so every backend gets it alike.

Invariants: only consecutive revisions are held (a gap, such as a revision committed by
another writer, empties the tail), at most `capacity` of them and, beyond the newest one,
`max_events` events; `after` never answers with nothing (None: ask the store), so a
writer other than this process is never hidden from a watcher.
"""

from __future__ import annotations

import threading

from stockade.controller.store.types import Event, Revision

RECENT_REVISIONS = 64  # revisions whose events stay in memory for watchers
RECENT_EVENTS = 1_000  # and at most this many events in all


class EventTail:
    """The newest consecutive revisions committed here, with their events: at most `capacity`
    revisions and, beyond the newest one, `max_events` events (a large apply is read from the
    store instead of being held twice)."""

    def __init__(self, capacity: int = RECENT_REVISIONS, max_events: int = RECENT_EVENTS) -> None:
        self.capacity = capacity
        self.max_events = max_events
        self._revisions: list[tuple[Revision, list[Event]]] = []
        self._lock = threading.Lock()

    def add(self, revision: Revision, events: list[Event]) -> None:
        """Hold a committed revision (call only once it is committed: readers may see it now)."""
        with self._lock:
            if self._revisions and self._revisions[-1][0].number != revision.number - 1:
                self._revisions = []  # a gap: only consecutive revisions can answer a reader
            self._revisions.append((revision, events))
            del self._revisions[:-self.capacity]
            held = sum(len(evs) for _, evs in self._revisions)
            while len(self._revisions) > 1 and held > self.max_events:
                held -= len(self._revisions.pop(0)[1])
            if held > self.max_events:  # the newest alone is too large: keep nothing
                self._revisions = []

    def after(self, since: int) -> tuple[int, list[Event]] | None:
        """(newest revision, events after `since`) when every revision after `since` up to the
        newest is here and there is at least one; else None."""
        with self._lock:
            if not self._revisions or not self._revisions[0][0].number - 1 <= since < self._revisions[-1][0].number:
                return None
            events = [e for rev, evs in self._revisions if rev.number > since for e in evs]
            return self._revisions[-1][0].number, events

    def revision(self, number: int) -> Revision | None:
        """The revision `number` when it is here."""
        with self._lock:
            if not self._revisions or not self._revisions[0][0].number <= number <= self._revisions[-1][0].number:
                return None
            return self._revisions[number - self._revisions[0][0].number][0]
