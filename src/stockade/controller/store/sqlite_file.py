"""One SQLite database file shared by the SQLite repositories: connections, schema, transactions.

The state store (`store.sqlite`), tokens (`store.tokens`) and the audit log
(`store.audit_log`) keep their tables in this one file, so a revision and its audit
entry can be one transaction. Agent reports do not: they live in a file of their own
(`store.agent_reports`), see the durability invariant below.

Invariants:
- Durability: every connection runs with `synchronous=FULL` (the WAL is fsynced before
  COMMIT returns, and so is every checkpoint), and nothing ever lowers it. A checkpoint
  run by an unsynced commit would copy revisions into the database file without an fsync
  and then recycle the WAL: a power cut could lose an acknowledged revision.
- Every thread gets its own connection (sqlite3 connections are not for sharing across
  threads); WAL lets readers see a consistent snapshot while one writer commits.
- The store's identity (`cluster_id`) is made once, when the file is created.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS revisions (
    rev     INTEGER PRIMARY KEY,
    author  TEXT NOT NULL,
    message TEXT NOT NULL,
    time    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS objects (
    kind      TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL,
    document  TEXT NOT NULL,
    rev       INTEGER NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);
CREATE TABLE IF NOT EXISTS events (
    rev       INTEGER NOT NULL,
    seq       INTEGER NOT NULL,
    type      TEXT NOT NULL CHECK (type IN ('PUT', 'DELETE')),
    kind      TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL,
    document  TEXT,
    PRIMARY KEY (rev, seq)
);
-- agents: written by versions before agent reports moved to their own file, now read once to migrate
CREATE TABLE IF NOT EXISTS agents (
    host      TEXT PRIMARY KEY,
    report    TEXT NOT NULL,
    last_seen TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    rev       INTEGER NOT NULL,
    seq       INTEGER NOT NULL,
    type      TEXT NOT NULL CHECK (type IN ('PUT', 'DELETE')),
    kind      TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name      TEXT NOT NULL,
    document  TEXT,
    PRIMARY KEY (rev, seq)
);
CREATE INDEX IF NOT EXISTS history_by_object ON history (kind, namespace, name, rev);
CREATE TABLE IF NOT EXISTS tokens (
    id         TEXT PRIMARY KEY,
    sha256     TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,
    namespaces TEXT NOT NULL,
    host       TEXT,
    created    TEXT NOT NULL,
    created_by TEXT NOT NULL,
    expires    TEXT,
    revoked    TEXT
);
CREATE TABLE IF NOT EXISTS revoked_hashes (
    sha256  TEXT PRIMARY KEY,
    revoked TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    time  TEXT NOT NULL,
    entry TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def read_lineage(conn: sqlite3.Connection) -> tuple[str, ...]:
    """The identities the store was restored from, oldest first (none for a store made here)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'lineage'").fetchone()
    return tuple(json.loads(row[0])) if row else ()


class SqliteFile:
    """The database file, its schema and its transactions; safe to call from any thread.
    Writers are serialized by SQLite itself (BEGIN IMMEDIATE)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._conn()
        # WAL is a property of the database file: set once, every connection uses it.
        conn.execute("PRAGMA journal_mode=WAL")
        with self.write() as c:
            version = c.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION):
                raise RuntimeError(f"{self.path}: schema version {version} is not supported")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    c.execute(statement)
            c.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            # The store's identity, made once when the database is created: an agent that finds
            # another identity (a controller started on an empty or a different database) keeps
            # the program it enforces instead of swapping in a stranger's state.
            c.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('cluster_id', ?)", (uuid.uuid4().hex,))
            self.cluster_id: str = c.execute("SELECT value FROM meta WHERE key = 'cluster_id'").fetchone()[0]
            self.lineage: tuple[str, ...] = read_lineage(c)

    def reload_identity(self) -> None:
        """Read the identity again (after a restore wrote another one: store.sqlite_archive)."""
        with self.read() as c:
            self.cluster_id = c.execute("SELECT value FROM meta WHERE key = 'cluster_id'").fetchone()[0]
            self.lineage = read_lineage(c)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # check_same_thread=False only so that close() may run from any thread;
            # each connection is still used by the one thread that opened it.
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
            conn.execute("PRAGMA synchronous=FULL")  # a committed revision survives a power cut
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One durable write transaction (the connection's synchronous=FULL is never changed)."""
        conn = self._conn()
        # IMMEDIATE takes the write lock up front, so the revision number we read is ours.
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        # One read transaction: every SELECT inside sees the same revision.
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()
