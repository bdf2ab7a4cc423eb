"""`stockade backup` through a real controller (HTTP, in a thread), and `stockade restore` /
`stockade store migrate` as real processes on real stores; the restored store served again.

Who may take a backup (admins: it holds token hashes and the audit log), what it holds, that a
restore gives back every answer (objects, history, tokens) under a new identity whose lineage
names the old one, and that a restore never writes over a store.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import httpx
import pytest

from stockade.client import ControllerClient
from stockade.controller.api import build_app
from stockade.controller.config import ControllerConfig
from stockade.controller.main import RunningController, start_in_thread
from stockade.controller.store import open_sqlite
from stockade.controller.store.archive import read_backup
from stockade.model.validation import ValidationSettings
from tests.cli.test_flows_cli import cli_env, stockade
from tests.controller.conftest import HOSTS, admin, config, controller, short_dir, tokens  # noqa: F401 (fixtures)

SHOP = [{"apiVersion": "stockade.io/v1", "kind": "Namespace", "metadata": {"name": "shop"}},
        {"apiVersion": "stockade.io/v1", "kind": "Workload", "metadata": {"name": "web-1", "namespace": "shop"},
         "spec": {"host": "hv1", "ips": ["198.18.10.11"]}}]


def _roles(admin: ControllerClient) -> dict[str, str]:  # noqa: F811
    return {role: admin.create_token(role, ["shop"] if role == "tenant" else [], host="hv1" if role == "agent" else None,
                                     name=f"who-{role}")["token"]
            for role in ("viewer", "network-admin", "tenant", "agent")}


def test_only_an_admin_may_take_a_backup_and_every_refusal_is_audited(controller: RunningController,  # noqa: F811
                                                                      admin: ControllerClient) -> None:  # noqa: F811
    admin.apply(SHOP, "the shop")
    for role, token in _roles(admin).items():
        answer = httpx.get(f"{controller.url}/api/v1/backup", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 403, (role, answer.text)
    refused = [e for e in admin.audit() if e["path"] == "/api/v1/backup" and e["outcome"] == "refused"]
    assert len(refused) == 4


def test_backup_through_the_controller_then_restore_serves_the_same_store_under_a_new_identity(
        controller: RunningController, admin: ControllerClient, tokens: dict[str, str],  # noqa: F811
        tmp_path: Path, short_dir: Path) -> None:  # noqa: F811
    admin.apply(SHOP, "the shop")
    admin.apply([{**SHOP[1], "metadata": {**SHOP[1]["metadata"], "labels": {"tier": "web"}}}], "label web-1")
    made = admin.create_token("viewer", name="grafana")
    env = cli_env(controller, tokens["alice"], tmp_path)
    backup = tmp_path / "backups" / "store.backup"

    done = stockade(env, "backup", str(backup))
    assert done.returncode == 0, done.stderr
    assert "revision 2, 2 objects, 2 revisions of history" in done.stdout
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    text = backup.read_text()
    assert made["token"] not in text and tokens["alice"] not in text  # hashes only, never a secret
    dump = read_backup(backup)
    assert dump.revision == 2 and dump.cluster_id == admin.healthz()["clusterId"]
    assert [t.name for t in dump.tokens] == ["grafana"]
    assert any(e["action"] == "store.backup" for e in admin.audit())  # who took the store away

    # Restore into an empty store, and serve it.
    target = tmp_path / "restored.db"
    done = stockade(env, "restore", str(backup), "--store", f"sqlite:{target}")
    assert done.returncode == 0, done.stderr
    assert f"restored from {dump.cluster_id}" in done.stdout
    restored_config = ControllerConfig(db_path=target, tokens_file=tmp_path / "tokens.json",
                                       validation=ValidationSettings(known_hosts=HOSTS))
    running = start_in_thread(restored_config, unix_socket=short_dir / "restored.sock",
                              app=build_app(restored_config))
    try:
        with ControllerClient(running.url, tokens["alice"]) as client:
            snapshot = client.snapshot()
            assert snapshot["revision"] == 2 and snapshot["lineage"] == [dump.cluster_id]
            assert snapshot["clusterId"] != dump.cluster_id
            assert snapshot["objects"] == admin.snapshot()["objects"]
            assert client.revisions() == admin.revisions()[-2:]
            # The API token made before the backup works on the restored store.
            with ControllerClient(running.url, made["token"]) as viewer:
                assert viewer.list("Workload", "shop")["items"][0]["metadata"]["labels"] == {"tier": "web"}
            restore_entry = client.audit()[-1]
            assert restore_entry["action"] == "store.restore" and restore_entry["detail"]["file"] == str(backup)
            assert client.apply([{**SHOP[0], "metadata": {"name": "shop", "labels": {"x": "y"}}}])["revision"] == 3
    finally:
        running.stop()

    # A restore never writes over a store: the one just served is refused, unchanged.
    before = _answers(target)
    done = stockade(env, "restore", str(backup), "--store", f"sqlite:{target}")
    assert done.returncode == 4 and "holds a store already" in done.stderr and "nothing was written" in done.stderr
    assert _answers(target) == before and before[0] == 3


def _answers(db: Path) -> tuple[object, ...]:
    store = open_sqlite(db)
    try:
        return (store.state.revision(), store.state.cluster_id, store.state.lineage, store.state.objects(),
                store.tokens.all(), store.audit.entries())
    finally:
        store.close()


def test_a_damaged_backup_is_refused_before_anything_is_written(tmp_path: Path, config: ControllerConfig,  # noqa: F811
                                                                controller: RunningController,  # noqa: F811
                                                                admin: ControllerClient,  # noqa: F811
                                                                tokens: dict[str, str]) -> None:  # noqa: F811
    admin.apply(SHOP, "the shop")
    env = cli_env(controller, tokens["alice"], tmp_path)
    backup = tmp_path / "store.backup"
    assert stockade(env, "backup", str(backup)).returncode == 0
    doc = json.loads(backup.read_text())
    doc["revisions"][0]["author"] = "mallory"
    backup.write_text(json.dumps(doc))
    target = tmp_path / "never.db"
    done = stockade(env, "restore", str(backup), "--store", f"sqlite:{target}")
    assert done.returncode == 2 and "backup: checksum: does not match" in done.stderr
    assert not target.exists()


def test_store_backup_reads_a_store_directly(tmp_path: Path, config: ControllerConfig,  # noqa: F811
                                             controller: RunningController, admin: ControllerClient,  # noqa: F811
                                             tokens: dict[str, str]) -> None:  # noqa: F811
    admin.apply(SHOP, "the shop")
    env = cli_env(controller, tokens["alice"], tmp_path)
    online, offline = tmp_path / "online.backup", tmp_path / "offline.backup"
    assert stockade(env, "backup", str(online)).returncode == 0
    done = stockade(env, "store", "backup", str(offline), "--store", f"sqlite:{config.db_path}")
    assert done.returncode == 0, done.stderr
    a, b = read_backup(online), read_backup(offline)
    assert (a.revision, a.revisions, a.tokens, a.cluster_id) == (b.revision, b.revisions, b.tokens, b.cluster_id)


@pytest.mark.parametrize("args, words", [
    (["--store", "mysql://x"], "expected sqlite:PATH"),
    (["--store", "sqlite:"], "no database path"),
])
def test_a_bad_store_is_a_clear_error(tmp_path: Path, args: list[str], words: str) -> None:
    backup = tmp_path / "b"
    backup.write_text("{}")
    env = {**os.environ, "STOCKADE_CONFIG": str(tmp_path / "absent.json"), "COLUMNS": "220", "NO_COLOR": "1"}
    done = stockade(env, "restore", str(backup), *args)
    assert done.returncode != 0 and words in done.stderr
