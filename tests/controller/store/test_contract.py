"""The store contract: what every state store backend must do, run against each of them.

`BACKENDS` names a factory per backend: SQLite (a file in the test's directory) and etcd (a
key prefix named after the test's directory on a real 3-member cluster, `conftest.etcd_cluster`;
over TLS with client certificates: `etcd-tls`). A factory opens (or reopens) the store that
lives under a test's directory, so a test can close and reopen it. Everything here goes
through `store.protocol.StateStore` and the repositories of `store.Backend`, never a
backend's own methods.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from stockade.controller.store import Backend, Change, StaleBase, StoredToken, open_etcd, open_sqlite
from stockade.controller.store.archive import final_objects
from stockade.errors import ConflictError, Gone
from stockade.model.kinds import ObjectKey
from tests.controller.store.etcd_cluster import EtcdCluster

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)

# where, event retention → the backend stored under `where` (the same one again on a second call)
BackendFactory = Callable[[Path, int], Backend]



def on_etcd(cluster: EtcdCluster) -> BackendFactory:
    """The store under a prefix of its own on `cluster`, one per directory (tests never share one)."""
    def open_at(where: Path, retention: int) -> Backend:
        prefix = "/test-" + hashlib.sha256(str(where).encode()).hexdigest()[:16] + "/"
        return open_etcd(cluster.location(prefix), event_retention=retention, flush_delay=0.05)
    return open_at


# backend name -> its factory, given the test's request (for the fixtures a backend needs)
BACKENDS: dict[str, Callable[[pytest.FixtureRequest], BackendFactory]] = {
    "sqlite": lambda request: lambda where, retention: open_sqlite(where / "stockade.db", event_retention=retention),
    "etcd": lambda request: on_etcd(request.getfixturevalue("etcd_cluster")),
}


@pytest.fixture(params=sorted(BACKENDS))
def factory(request: pytest.FixtureRequest) -> BackendFactory:
    return BACKENDS[request.param](request)


@pytest.fixture
def backend(factory: BackendFactory, tmp_path: Path) -> Iterator[Backend]:
    opened = factory(tmp_path, 10_000)
    try:
        yield opened
    finally:
        opened.close()


def key(name: str) -> ObjectKey:
    return ObjectKey("Group", "shop", name)


def doc(name: str, n: int = 0) -> dict[str, Any]:
    return {"kind": "Group", "metadata": {"name": name, "namespace": "shop"}, "spec": {"n": n}}


def put(*names: str, n: int = 0) -> list[Change]:
    return [Change(key(name), doc(name, n)) for name in names]


def snapshot(b: Backend) -> tuple[Any, ...]:
    """Everything a failed commit must leave as it was."""
    s = b.state
    return (s.revision(), s.objects(), s.events_since(0), s.revisions(), s.object_revisions(), b.audit.entries())


# ------------------------------------------------------------------ revisions

def test_revisions_are_numbered_from_one_without_gaps(backend: Backend) -> None:
    assert backend.state.revision() == 0
    numbers = [backend.state.commit(put(f"g{i}"), "alice", f"m{i}", T0).revision.number for i in range(5)]
    assert numbers == [1, 2, 3, 4, 5]
    assert [r.number for r in backend.state.revisions()] == [5, 4, 3, 2, 1]
    assert [r.number for r in backend.state.revisions(limit=2)] == [5, 4]
    assert backend.state.revision() == 5


def test_concurrent_writers_get_consecutive_revisions(backend: Backend) -> None:
    got: list[int] = []
    lock = threading.Lock()

    def writer(w: int) -> None:
        for i in range(10):
            number = backend.state.commit(put(f"w{w}-{i}"), f"writer{w}", "", T0).revision.number
            with lock:
                got.append(number)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(got) == list(range(1, 41))
    assert [r.number for r in backend.state.revisions()] == list(range(40, 0, -1))
    assert len(backend.state.objects()[1]) == 40


def test_a_commit_without_changes_is_refused(backend: Backend) -> None:
    with pytest.raises(ValueError):
        backend.state.commit([], "alice", "", T0)
    assert backend.state.revision() == 0


# -------------------------------------------------------- all or nothing

def test_a_change_set_with_a_failing_object_changes_nothing(backend: Backend) -> None:
    backend.state.commit(put("a"), "alice", "first", T0)
    before = snapshot(backend)
    with pytest.raises(TypeError):  # the second document cannot be stored: the first is not either
        backend.state.commit([Change(key("a"), doc("a", 2)), Change(key("b"), {"bad": object()})], "bob", "", T0,
                             audit=lambda rev: [{"time": "2030-01-02T03:04:05.000+00:00", "revision": rev}])
    assert snapshot(backend) == before
    assert backend.state.commit(put("c"), "carol", "", T0).revision.number == 2  # no number was used up


def test_a_stale_version_in_a_change_set_changes_nothing(backend: Backend) -> None:
    backend.state.commit(put("a", "b"), "alice", "", T0)
    backend.state.commit(put("b", n=1), "alice", "", T0)
    before = snapshot(backend)
    with pytest.raises(ConflictError, match="shop/b"):
        backend.state.commit(put("a", "b", n=2), "bob", "", T0, expected={key("a"): "1", key("b"): "1"})
    assert snapshot(backend) == before


# ------------------------------------------------------- compare-and-swap

def test_commit_checks_resource_versions(backend: Backend) -> None:
    first = backend.state.commit(put("a"), "alice", "", T0).revision.number
    assert backend.state.object_revisions() == {key("a"): first}
    second = backend.state.commit(put("a", n=1), "bob", "", T0, expected={key("a"): str(first)})
    assert backend.state.object_revisions() == {key("a"): second.revision.number}
    before = snapshot(backend)
    with pytest.raises(ConflictError, match="stale"):
        backend.state.commit(put("a", n=2), "carol", "", T0, expected={key("a"): str(first)})
    with pytest.raises(ConflictError, match="does not exist"):
        backend.state.commit(put("x"), "carol", "", T0, expected={key("x"): "1"})
    assert snapshot(backend) == before


def test_two_writers_racing_on_one_object_exactly_one_wins(backend: Backend) -> None:
    version = str(backend.state.commit(put("a"), "alice", "", T0).revision.number)
    start = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def writer(name: str, n: int) -> None:
        start.wait()
        try:
            backend.state.commit(put("a", n=n), name, "", T0, expected={key("a"): version})
            outcomes[name] = "won"
        except ConflictError:
            outcomes[name] = "conflict"

    threads = [threading.Thread(target=writer, args=(name, n)) for name, n in (("bob", 1), ("carol", 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes.values()) == ["conflict", "won"]
    winner = next(name for name, outcome in outcomes.items() if outcome == "won")
    assert backend.state.revision() == 2 and backend.state.revisions()[0].author == winner
    assert backend.state.objects()[1] == [doc("a", {"bob": 1, "carol": 2}[winner])]


# ----------------------------------------------------------------- events

def test_events_since_a_revision_in_commit_order(backend: Backend) -> None:
    committed = backend.state.commit(put("a", "b"), "alice", "", T0)
    assert [(e.revision, e.seq, e.type, e.key.name) for e in committed.events] == [(1, 0, "PUT", "a"),
                                                                                (1, 1, "PUT", "b")]
    backend.state.commit([Change(key("a"), None), Change(key("c"), doc("c"))], "alice", "", T0)
    rev, events = backend.state.events_since(0)
    assert rev == 2
    assert [(e.revision, e.seq, e.type, e.key.name, e.document) for e in events] == [
        (1, 0, "PUT", "a", doc("a")), (1, 1, "PUT", "b", doc("b")),
        (2, 0, "DELETE", "a", None), (2, 1, "PUT", "c", doc("c"))]
    assert backend.state.events_since(1) == (2, events[2:])
    assert backend.state.events_since(2) == (2, [])


def test_events_too_old_or_from_the_future_are_gone(factory: BackendFactory, tmp_path: Path) -> None:
    small = factory(tmp_path, 2)
    try:
        for i in range(1, 5):
            small.state.commit(put("a", "b", n=i), "alice", str(i), T0)
        assert small.state.compacted() >= 1
        with pytest.raises(Gone):
            small.state.events_since(0)
        rev, events = small.state.events_since(3)  # the newest revision is always kept
        assert rev == 4 and [e.revision for e in events] == [4, 4]
        with pytest.raises(Gone):
            small.state.events_since(5)
        assert small.state.objects()[1] == [doc("a", 4), doc("b", 4)]  # objects are not compacted
    finally:
        small.close()


# ---------------------------------------------------------------- history

def test_history_keeps_every_revision_and_the_objects_it_changed(factory: BackendFactory, tmp_path: Path) -> None:
    b = factory(tmp_path, 1)  # the event window keeps only the newest revision; history keeps all
    try:
        b.state.commit(put("a", "b"), "alice", "one", T0)
        b.state.commit([Change(key("a"), None)], "bob", "two", T0)
        b.state.commit(put("b", n=3), "carol", "three", T0)
        assert [(r.number, r.author, r.message, r.time) for r in b.state.revisions()] == [
            (3, "carol", "three", "2030-01-02T03:04:05.000+00:00"),
            (2, "bob", "two", "2030-01-02T03:04:05.000+00:00"),
            (1, "alice", "one", "2030-01-02T03:04:05.000+00:00")]
        assert b.state.changes_of([1, 2, 3]) == {1: [("PUT", key("a")), ("PUT", key("b"))],
                                                2: [("DELETE", key("a"))], 3: [("PUT", key("b"))]}
        assert b.state.changes_of([]) == {}
        assert b.state.objects_at(0) == []
        assert b.state.objects_at(1) == [doc("a"), doc("b")]
        assert b.state.objects_at(2) == [doc("b")]
        assert b.state.objects_at(3) == [doc("b", 3)] == b.state.objects()[1]
        with pytest.raises(ValueError):
            b.state.objects_at(4)
        assert b.state.revision_info(2) == b.state.revisions()[1]
        assert b.state.revision_info(0) is None and b.state.revision_info(9) is None
    finally:
        b.close()


def test_objects_filter_by_kind_namespace_and_name(backend: Backend) -> None:
    ns = {"kind": "Namespace", "metadata": {"name": "shop"}}
    backend.state.commit([Change(ObjectKey("Namespace", "", "shop"), ns), *put("a", "b")], "alice", "", T0)
    assert backend.state.objects("Group") == (1, [doc("a"), doc("b")])
    assert backend.state.objects("Group", "shop", "b") == (1, [doc("b")])
    assert backend.state.objects("Namespace", "") == (1, [ns])
    assert backend.state.objects("Group", "other") == (1, [])


# --------------------------------------------------------------- identity

def test_cluster_id_is_stable_across_reopening(factory: BackendFactory, tmp_path: Path) -> None:
    first = factory(tmp_path / "one", 10)
    identity = first.state.cluster_id
    first.state.commit(put("a"), "alice", "", T0)
    first.close()
    again = factory(tmp_path / "one", 10)
    try:
        assert again.state.cluster_id == identity and identity
        assert again.state.objects() == (1, [doc("a")])
    finally:
        again.close()
    other = factory(tmp_path / "two", 10)
    try:
        assert other.state.cluster_id != identity
    finally:
        other.close()


# ------------------------------------------------------------------ audit

def test_the_audit_entry_is_committed_with_its_revision(backend: Backend) -> None:
    backend.audit.append([{"time": "2030-01-02T03:04:04.000+00:00", "action": "request"}])

    def entry(revision: int) -> list[dict[str, Any]]:
        return [{"time": "2030-01-02T03:04:05.000+00:00", "action": "apply", "revision": revision}]

    committed = backend.state.commit(put("a"), "alice", "", T0, audit=entry)
    assert committed.revision.number == 1 and len(committed.audit_seqs) == 1
    stored = backend.audit.entries()
    assert [e["action"] for _, e in stored] == ["request", "apply"]
    assert stored[-1] == (committed.audit_seqs[0], entry(1)[0])
    before = snapshot(backend)
    with pytest.raises(ConflictError):  # a commit refused stores no audit entry either
        backend.state.commit(put("a", n=1), "bob", "", T0, expected={key("a"): "7"}, audit=entry)
    assert snapshot(backend) == before
    assert [e["revision"] for _, e in backend.audit.entries(since="2030-01-02T03:04:05.000+00:00")] == [1]


# ----------------------------------------------------- several writers, one store

def test_two_replicas_racing_on_one_object_exactly_one_wins(factory: BackendFactory, tmp_path: Path) -> None:
    """Two controllers on one store (replicas on etcd; two handles on one file for SQLite)."""
    replicas = [factory(tmp_path, 10_000), factory(tmp_path, 10_000)]
    try:
        version = str(replicas[0].state.commit(put("a"), "alice", "", T0).revision.number)
        start = threading.Barrier(2)
        outcomes: dict[str, str] = {}

        def writer(name: str, replica: Backend, n: int) -> None:
            start.wait()
            try:
                outcomes[name] = str(replica.state.commit(put("a", n=n), name, "", T0,
                                                          expected={key("a"): version}).revision.number)
            except ConflictError:
                outcomes[name] = "conflict"

        threads = [threading.Thread(target=writer, args=(name, replica, n))
                   for name, replica, n in (("bob", replicas[0], 1), ("carol", replicas[1], 2))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(outcomes.values()) == ["2", "conflict"]
        winner = next(name for name, outcome in outcomes.items() if outcome == "2")
        for replica in replicas:  # both see the one winner, at revision 2, and nothing else
            assert [(r.number, r.author) for r in replica.state.revisions()] == [(2, winner), (1, "alice")]
            assert replica.state.objects() == (2, [doc("a", {"bob": 1, "carol": 2}[winner])])
    finally:
        for replica in replicas:
            replica.close()


def test_commits_from_two_replicas_get_gap_free_revisions(factory: BackendFactory, tmp_path: Path) -> None:
    replicas = [factory(tmp_path, 10_000), factory(tmp_path, 10_000)]
    got: list[int] = []
    lock = threading.Lock()

    def writer(w: int) -> None:
        replica = replicas[w % 2]
        for i in range(8):
            number = replica.state.commit(put(f"w{w}-{i}"), f"writer{w}", "", T0).revision.number
            with lock:
                got.append(number)

    try:
        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(got) == list(range(1, 33))  # none lost, none twice, no gap
        for replica in replicas:
            assert [r.number for r in replica.state.revisions()] == list(range(32, 0, -1))
            assert len(replica.state.objects()[1]) == 32
            rev, events = replica.state.events_since(0)
            assert rev == 32 and [e.revision for e in events] == list(range(1, 33))
    finally:
        for replica in replicas:
            replica.close()


def test_a_commit_planned_on_an_older_revision_is_refused(backend: Backend) -> None:
    backend.state.commit(put("a"), "alice", "", T0)
    backend.state.commit(put("b"), "bob", "", T0, base=1)  # planned on revision 1: it still is
    before = snapshot(backend)
    with pytest.raises(StaleBase, match="revision 2"):
        backend.state.commit(put("c"), "carol", "", T0, base=1,
                             audit=lambda rev: [{"time": "2030-01-02T03:04:05.000+00:00", "revision": rev}])
    assert snapshot(backend) == before


def test_tokens_and_audit_entries_are_shared_by_every_replica(factory: BackendFactory, tmp_path: Path) -> None:
    one, two = factory(tmp_path, 10), factory(tmp_path, 10)
    try:
        token = StoredToken("t1", "ab" * 32, "ci", "admin", ("shop",), None, "2030-01-01T00:00:00.000+00:00",
                            "alice", None, None)
        one.tokens.add(token)
        assert two.tokens.all() == [token]
        two.tokens.revoke_hash("ab" * 32, "2030-01-02T00:00:00.000+00:00")
        two.tokens.revoke_hash("cd" * 32, "2030-01-03T00:00:00.000+00:00")  # a tokens-file token
        two.tokens.revoke_hash("ab" * 32, "2030-01-04T00:00:00.000+00:00")  # again: changes nothing
        assert one.tokens.revoked_hashes() == {"ab" * 32, "cd" * 32}
        assert [t.revoked for t in one.tokens.all()] == ["2030-01-02T00:00:00.000+00:00"]
        first = one.audit.append([{"time": "2030-01-01T00:00:00.000+00:00", "n": 1}])
        second = two.audit.append([{"time": "2030-01-01T00:00:01.000+00:00", "n": 2},
                                   {"time": "2030-01-01T00:00:02.000+00:00", "n": 3}])
        assert first[0] < second[0] < second[1]
        assert [e["n"] for _, e in one.audit.entries()] == [1, 2, 3]
        assert [e["n"] for _, e in two.audit.entries(since="2030-01-01T00:00:01.000+00:00", limit=1)] == [3]
    finally:
        one.close()
        two.close()


# ------------------------------------------------------- whole stores: backup, restore, migrate

def _fill(b: Backend, retention_window: bool = False) -> None:
    """A store with history worth keeping: puts, an update, a delete, tokens, a revocation, audit."""
    audit = lambda rev: [{"time": "2030-01-02T03:04:05.000+00:00", "action": "apply", "revision": rev}]  # noqa: E731
    b.state.commit(put("a", "b"), "alice", "first", T0, audit=audit)
    b.state.commit(put("a", n=1), "bob", "update a", T0, audit=audit)
    b.state.commit([Change(key("b"), None)], "carol", "delete b", T0, audit=audit)
    b.state.commit(put("c", "d", n=2), "alice", "more", T0)
    b.tokens.add(StoredToken("t1", "ab" * 32, "ci", "tenant", ("shop",), None, "2030-01-01T00:00:00.000+00:00",
                             "alice", "2031-01-01T00:00:00.000+00:00", None))
    b.tokens.revoke_hash("cd" * 32, "2030-01-03T00:00:00.000+00:00")


def everything(b: Backend) -> tuple[Any, ...]:
    """What a restored store must answer exactly as the original did (its identity aside)."""
    s = b.state
    n = s.revision()
    return (n, s.objects(), s.object_revisions(), s.revisions(), [s.objects_at(r) for r in range(n + 1)],
            s.changes_of(list(range(1, n + 1))), s.events_since(s.compacted()), s.compacted(), b.tokens.all(),
            b.tokens.revoked_hashes(), b.audit.entries())


def test_a_dump_loaded_into_an_empty_store_answers_as_the_original(factory: BackendFactory, tmp_path: Path) -> None:
    original = factory(tmp_path / "a", 3)  # a small event window: some events are history only
    copy = factory(tmp_path / "b", 3)
    try:
        _fill(original)
        dump = original.archive.dump("2030-01-05T00:00:00.000+00:00")
        assert dump.revision == 4 and [r.revision.number for r in dump.revisions] == [1, 2, 3, 4]
        assert dump.objects == 3 and dump.cluster_id == original.state.cluster_id
        copy.archive.load(dump)
        assert everything(copy) == everything(original)
        assert copy.state.cluster_id == original.state.cluster_id
        with pytest.raises(Gone):  # the event window is the original's too
            copy.state.events_since(0)
        # The restored store goes on where the original stood: the next number, the next audit seq.
        seq_before = max(seq for seq, _ in copy.audit.entries())
        committed = copy.state.commit(put("e"), "dave", "after", T0,
                                      audit=lambda rev: [{"time": "2030-01-06T00:00:00.000+00:00", "revision": rev}])
        assert committed.revision.number == 5 and committed.audit_seqs[0] > seq_before
        assert copy.state.events_since(4) == (5, list(committed.events))
    finally:
        original.close()
        copy.close()


def test_a_store_reopened_after_a_load_keeps_its_identity_and_lineage(factory: BackendFactory, tmp_path: Path) -> None:
    original = factory(tmp_path / "a", 100)
    _fill(original)
    dump = dataclasses.replace(original.archive.dump(""), cluster_id="restored-id", lineage=("older", "original"))
    original.close()
    copy = factory(tmp_path / "b", 100)
    copy.archive.load(dump)
    assert (copy.state.cluster_id, copy.state.lineage) == ("restored-id", ("older", "original"))
    copy.close()
    again = factory(tmp_path / "b", 100)
    try:
        assert (again.state.cluster_id, again.state.lineage) == ("restored-id", ("older", "original"))
        assert again.state.revision() == 4
    finally:
        again.close()


def test_a_load_into_a_store_that_holds_one_is_refused_and_writes_nothing(factory: BackendFactory,
                                                                          tmp_path: Path) -> None:
    source, target = factory(tmp_path / "a", 100), factory(tmp_path / "b", 100)
    try:
        _fill(source)
        dump = source.archive.dump("")
        target.state.commit(put("x"), "eve", "already here", T0)
        before = (everything(target), target.state.cluster_id)
        with pytest.raises(ConflictError, match="holds a store already.*nothing was written"):
            target.archive.load(dump)
        assert (everything(target), target.state.cluster_id) == before
        # A store with only a token (a controller bootstrapped on it) is no empty store either.
        other = factory(tmp_path / "c", 100)
        try:
            other.tokens.revoke_hash("ef" * 32, "2030-01-01T00:00:00.000+00:00")
            with pytest.raises(ConflictError, match="revocations"):
                other.archive.load(dump)
            assert other.state.revision() == 0
        finally:
            other.close()
    finally:
        source.close()
        target.close()


def test_a_dump_taken_while_writers_commit_is_one_revision(factory: BackendFactory, tmp_path: Path) -> None:
    writer_side, reader_side = factory(tmp_path, 10_000), factory(tmp_path, 10_000)
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set() and i < 400:
            writer_side.state.commit(put(f"w{i % 7}", n=i), "writer", "", T0,
                                     audit=lambda rev: [{"time": "2030-01-02T03:04:05.000+00:00", "revision": rev}])
            i += 1

    thread = threading.Thread(target=write)
    thread.start()
    try:
        dumps = []
        for _ in range(5):
            dumps.append(reader_side.archive.dump(""))
    finally:
        stop.set()
        thread.join(60)
    try:
        for dump in dumps:
            numbers = [r.revision.number for r in dump.revisions]
            assert numbers == list(range(1, dump.revision + 1))
            # The audit entries of exactly those revisions: none of a revision the dump lacks.
            assert [e["revision"] for _, e in dump.audit] == numbers
            replayed = sorted((k.name, doc) for k, (_, doc) in final_objects(dump.revisions).items())
            assert replayed == sorted((d["metadata"]["name"], d) for d in writer_side.state.objects_at(dump.revision))
            assert dump.objects == len(replayed)
    finally:
        writer_side.close()
        reader_side.close()


def test_a_store_migrates_between_backends_keeping_revision_numbers(etcd_cluster: EtcdCluster,
                                                                    tmp_path: Path) -> None:
    """SQLite -> etcd -> SQLite through `controller.backups.migrate`: every answer as before,
    the identity too (agents go on watching from the revision they have)."""
    from stockade.controller.backups import migrate
    from stockade.controller.store.location import SqliteLocation

    on_sqlite = SqliteLocation(tmp_path / "source.db")
    source = open_sqlite(on_sqlite.path)
    _fill(source)
    expected = everything(source)
    identity = source.state.cluster_id
    source.close()
    on_etcd_location = etcd_cluster.location("/migrate-" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:16] + "/")
    moved = migrate(on_sqlite, on_etcd_location)
    assert moved.cluster_id == identity
    target = open_etcd(on_etcd_location)
    try:
        got = everything(target)
        # The same, but the one audit entry that says the migration happened.
        assert got[:-1] == expected[:-1]
        assert got[-1][:-1] == expected[-1] and got[-1][-1][1]["action"] == "store.migrate"
        assert target.state.cluster_id == identity and target.state.lineage == ()
        assert target.state.commit(put("z"), "zed", "", T0).revision.number == 5
    finally:
        target.close()
    back = SqliteLocation(tmp_path / "back.db")
    migrate(on_etcd_location, back)
    again = open_sqlite(back.path)
    try:
        assert again.state.cluster_id == identity and again.state.revision() == 5
        assert [r.number for r in again.state.revisions()] == [5, 4, 3, 2, 1]
    finally:
        again.close()
    # A target that holds a store is refused, and the source is left as it was.
    with pytest.raises(ConflictError, match="holds a store already"):
        migrate(on_sqlite, back)


def test_agent_reports_with_rule_counters_are_kept_whole_across_reopening(factory: BackendFactory,
                                                                          tmp_path: Path) -> None:
    """A burst of reports that each carry a host's rule counters (about 1.5 MB together: more than
    one etcd transaction) comes back exactly as it was given, from a reopened store."""
    sent = {f"hv{h}": {"revision": 3, "inSync": True, "ruleCountersOmitted": 0,
                       "ruleCounters": {f"ns/policy-{h}/rule-{i}": {"ingress": {"packets": i, "bytes": 60 * i}}
                                        for i in range(1_500)}}
            for h in range(12)}
    first = factory(tmp_path, 10_000)
    try:
        for host, report in sent.items():
            first.reports.put(host, report, T0)
    finally:
        first.close()  # saves what was not written yet
    again = factory(tmp_path, 10_000)
    try:
        assert {r.host: r.report for r in again.reports.all()} == sent
    finally:
        again.close()
