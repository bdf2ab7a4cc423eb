"""The SQLite store: one transaction per revision, a bounded event log of whole revisions."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from stockade.controller.agent_reports import AgentRecord, AgentReports
from stockade.controller.store import RECENT_REVISIONS, Change, Store
from stockade.errors import Gone
from stockade.model.kinds import ObjectKey

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def key(name: str) -> ObjectKey:
    return ObjectKey("Group", "shop", name)


def doc(name: str, n: int = 0) -> dict:
    return {"kind": "Group", "metadata": {"name": name, "namespace": "shop"}, "spec": {"n": n}}


def test_empty_store_is_revision_zero(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    assert store.revision() == 0
    assert store.objects() == (0, [])
    assert store.events_since(0) == (0, [])


def test_commit_creates_one_numbered_revision_with_author_message_and_time(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    r1 = store.commit([Change(key("a"), doc("a")), Change(key("b"), doc("b"))], "alice", "first", T0)
    r2 = store.commit([Change(key("a"), None)], "bob", "second", T0)
    assert (r1.number, r2.number) == (1, 2)
    assert [(r.number, r.author, r.message, r.time) for r in store.revisions()] == [
        (2, "bob", "second", "2030-01-02T03:04:05.000+00:00"),
        (1, "alice", "first", "2030-01-02T03:04:05.000+00:00")]
    assert store.objects() == (2, [doc("b")])
    rev, events = store.events_since(0)
    assert rev == 2
    assert [(e.revision, e.seq, e.type, e.key.name) for e in events] == [
        (1, 0, "PUT", "a"), (1, 1, "PUT", "b"), (2, 0, "DELETE", "a")]


def test_failed_commit_leaves_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    with pytest.raises(TypeError):
        # The second document cannot be serialized: the first must not be stored either.
        store.commit([Change(key("a"), doc("a")), Change(key("b"), {"bad": object()})], "alice", "x", T0)
    assert store.revision() == 0
    assert store.objects() == (0, [])
    assert store.events_since(0) == (0, [])


def test_store_survives_reopening(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.commit([Change(key("a"), doc("a"))], "alice", "x", T0)
    store.close()
    again = Store(tmp_path / "s.db")
    assert again.objects() == (1, [doc("a")])
    assert again.revisions()[0].author == "alice"


def test_event_log_keeps_whole_recent_revisions_and_old_watchers_get_gone(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db", event_retention=4)
    for i in range(1, 6):  # five revisions of two events each
        store.commit([Change(key("a"), doc("a", i)), Change(key("b"), doc("b", i))], "alice", str(i), T0)
    assert store.compacted() == 3  # revisions 4 and 5 (four events) are kept
    rev, events = store.events_since(3)
    assert rev == 5
    assert [e.revision for e in events] == [4, 4, 5, 5]
    with pytest.raises(Gone):
        store.events_since(2)
    # Objects are unaffected by compaction.
    assert store.objects()[1] == [doc("a", 5), doc("b", 5)]


def test_a_revision_bigger_than_the_retention_is_still_kept(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db", event_retention=2)
    store.commit([Change(key("a"), doc("a"))], "alice", "1", T0)
    store.commit([Change(key(n), doc(n)) for n in "bcd"], "alice", "2", T0)
    assert [e.key.name for e in store.events_since(1)[1]] == ["b", "c", "d"]
    with pytest.raises(Gone):
        store.events_since(0)


def test_watch_from_the_future_is_gone(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    with pytest.raises(Gone):
        store.events_since(7)


def test_agent_reports_are_kept_per_host(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.put_agent("hv1", {"revision": 1}, T0)
    store.put_agent("hv1", {"revision": 2}, T0)
    [record] = store.agents()
    assert (record.host, record.report, record.last_seen) == ("hv1", {"revision": 2}, T0)
    assert store.revision() == 0  # reports are not revisions


def test_recent_revisions_info_from_memory_equals_the_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    for i in range(RECENT_REVISIONS + 5):
        store.commit([Change(key(f"g{i}"), doc(f"g{i}", i))], "alice", f"change {i}", T0)
    from_file = Store(tmp_path / "s.db")  # a new object: nothing committed through it, all from SQLite
    for number in (0, 1, 5, RECENT_REVISIONS, RECENT_REVISIONS + 5, RECENT_REVISIONS + 6):
        assert store.revision_info(number) == from_file.revision_info(number), number
    assert store.revision_info(RECENT_REVISIONS + 5).message == f"change {RECENT_REVISIONS + 4}"


def test_agent_reports_are_saved_behind_and_survive_a_restart(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.put_agent("hv1", {"revision": 3}, T0)
    store.put_agent("hv2", {"revision": 4}, T0)
    store.close()  # saves what was not written yet
    reopened = Store(tmp_path / "s.db")
    assert [(r.host, r.report) for r in reopened.agents()] == [("hv1", {"revision": 3}), ("hv2", {"revision": 4})]


def test_a_burst_of_reports_is_one_save_and_a_failed_save_is_retried() -> None:
    saves: list[list[str]] = []
    fail = [True]

    def save(batch: list[AgentRecord]) -> None:
        if fail[0]:
            fail[0] = False
            raise OSError("disk full")
        saves.append([r.host for r in batch])

    reports = AgentReports([], save, flush_delay=1.0)
    with pytest.raises(OSError):  # close() below must not be the first save: fail one now
        reports.put(AgentRecord("hv0", {"revision": 1}, T0))
        reports.flush()
    for i in range(1, 21):
        reports.put(AgentRecord(f"hv{i}", {"revision": 1}, T0))
    assert len(reports.all()) == 21  # readers see every report at once
    deadline = time.monotonic() + 10
    while not saves and time.monotonic() < deadline:
        time.sleep(0.05)
    reports.close()
    assert saves[0] == sorted(f"hv{i}" for i in range(21))  # one batch, with the failed one in it
    assert sum(len(batch) for batch in saves) == 21


def test_recent_events_from_memory_equal_the_store_and_never_answer_empty(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    assert store.recent_events(0) is None  # nothing committed through this object yet
    store.commit([Change(key("a"), doc("a"))], "t", "one", T0)
    store.commit([Change(key("b"), doc("b")), Change(key("a"), None)], "t", "two", T0)
    for since in (0, 1):
        assert store.recent_events(since) == store.events_since(since)
    assert store.recent_events(2) is None  # nothing newer: the store is asked
    store.close()


def test_recent_events_cover_only_the_newest_consecutive_revisions(tmp_path: Path) -> None:
    from stockade.controller.store import RECENT_REVISIONS

    store = Store(tmp_path / "s.db")
    for n in range(RECENT_REVISIONS + 3):
        store.commit([Change(key("a"), doc("a", n))], "t", f"r{n}", T0)
    newest = RECENT_REVISIONS + 3
    assert store.recent_events(2) is None  # fell out of memory: the store still has them
    assert store.events_since(2)[0] == newest
    assert store.recent_events(3) == store.events_since(3)
    # A revision committed through another Store object on the same file: a gap for this one.
    other = Store(tmp_path / "s.db")
    other.commit([Change(key("b"), doc("b"))], "t", "elsewhere", T0)
    store.commit([Change(key("c"), doc("c"))], "t", "after the gap", T0)
    assert store.recent_events(newest) is None
    assert store.recent_events(newest + 1) == store.events_since(newest + 1)
    other.close()
    store.close()


def test_a_watch_answer_is_rendered_once_and_matches_its_schema(tmp_path: Path) -> None:
    import json

    from stockade.controller.records import WatchAnswers
    from stockade.controller.schemas import WatchResponse

    store = Store(tmp_path / "s.db")
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


def test_the_store_has_an_identity_made_once_at_creation(tmp_path: Path) -> None:
    first = Store(tmp_path / "s.db")
    identity = first.cluster_id
    first.close()
    again = Store(tmp_path / "s.db")
    assert again.cluster_id == identity and len(identity) == 32
    again.close()
    other = Store(tmp_path / "other.db")
    assert other.cluster_id != identity  # another database is another store
    other.close()


def test_recent_events_hold_a_bounded_number_of_events(tmp_path: Path) -> None:
    from stockade.controller.store import RECENT_EVENTS

    store = Store(tmp_path / "s.db")
    store.commit([Change(key("a"), doc("a"))], "t", "small", T0)
    store.commit([Change(key(f"g{i}"), doc(f"g{i}")) for i in range(RECENT_EVENTS + 1)], "t", "large", T0)
    assert store.recent_events(1) is None and store.recent_events(0) is None  # read from the store
    assert len(store.events_since(1)[1]) == RECENT_EVENTS + 1
    store.commit([Change(key("b"), doc("b"))], "t", "small again", T0)
    assert store.recent_events(2) == store.events_since(2)
    store.close()
