"""The SQLite backend: one transaction per revision, a bounded event log of whole revisions.

What every backend must do is in `test_contract.py`; this is what is SQLite's own (the
retention of its event log, its file, the write-behind of agent reports beside it)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from stockade.controller.store import Backend, Change, open_sqlite
from stockade.controller.store.sqlite import SqliteStateStore
from stockade.errors import Gone
from stockade.model.kinds import ObjectKey

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def key(name: str) -> ObjectKey:
    return ObjectKey("Group", "shop", name)


def doc(name: str, n: int = 0) -> dict:
    return {"kind": "Group", "metadata": {"name": name, "namespace": "shop"}, "spec": {"n": n}}


def test_empty_store_is_revision_zero(tmp_path: Path) -> None:
    store = SqliteStateStore.open(tmp_path / "s.db")
    assert store.revision() == 0
    assert store.objects() == (0, [])
    assert store.events_since(0) == (0, [])


def test_commit_creates_one_numbered_revision_with_author_message_and_time(tmp_path: Path) -> None:
    store = SqliteStateStore.open(tmp_path / "s.db")
    r1 = store.commit([Change(key("a"), doc("a")), Change(key("b"), doc("b"))], "alice", "first", T0).revision
    r2 = store.commit([Change(key("a"), None)], "bob", "second", T0).revision
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
    store = SqliteStateStore.open(tmp_path / "s.db")
    with pytest.raises(TypeError):
        # The second document cannot be serialized: the first must not be stored either.
        store.commit([Change(key("a"), doc("a")), Change(key("b"), {"bad": object()})], "alice", "x", T0)
    assert store.revision() == 0
    assert store.objects() == (0, [])
    assert store.events_since(0) == (0, [])


def test_store_survives_reopening(tmp_path: Path) -> None:
    store = SqliteStateStore.open(tmp_path / "s.db")
    store.commit([Change(key("a"), doc("a"))], "alice", "x", T0)
    store.close()
    again = SqliteStateStore.open(tmp_path / "s.db")
    assert again.objects() == (1, [doc("a")])
    assert again.revisions()[0].author == "alice"


def test_event_log_keeps_whole_recent_revisions_and_old_watchers_get_gone(tmp_path: Path) -> None:
    store = SqliteStateStore.open(tmp_path / "s.db", event_retention=4)
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
    store = SqliteStateStore.open(tmp_path / "s.db", event_retention=2)
    store.commit([Change(key("a"), doc("a"))], "alice", "1", T0)
    store.commit([Change(key(n), doc(n)) for n in "bcd"], "alice", "2", T0)
    assert [e.key.name for e in store.events_since(1)[1]] == ["b", "c", "d"]
    with pytest.raises(Gone):
        store.events_since(0)


def test_watch_from_the_future_is_gone(tmp_path: Path) -> None:
    store = SqliteStateStore.open(tmp_path / "s.db")
    with pytest.raises(Gone):
        store.events_since(7)


def test_the_store_has_an_identity_made_once_at_creation(tmp_path: Path) -> None:
    first = SqliteStateStore.open(tmp_path / "s.db")
    identity = first.cluster_id
    first.close()
    again = SqliteStateStore.open(tmp_path / "s.db")
    assert again.cluster_id == identity and len(identity) == 32
    again.close()
    other = SqliteStateStore.open(tmp_path / "other.db")
    assert other.cluster_id != identity  # another database is another store
    other.close()


def test_tokens_and_audit_share_the_revisions_file_and_reports_live_beside_it(tmp_path: Path) -> None:
    backend: Backend = open_sqlite(tmp_path / "s.db")
    try:
        assert backend.audit.append([{"time": "2030-01-02T03:04:05.000+00:00", "action": "x"}]) == [1]
        assert [seq for seq, _ in backend.audit.entries()] == [1]
        backend.reports.put("hv1", {"revision": 1}, T0)
    finally:
        backend.close()
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".db") == ["s-agents.db", "s.db"]
