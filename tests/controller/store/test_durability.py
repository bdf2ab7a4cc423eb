"""A committed revision survives, and never exists without its audit entry (issue 13, item 8)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

import stockade.controller.store.agent_reports as agent_reports_module
import stockade.controller.store.sqlite_file as sqlite_file_module
from stockade.client import ControllerClient
from stockade.controller.auth import create_token_file
from stockade.controller.config import ControllerConfig
from stockade.controller.store import Change, open_sqlite
from stockade.model.kinds import ObjectKey
from stockade.errors import StockadeError
from tests.controller.controller_docs import namespace, shop, workload
from tests.waiting import process_gone, wait_until

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def _audited_revisions(db: Path) -> list[int]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT entry FROM audit").fetchall()
    return [e["revision"] for e in (json.loads(r[0]) for r in rows) if e["outcome"] == "ok" and "revision" in e]


def _revisions(db: Path) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT rev FROM revisions ORDER BY rev")]


def _fail_inserts_into(db: Path, table: str) -> None:
    """A fault between the two writes: SQLite refuses every new row of `table` from now on."""
    with sqlite3.connect(db) as conn:
        conn.execute(f"CREATE TRIGGER fail_{table} BEFORE INSERT ON {table} "
                     "BEGIN SELECT RAISE(ABORT, 'injected failure'); END")


def _heal(db: Path, table: str) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(f"DROP TRIGGER fail_{table}")


@pytest.mark.parametrize("failing", ["audit", "history"])
def test_a_revision_exists_if_and_only_if_its_audit_entry_does(config: ControllerConfig, admin: ControllerClient,
                                                                failing: str) -> None:
    """Without one transaction for both, a failing audit write left revision 1 stored and unaudited."""
    db = config.db_path
    _fail_inserts_into(db, failing)
    with pytest.raises(StockadeError):
        admin.apply(shop(), "open the shop")
    assert _revisions(db) == [] and _audited_revisions(db) == []
    assert admin.healthz()["revision"] == 0
    _heal(db, failing)
    assert admin.apply(shop(), "open the shop")["revision"] == 1
    assert _revisions(db) == [1] and _audited_revisions(db) == [1]


def test_agent_reports_never_lower_the_durability_of_the_revisions_database(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Every statement run on the revisions' file is traced: none may turn fsync off, as saving
    agent reports did (a checkpoint run by such a commit could lose committed revisions)."""
    statements: list[tuple[str, str]] = []
    real_connect = sqlite3.connect

    def traced(path: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real_connect(path, *args, **kwargs)
        conn.set_trace_callback(lambda sql, where=str(path): statements.append((where, sql)))
        return conn

    monkeypatch.setattr(sqlite_file_module.sqlite3, "connect", traced)
    monkeypatch.setattr(agent_reports_module.sqlite3, "connect", traced)
    db = tmp_path / "s.db"
    store = open_sqlite(db)
    try:
        store.state.commit([Change(ObjectKey("Namespace", "", "shop"),
                                   {"kind": "Namespace", "metadata": {"name": "shop"}})], "alice", "", T0)
        store.reports.put("hv1", {"revision": 1}, T0)
        store.reports.flush()
        assert store.reports.all()[0].report == {"revision": 1}
    finally:
        store.close()
    on_revisions = [sql.replace(" ", "").lower() for where, sql in statements if where == str(db)]
    assert on_revisions, "no statement traced on the revisions database"
    assert not [s for s in on_revisions if s.startswith("pragmasynchronous=") and s != "pragmasynchronous=full"]
    assert open_sqlite(db).reports.all()[0].report == {"revision": 1}  # saved (elsewhere) and read back


@pytest.fixture
def controller_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, dict[str, str]]]:
    tokens = create_token_file(tmp_path / "tokens.json", [{"name": "alice", "role": "admin"}])
    sock = Path(f"/tmp/stk-kill-{os.getpid()}-{tmp_path.name[-8:]}.sock")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from stockade.controller.main import run_controller; import sys; "
                               "run_controller(sys.argv[1], '127.0.0.1:0', sys.argv[2], sys.argv[3])",
         str(tmp_path / "stockade.db"), str(sock), str(tmp_path / "tokens.json")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc, sock, tokens
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
        sock.unlink(missing_ok=True)


def test_kill_9_right_after_an_apply_keeps_the_revision_and_its_audit_entry(
        tmp_path: Path, controller_process: tuple[subprocess.Popen[bytes], Path, dict[str, str]]) -> None:
    proc, sock, tokens = controller_process

    def up() -> bool:
        try:
            with ControllerClient(f"unix://{sock}", tokens["alice"]) as c:
                return c.healthz()["ok"]
        except StockadeError:
            return False

    wait_until(lambda: sock.exists() and up(), "the controller subprocess to answer on its socket", timeout=30)
    with ControllerClient(f"unix://{sock}", tokens["alice"]) as client:
        assert client.apply([namespace("shop"), workload("web-1")], "before the crash")["revision"] == 1
        os.kill(proc.pid, signal.SIGKILL)  # no shutdown, no flush: what is acknowledged must be on disk
    wait_until(lambda: process_gone(proc.pid), "the controller to die")
    reopened = open_sqlite(tmp_path / "stockade.db")
    try:
        assert reopened.state.revision() == 1
        [entry] = [e for _, e in reopened.audit.entries() if e["outcome"] == "ok"]
        assert (entry["action"], entry["revision"], entry["actor"]["name"]) == ("apply", 1, "alice")
    finally:
        reopened.close()
