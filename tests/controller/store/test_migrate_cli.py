"""`stockade store migrate` and `stockade store backup|restore` on etcd, as real processes against
a real 3-member etcd cluster over TLS with client certificates (`conftest.etcd_tls_cluster`)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from stockade.controller.store import Change, open_etcd, open_sqlite
from stockade.controller.store.location import EtcdLocation
from stockade.model.kinds import ObjectKey
from tests.controller.store.etcd_cluster import EtcdCluster

T0 = datetime(2030, 1, 2, tzinfo=timezone.utc)
LAUNCH = "from stockade.cli.main import app; app()"


def stockade(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "220", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-c", LAUNCH, *args], env=env, capture_output=True, text=True, timeout=120)


def _url(location: EtcdLocation) -> str:
    return "etcd://" + ",".join(str(e) for e in location.endpoints) + location.prefix


def _tls_args(location: EtcdLocation) -> list[str]:
    assert location.tls is not None and location.tls.ca and location.tls.cert and location.tls.key
    return ["--etcd-ca", location.tls.ca, "--etcd-cert", location.tls.cert, "--etcd-key", location.tls.key]


def test_migrate_sqlite_to_etcd_over_tls_keeps_identity_and_revisions_then_back_up_and_restore(
        etcd_tls_cluster: EtcdCluster, tmp_path: Path) -> None:
    source = tmp_path / "source.db"
    store = open_sqlite(source)
    for i in range(3):
        key = ObjectKey("Group", "shop", f"g{i}")
        store.state.commit([Change(key, {"kind": "Group", "metadata": {"name": key.name, "namespace": "shop"}})],
                           "alice", f"change {i}", T0)
    identity, history = store.state.cluster_id, store.state.revisions()
    store.close()

    target = etcd_tls_cluster.location(f"/migrate-{secrets.token_hex(4)}/")
    done = stockade("store", "migrate", "--from", f"sqlite:{source}", "--to", _url(target), *_tls_args(target))
    assert done.returncode == 0, done.stderr
    assert f"migrated store {identity}" in done.stdout and "revision 3" in done.stdout
    on_etcd = open_etcd(target)
    try:
        assert on_etcd.state.cluster_id == identity and on_etcd.state.revisions() == history
    finally:
        on_etcd.close()

    # Again into the same prefix: refused, nothing written.
    again = stockade("store", "migrate", "--from", f"sqlite:{source}", "--to", _url(target), *_tls_args(target))
    assert again.returncode == 4 and "holds a store already" in again.stderr

    # A backup read from etcd directly, restored into another prefix: a new identity, the same history.
    backup = tmp_path / "etcd.backup"
    done = stockade("store", "backup", str(backup), "--store", _url(target), *_tls_args(target))
    assert done.returncode == 0, done.stderr
    restored_at = etcd_tls_cluster.location(f"/restored-{secrets.token_hex(4)}/")
    done = stockade("store", "restore", str(backup), "--store", _url(restored_at), *_tls_args(restored_at))
    assert done.returncode == 0, done.stderr
    restored = open_etcd(restored_at)
    try:
        assert restored.state.revisions() == history and restored.state.lineage == (identity,)
        assert restored.state.cluster_id != identity
    finally:
        restored.close()
