"""The event tail (above the store seam): the newest revisions committed here answer watchers
from memory, exactly as the store would, and never with nothing."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from stockade.controller.event_tail import RECENT_EVENTS, RECENT_REVISIONS, EventTail
from stockade.controller.records import WatchAnswers
from stockade.controller.schemas import WatchResponse
from stockade.controller.store import Change, Revision, StateStore
from stockade.controller.store.sqlite import SqliteStateStore
from stockade.model.kinds import ObjectKey

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def key(name: str) -> ObjectKey:
    return ObjectKey("Group", "shop", name)


def doc(name: str, n: int = 0) -> dict:
    return {"kind": "Group", "metadata": {"name": name, "namespace": "shop"}, "spec": {"n": n}}


def commit(store: StateStore, tail: EventTail, changes: Sequence[Change], message: str) -> Revision:
    """What the service does: commit, then hand the committed revision to the tail."""
    committed = store.commit(changes, "t", message, T0)
    tail.add(committed.revision, list(committed.events))
    return committed.revision


def test_recent_revisions_info_from_memory_equals_the_store(tmp_path: Path) -> None:
    store, tail = SqliteStateStore.open(tmp_path / "s.db"), EventTail()
    for i in range(RECENT_REVISIONS + 5):
        commit(store, tail, [Change(key(f"g{i}"), doc(f"g{i}", i))], f"change {i}")
    from_file = SqliteStateStore.open(tmp_path / "s.db")  # nothing committed through it: all from SQLite

    def info(number: int) -> Revision | None:  # as ControllerService.revision_info
        known = tail.revision(number)
        return known if known is not None else store.revision_info(number)

    for number in (0, 1, 5, RECENT_REVISIONS, RECENT_REVISIONS + 5, RECENT_REVISIONS + 6):
        assert info(number) == from_file.revision_info(number), number
    assert tail.revision(RECENT_REVISIONS + 5) is not None  # the newest did come from memory
    assert info(RECENT_REVISIONS + 5).message == f"change {RECENT_REVISIONS + 4}"  # type: ignore[union-attr]


def test_recent_events_from_memory_equal_the_store_and_never_answer_empty(tmp_path: Path) -> None:
    store, tail = SqliteStateStore.open(tmp_path / "s.db"), EventTail()
    assert tail.after(0) is None  # nothing committed through this controller yet
    commit(store, tail, [Change(key("a"), doc("a"))], "one")
    commit(store, tail, [Change(key("b"), doc("b")), Change(key("a"), None)], "two")
    for since in (0, 1):
        assert tail.after(since) == store.events_since(since)
    assert tail.after(2) is None  # nothing newer: the store is asked
    store.close()


def test_recent_events_cover_only_the_newest_consecutive_revisions(tmp_path: Path) -> None:
    store, tail = SqliteStateStore.open(tmp_path / "s.db"), EventTail()
    for n in range(RECENT_REVISIONS + 3):
        commit(store, tail, [Change(key("a"), doc("a", n))], f"r{n}")
    newest = RECENT_REVISIONS + 3
    assert tail.after(2) is None  # fell out of memory: the store still has them
    assert store.events_since(2)[0] == newest
    assert tail.after(3) == store.events_since(3)
    # A revision committed by another writer on the same file: a gap for this tail.
    other = SqliteStateStore.open(tmp_path / "s.db")
    other.commit([Change(key("b"), doc("b"))], "t", "elsewhere", T0)
    commit(store, tail, [Change(key("c"), doc("c"))], "after the gap")
    assert tail.after(newest) is None
    assert tail.after(newest + 1) == store.events_since(newest + 1)
    other.close()
    store.close()


def test_recent_events_hold_a_bounded_number_of_events(tmp_path: Path) -> None:
    store, tail = SqliteStateStore.open(tmp_path / "s.db"), EventTail()
    commit(store, tail, [Change(key("a"), doc("a"))], "small")
    commit(store, tail, [Change(key(f"g{i}"), doc(f"g{i}")) for i in range(RECENT_EVENTS + 1)], "large")
    assert tail.after(1) is None and tail.after(0) is None  # read from the store
    assert len(store.events_since(1)[1]) == RECENT_EVENTS + 1
    commit(store, tail, [Change(key("b"), doc("b"))], "small again")
    assert tail.after(2) == store.events_since(2)
    store.close()


def test_a_watch_answer_is_rendered_once_and_matches_its_schema(tmp_path: Path) -> None:
    store = SqliteStateStore.open(tmp_path / "s.db")
    store.commit([Change(key("a"), doc("a"))], "t", "one", T0)
    answers = WatchAnswers(store.cluster_id, size=2)
    first = answers.render(0, *store.events_since(0))
    assert answers.render(0, *store.events_since(0)) is first  # the second watcher gets the same bytes
    parsed = json.loads(first)
    assert WatchResponse.model_validate(parsed).revision == 1
    assert parsed["events"][0] == {"revision": 1, "type": "PUT", "kind": "Group", "namespace": "shop",
                                   "name": "a", "object": doc("a")}
    assert json.loads(answers.render(1, 1, [])) == {"revision": 1, "clusterId": store.cluster_id, "events": []}
    store.close()
