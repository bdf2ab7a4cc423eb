"""The agent report repository: the agents' latest reports, held in memory, written behind.

Every agent reports after each change it programs and every few seconds besides, so with
twenty hosts a label change brings twenty reports within tens of milliseconds. Each was
a SQLite write transaction, queued behind any apply's durable commit, and the status
view read them all back and parsed them again (docs/performance.md). A report is runtime
state that the agent's next one replaces: the newest per host is kept here, readers get
it from memory, and a writer thread saves what changed at most every `flush_delay`
seconds in one transaction. A controller that stops saves first (`close`); one that
crashes loses at most that long of reports, which the agents' next heartbeats replace.

`ReportFile` saves them in a SQLite file of their own, committed without fsync
(`synchronous=OFF`): a report lost to a power cut is replaced by the agent's next one.
Never in the revisions' database: there an unsynced commit may run the WAL checkpoint,
which would then copy revisions into the database file without an fsync and recycle the
WAL, and a power cut could lose a committed revision (docs/architecture.md).

`AgentReportRepository` is what the service uses; `SqliteAgentReports` is the write-behind
over a `ReportFile` beside the revisions' database (`reports_path`), which on its first start
takes over the reports an older version kept in that database.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Protocol

from stockade.controller.store.sqlite_file import SqliteFile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentRecord:
    host: str
    report: dict[str, Any]
    last_seen: datetime


class AgentReportRepository(Protocol):
    """Runtime state, not desired state: a report makes no revision and is in no event."""

    def put(self, host: str, report: dict[str, Any], seen: datetime) -> None:
        """Record a host's latest report (replacing its previous one)."""
        ...

    def all(self) -> list[AgentRecord]:
        """Every host's newest report, by host name."""
        ...

    def flush(self) -> None:
        """Save what is not saved yet, now."""
        ...

    def refresh(self) -> None:
        """Take the reports other controller replicas stored since (a store of one replica:
        nothing to do)."""
        ...

    def close(self) -> None: ...


SaveBatch = Callable[[list[AgentRecord]], None]


class AgentReports:
    """Newest report per host; `save` writes a batch of them (called from one thread at a time)."""

    def __init__(self, loaded: list[AgentRecord], save: SaveBatch, flush_delay: float = 0.5) -> None:
        self._records: dict[str, AgentRecord] = {r.host: r for r in loaded}
        self._dirty: set[str] = set()
        self._lock = threading.Lock()
        self._save = save
        self._save_lock = threading.Lock()  # the writer thread and close() never save at once
        self._flush_delay = flush_delay
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._stopping = False
        self._writer: threading.Thread | None = None

    def put(self, record: AgentRecord) -> None:
        with self._lock:
            self._records[record.host] = record
            self._dirty.add(record.host)
            if self._writer is None and not self._stopping:
                self._writer = threading.Thread(target=self._write_behind, name="agent-reports", daemon=True)
                self._writer.start()
        self._wake.set()

    def all(self) -> list[AgentRecord]:
        """Every host's newest report, by host name."""
        with self._lock:
            return [self._records[h] for h in sorted(self._records)]

    def merge(self, stored: list[AgentRecord]) -> None:
        """Take reports another writer stored, where they are newer than ours (not saved again)."""
        with self._lock:
            for record in stored:
                mine = self._records.get(record.host)
                if mine is None or (record.last_seen > mine.last_seen and record.host not in self._dirty):
                    self._records[record.host] = record

    def flush(self) -> None:
        """Save what changed since the last save, now."""
        with self._save_lock:
            with self._lock:
                batch = [self._records[h] for h in sorted(self._dirty)]
                self._dirty.clear()
            if not batch:
                return
            try:
                self._save(batch)
            except Exception:
                with self._lock:  # saved next time, unless a newer report came meanwhile
                    self._dirty.update(r.host for r in batch)
                raise

    def close(self) -> None:
        """Stop the writer and save what is left."""
        with self._lock:
            self._stopping = True
            writer = self._writer
        self._stop.set()
        self._wake.set()
        if writer is not None:
            writer.join(10)
        self.flush()

    def _write_behind(self) -> None:
        while True:
            self._wake.wait()
            if self._stopping:
                return
            # Reports come in bursts (every agent, right after a rollout): one transaction a burst.
            self._stop.wait(self._flush_delay)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - kept in memory and retried by the next burst
                log.exception("saving agent reports failed; they stay in memory")
            if self._stopping:
                return


class ReportFile:
    """Agent reports on disk: one table in a SQLite file that holds nothing else.

    One connection, used under a lock (the writer thread saves, `close` may save from another
    thread); fsync is off for every transaction on this file, and this file only.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=OFF")
        self._conn.execute("CREATE TABLE IF NOT EXISTS agents (host TEXT PRIMARY KEY, report TEXT NOT NULL, "
                           "last_seen TEXT NOT NULL)")

    def load(self) -> list[AgentRecord]:
        with self._lock:
            return agent_rows(self._conn)

    def save(self, batch: list[AgentRecord]) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT INTO agents (host, report, last_seen) VALUES (?, ?, ?) ON CONFLICT (host) "
                    "DO UPDATE SET report = excluded.report, last_seen = excluded.last_seen",
                    [(r.host, json.dumps(r.report, sort_keys=True),
                      r.last_seen.isoformat(timespec="milliseconds")) for r in batch])
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def agent_rows(conn: sqlite3.Connection) -> list[AgentRecord]:
    """The records of an `agents` table (the reports file's, or an older database's)."""
    rows = conn.execute("SELECT host, report, last_seen FROM agents ORDER BY host").fetchall()
    return [AgentRecord(h, json.loads(r), datetime.fromisoformat(s)) for h, r, s in rows]


class WriteBehindReports:
    """The repository over `AgentReports`: newest reports in memory, saved behind by `save`.
    Backends give where the reports are loaded from and saved to, and what `refresh` takes."""

    def __init__(self, loaded: list[AgentRecord], save: SaveBatch, flush_delay: float) -> None:
        self._reports = AgentReports(loaded, save, flush_delay)

    def put(self, host: str, report: dict[str, Any], seen: datetime) -> None:
        self._reports.put(AgentRecord(host, report, seen))

    def all(self) -> list[AgentRecord]:
        return self._reports.all()

    def flush(self) -> None:
        self._reports.flush()

    def refresh(self) -> None:
        pass  # one controller writes this store: every report came through it

    def close(self) -> None:
        self._reports.close()  # saves the reports not yet written


class SqliteAgentReports(WriteBehindReports):
    """Reports in memory, saved behind to the `ReportFile` beside the database `db`."""

    def __init__(self, db: SqliteFile, flush_delay: float = 0.5) -> None:
        self._file = ReportFile(reports_path(db.path))
        super().__init__(self._load(db), self._file.save, flush_delay)

    def close(self) -> None:
        super().close()
        self._file.close()

    def _load(self, db: SqliteFile) -> list[AgentRecord]:
        """The reports file's records; on the first start after the upgrade, the ones an older
        version kept in the database (its `agents` table, no longer written)."""
        loaded = self._file.load()
        if loaded:
            return loaded
        with db.read() as conn:
            return agent_rows(conn)


def reports_path(db: Path) -> Path:
    """Where the agent reports of the store at `db` live: `stockade.db` → `stockade-agents.db`."""
    return db.with_name(f"{db.stem}-agents{db.suffix}")
