"""The etcd backend beyond the contract: TLS, transaction limits, lost answers, the `--store`
option, and two controller services (replicas) on one etcd store. Real etcd processes
(`conftest.etcd_cluster`), no root."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from stockade.controller.config import ControllerConfig
from stockade.controller.main import store_config
from stockade.controller.backups import migrate
from stockade.controller.store import Change, EtcdLocation, SqliteLocation, open_etcd, open_sqlite, parse_store
from stockade.controller.store.etcd_kv import EtcdKV, OutcomeUnknown, TxnResult
from stockade.controller.store.location import Endpoint, TlsFiles
from stockade.controller.wiring import service_on
from stockade.errors import ControllerUnavailable, PayloadTooLarge
from stockade.model.kinds import ObjectKey
from tests.controller.store.etcd_cluster import EtcdCluster

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def prefix_for(where: Path) -> str:
    return "/test-" + hashlib.sha256(str(where).encode()).hexdigest()[:16] + "/"


def group(name: str, n: int = 0) -> Change:
    return Change(ObjectKey("Group", "shop", name),
                  {"apiVersion": "stockade.io/v1", "kind": "Group", "metadata": {"name": name, "namespace": "shop"},
                   "spec": {"selector": {"matchLabels": {"n": str(n)}}}})


@pytest.fixture(scope="module")
def small_etcd() -> Iterator[EtcdCluster]:
    """One member with etcd's default limits (128 ops, 1.5 MiB per transaction)."""
    cluster = EtcdCluster(size=1, limits=False).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_the_store_works_over_tls_with_a_client_certificate(etcd_tls_cluster: EtcdCluster, tmp_path: Path) -> None:
    location = etcd_tls_cluster.location(prefix_for(tmp_path))
    backend = open_etcd(location)
    try:
        assert backend.state.commit([group("a")], "alice", "", T0).revision.number == 1
        assert backend.state.objects()[0] == 1
    finally:
        backend.close()
    assert location.tls is not None and location.tls.cert
    without_cert = EtcdLocation(location.endpoints, TlsFiles(location.tls.ca), location.prefix)
    with pytest.raises(ControllerUnavailable, match="cannot be reached"):  # the members want a certificate
        open_etcd(without_cert)


def test_an_apply_of_ten_thousand_objects_is_one_revision(etcd_cluster: EtcdCluster, tmp_path: Path) -> None:
    backend = open_etcd(etcd_cluster.location(prefix_for(tmp_path)))
    try:
        committed = backend.state.commit([group(f"g{i:05d}", i) for i in range(10_000)], "alice", "big", T0)
        assert committed.revision.number == 1 and len(committed.events) == 10_000
        rev, docs = backend.state.objects("Group")
        assert rev == 1 and len(docs) == 10_000 and docs[-1]["spec"]["selector"] == {"matchLabels": {"n": "9999"}}
        assert backend.state.changes_of([1])[1][0] == ("PUT", ObjectKey("Group", "shop", "g00000"))
    finally:
        backend.close()


def test_a_change_beyond_the_clusters_limits_is_refused_clearly(small_etcd: EtcdCluster, tmp_path: Path) -> None:
    backend = open_etcd(small_etcd.location(prefix_for(tmp_path)))
    try:
        with pytest.raises(PayloadTooLarge, match="--max-txn-ops"):
            backend.state.commit([group(f"g{i}") for i in range(200)], "alice", "", T0)
        assert backend.state.revision() == 0  # nothing of it was stored
        assert backend.state.commit([group("a")], "alice", "", T0).revision.number == 1
    finally:
        backend.close()


def test_a_commit_whose_answer_was_lost_is_found_by_reading_back(etcd_cluster: EtcdCluster, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    backend = open_etcd(etcd_cluster.location(prefix_for(tmp_path)))
    real_txn = EtcdKV.txn
    lost: list[bool] = []

    def answer_lost(self: EtcdKV, *args: Any, **kwargs: Any) -> TxnResult:
        result = real_txn(self, *args, **kwargs)
        if not lost:
            lost.append(True)
            raise OutcomeUnknown("the answer was lost on the way back")
        return result

    try:
        monkeypatch.setattr(EtcdKV, "txn", answer_lost)
        committed = backend.state.commit([group("a")], "alice", "once", T0)
        assert lost and committed.revision.number == 1
        assert [(r.number, r.message) for r in backend.state.revisions()] == [(1, "once")]  # not twice
    finally:
        monkeypatch.undo()
        backend.close()


def test_two_controller_services_on_one_etcd_store(etcd_cluster: EtcdCluster, tmp_path: Path) -> None:
    """Replica B plans a write, replica A commits first: B plans again on A's revision (no 409,
    no lost update), and each sees the other's objects."""
    config = ControllerConfig(etcd=etcd_cluster.location(prefix_for(tmp_path)))
    a, b = (service_on(config, open_etcd(config.etcd)) for _ in range(2))  # type: ignore[arg-type]
    try:
        a.apply([{"apiVersion": "stockade.io/v1", "kind": "Namespace", "metadata": {"name": "shop"}}], "alice", "")
        real_commit = b.store.commit
        overtaken: list[int] = []

        def overtaken_once(*args: Any, **kwargs: Any) -> Any:
            if not overtaken:
                overtaken.append(a.apply([group("from-a").document], "alice", "").revision)
            return real_commit(*args, **kwargs)

        b.store.commit = overtaken_once  # type: ignore[method-assign]
        result = b.apply([group("from-b").document], "bob", "")
        assert overtaken == [2] and result.revision == 3
        for replica in (a, b):
            assert [d["metadata"]["name"] for d in replica.list_objects("Group", "shop")[1]] == ["from-a", "from-b"]
            assert replica.revision() == 3
    finally:
        a.close()
        b.close()


# ------------------------------------------------------------------ --store

def test_store_option_forms() -> None:
    assert parse_store("sqlite:/var/lib/stockade/s.db") == SqliteLocation(Path("/var/lib/stockade/s.db"))
    assert parse_store("etcd://10.0.0.1:2379,[fd00::2]:2379") == EtcdLocation(
        (Endpoint("10.0.0.1", 2379), Endpoint("fd00::2", 2379)), None, "/stockade/")
    assert parse_store("etcd://e1:2379/prod/", ca="ca.pem", cert="c.pem", key="c.key") == EtcdLocation(
        (Endpoint("e1", 2379),), TlsFiles("ca.pem", "c.pem", "c.key"), "/prod/")
    assert store_config("/x/s.db", None) == {"db_path": Path("/x/s.db"), "audit_log": Path("/x/audit.jsonl")}
    assert store_config(None, "etcd://e1:2379") == {"etcd": parse_store("etcd://e1:2379")}


@pytest.mark.parametrize("text, extra, problem", [
    ("mysql://x", {}, "expected sqlite:PATH or etcd://"),
    ("sqlite:", {}, "no database path"),
    ("etcd://e1", {}, "'e1' is not HOST:PORT"),
    ("etcd://e1:99999", {}, "is not HOST:PORT"),
    ("etcd://e1:2379", {"cert": "c.pem"}, "--etcd-cert and --etcd-key go together"),
    ("sqlite:/x.db", {"ca": "ca.pem"}, "--etcd-ca are for an etcd store"),
])
def test_a_bad_store_option_names_the_option(text: str, extra: dict[str, str], problem: str) -> None:
    with pytest.raises(ValueError, match="--") as caught:
        parse_store(text, **extra)
    assert problem in str(caught.value)
    with pytest.raises(ValueError, match="--db and --store"):
        store_config("/x.db", "sqlite:/y.db")


def _sqlite_store(path: Path, revisions: int, big: bool = False) -> None:
    store = open_sqlite(path)
    try:
        for i in range(revisions):
            store.state.commit([group(f"g{i % 50}", i), group(f"h{i % 30}", i)], "alice", f"change {i}", T0)
        if big:  # one revision larger than etcd's default request limit (1.5 MiB)
            store.state.commit([Change(ObjectKey("Group", "shop", "huge"),
                                       {"kind": "Group", "spec": {"blob": "x" * 2_000_000}})], "alice", "huge", T0)
    finally:
        store.close()


def test_a_migration_fits_etcds_default_limits_whatever_the_history(small_etcd: EtcdCluster, tmp_path: Path) -> None:
    """300 revisions into a member with the default 128 operations per transaction."""
    _sqlite_store(tmp_path / "s.db", 300)
    target = small_etcd.location(prefix_for(tmp_path))
    moved = migrate(SqliteLocation(tmp_path / "s.db"), target)
    backend = open_etcd(target)
    try:
        assert backend.state.revision() == 300 == moved.revision
        assert len(backend.state.objects()[1]) == 80 and len(backend.state.revisions()) == 300
    finally:
        backend.close()


def test_a_load_that_fails_half_way_leaves_nothing_behind(small_etcd: EtcdCluster, tmp_path: Path) -> None:
    _sqlite_store(tmp_path / "s.db", 150, big=True)
    target = small_etcd.location(prefix_for(tmp_path))
    with pytest.raises(PayloadTooLarge, match="--max-request-bytes"):
        migrate(SqliteLocation(tmp_path / "s.db"), target)
    backend = open_etcd(target)
    try:
        # Everything written before the refusal was taken back: the prefix is an empty store again.
        assert backend.state.revision() == 0 and backend.state.objects() == (0, [])
        assert backend.tokens.all() == [] and backend.audit.entries() == [] and backend.state.revisions() == []
    finally:
        backend.close()
    _sqlite_store(tmp_path / "ok.db", 2)
    assert migrate(SqliteLocation(tmp_path / "ok.db"), target).revision == 2  # and takes a store afterwards
