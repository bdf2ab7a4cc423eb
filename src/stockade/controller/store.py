"""The controller's SQLite store: objects, numbered revisions, a bounded event log, tokens, the audit log.

Invariants:
- Every write of desired state is ONE transaction that creates ONE revision
  (number, author, message, UTC time) with at least one event; revision numbers
  are consecutive from 1. Revision 0 is the empty store.
- The objects table always equals the replay of every revision's events.
- The event log keeps whole revisions only: events of revisions <= `compacted`
  are gone, every later one is complete. A reader asking for events after a
  revision older than `compacted` gets `Gone` and must relist.
- The history table keeps every change of every revision forever (the event log
  above is only the watch's window): it answers "what changed in revision N" and
  "what was the state at revision N" for history, diff and rollback.
- Tokens made through the API live here, as SHA-256 hashes only; the audit log
  keeps the newest `audit_retention` entries.
- A revision and the audit entries handed to `commit_audited` are one transaction:
  both are stored, or neither.
- Durability: every transaction on this file commits with `synchronous=FULL` (the WAL is
  fsynced before COMMIT returns, and so is every checkpoint), and nothing ever lowers it.
  Agent reports, which are cheap runtime state committed without fsync, live in a file of
  their own (`agent_reports.ReportFile`): a checkpoint run by an unsynced commit would
  otherwise copy revisions into the database file without an fsync and then recycle the
  WAL, so a power cut could lose a revision that had been acknowledged as committed.
- Documents are stored as given (already validated by the service); the store
  knows nothing of their meaning beyond kind, namespace and name.

Every thread gets its own connection (sqlite3 connections are not for sharing
across threads); WAL lets readers see a consistent snapshot while one writer
commits.

The events of the newest revisions committed through this object are also kept
in memory (`recent_events`): after a commit every agent's watch asks for exactly
those, and twenty agents meant twenty store reads per change (docs/performance.md).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

from stockade.controller.agent_reports import AgentRecord, AgentReports, ReportFile
from stockade.errors import Gone
from stockade.model.kinds import ObjectKey

EventType = Literal["PUT", "DELETE"]
AuditRows = Callable[[int], Sequence[dict[str, Any]]]  # revision number → audit entries to store with it

_SCHEMA_VERSION = 1
RECENT_REVISIONS = 64  # revisions whose events stay in memory for watchers
RECENT_EVENTS = 1_000  # and at most this many events in all
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


@dataclass(frozen=True)
class Revision:
    number: int
    author: str
    message: str
    time: str  # UTC, ISO 8601


@dataclass(frozen=True)
class Change:
    """One object put (document given) or deleted (document None) in a revision."""

    key: ObjectKey
    document: dict[str, Any] | None


@dataclass(frozen=True)
class Event:
    revision: int
    seq: int
    type: EventType
    key: ObjectKey
    document: dict[str, Any] | None


class _EventTail:
    """The newest consecutive revisions committed through one Store, with their events, in
    memory: at most `capacity` revisions and, beyond the newest one, `max_events` events (a
    large apply is read from the store instead of being held twice)."""

    def __init__(self, capacity: int, max_events: int) -> None:
        self.capacity = capacity
        self.max_events = max_events
        self._revisions: list[tuple[Revision, list[Event]]] = []
        self._lock = threading.Lock()

    def add(self, revision: Revision, events: list[Event]) -> None:
        with self._lock:
            if self._revisions and self._revisions[-1][0].number != revision.number - 1:
                self._revisions = []  # a gap: only consecutive revisions can answer a reader
            self._revisions.append((revision, events))
            del self._revisions[:-self.capacity]
            held = sum(len(evs) for _, evs in self._revisions)
            while len(self._revisions) > 1 and held > self.max_events:
                held -= len(self._revisions.pop(0)[1])
            if held > self.max_events:  # the newest alone is too large: keep nothing
                self._revisions = []

    def after(self, since: int) -> tuple[int, list[Event]] | None:
        """(newest revision, events after `since`) when every revision after `since` up to the
        newest is here and there is at least one; else None."""
        with self._lock:
            if not self._revisions or not self._revisions[0][0].number - 1 <= since < self._revisions[-1][0].number:
                return None
            events = [e for rev, evs in self._revisions if rev.number > since for e in evs]
            return self._revisions[-1][0].number, events

    def revision(self, number: int) -> Revision | None:
        """The revision `number` when it is here."""
        with self._lock:
            if not self._revisions or not self._revisions[0][0].number <= number <= self._revisions[-1][0].number:
                return None
            return self._revisions[number - self._revisions[0][0].number][0]


@dataclass(frozen=True)
class StoredToken:
    """A token made through the API (hash only). `namespaces` is empty for roles without a scope."""

    id: str
    sha256: str
    name: str
    role: str
    namespaces: tuple[str, ...]
    host: str | None
    created: str
    created_by: str
    expires: str | None
    revoked: str | None


def _event(row: Sequence[Any]) -> Event:
    """An event from its row: (rev, seq, type, kind, namespace, name, document JSON or None)."""
    return Event(row[0], row[1], row[2], ObjectKey(row[3], row[4], row[5]),
                 json.loads(row[6]) if row[6] is not None else None)


class Store:
    """SQLite store; safe to call from any thread. Writers are serialized by SQLite itself."""

    def __init__(self, path: Path | str, event_retention: int = 10_000, audit_retention: int = 100_000) -> None:
        if event_retention < 1:
            raise ValueError("event_retention must be at least 1")
        self.path = Path(path)
        self.event_retention = event_retention
        self.audit_retention = audit_retention
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._tail = _EventTail(RECENT_REVISIONS, RECENT_EVENTS)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._conn()
        # WAL is a property of the database file: set once, every connection uses it.
        conn.execute("PRAGMA journal_mode=WAL")
        with self._write() as c:
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
        self._report_file = ReportFile(reports_path(self.path))
        self._agent_reports = AgentReports(self._load_agents(), self._report_file.save)

    # ------------------------------------------------------------ connections

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
    def _write(self) -> Iterator[sqlite3.Connection]:
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
    def _read(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        # One read transaction: every SELECT inside sees the same revision.
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        self._agent_reports.close()  # saves the reports not yet written
        self._report_file.close()
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    # ---------------------------------------------------------------- reading

    @staticmethod
    def _revision(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT COALESCE(MAX(rev), 0) FROM revisions").fetchone()[0])

    @staticmethod
    def _compacted(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT value FROM meta WHERE key = 'compacted'").fetchone()
        return int(row[0]) if row else 0

    def revision(self) -> int:
        """The latest revision number; 0 for the empty store."""
        with self._read() as conn:
            return self._revision(conn)

    def objects(self, kind: str | None = None, namespace: str | None = None,
                name: str | None = None) -> tuple[int, list[dict[str, Any]]]:
        """(revision, documents) matching the filters, read in one snapshot, by kind, namespace, name."""
        where, args = [], []
        for column, value in (("kind", kind), ("namespace", namespace), ("name", name)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT document FROM objects"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY kind, namespace, name"
        with self._read() as conn:
            rev = self._revision(conn)
            docs = [json.loads(row[0]) for row in conn.execute(sql, args)]
        return rev, docs

    def events_since(self, since: int) -> tuple[int, list[Event]]:
        """(revision, events of revisions after `since`), or Gone when they are no longer all kept."""
        with self._read() as conn:
            rev = self._revision(conn)
            compacted = self._compacted(conn)
            if since < compacted:
                raise Gone(f"revision {since} is older than the oldest kept event (revisions after "
                           f"{compacted} are kept); list again")
            if since > rev:
                raise Gone(f"revision {since} is newer than the store's revision {rev}; list again")
            rows = conn.execute(
                "SELECT rev, seq, type, kind, namespace, name, document FROM events "
                "WHERE rev > ? ORDER BY rev, seq", (since,)).fetchall()
        return rev, [_event(r) for r in rows]

    def recent_events(self, since: int) -> tuple[int, list[Event]] | None:
        """What `events_since(since)` answers, from memory, when the events after `since` are
        those of the newest revisions committed through this object and there is at least one;
        else None (ask `events_since`). Never an empty answer: a writer other than this object
        (a second controller on the file) would go unseen."""
        return self._tail.after(since)

    def compacted(self) -> int:
        """Events of revisions up to this one have been dropped from the log."""
        with self._read() as conn:
            return self._compacted(conn)

    def revisions(self, limit: int | None = None) -> list[Revision]:
        """Newest first."""
        sql = "SELECT rev, author, message, time FROM revisions ORDER BY rev DESC"
        args: tuple[int, ...] = ()
        if limit is not None:
            sql += " LIMIT ?"
            args = (limit,)
        with self._read() as conn:
            return [Revision(*row) for row in conn.execute(sql, args)]

    def revision_info(self, number: int) -> Revision | None:
        """One revision's author, message and commit time; None for 0 or an unknown number.
        Recent ones from memory: every agent's first report of a revision asks for its time."""
        known = self._tail.revision(number)
        if known is not None:
            return known
        with self._read() as conn:
            row = conn.execute("SELECT rev, author, message, time FROM revisions WHERE rev = ?",
                               (number,)).fetchone()
        return Revision(*row) if row is not None else None

    def object_revisions(self) -> dict[ObjectKey, int]:
        """The revision that last changed each object: its `metadata.resourceVersion`."""
        with self._read() as conn:
            return {ObjectKey(k, ns, n): rev
                    for k, ns, n, rev in conn.execute("SELECT kind, namespace, name, rev FROM objects")}

    def changes_of(self, revisions: Sequence[int]) -> dict[int, list[tuple[EventType, ObjectKey]]]:
        """What each of `revisions` put or deleted, in commit order (from the full history)."""
        out: dict[int, list[tuple[EventType, ObjectKey]]] = {r: [] for r in revisions}
        if not revisions:
            return out
        marks = ",".join("?" * len(revisions))
        with self._read() as conn:
            for rev, typ, kind, ns, name in conn.execute(
                    f"SELECT rev, type, kind, namespace, name FROM history WHERE rev IN ({marks}) "
                    "ORDER BY rev, seq", list(revisions)):
                out[rev].append((typ, ObjectKey(kind, ns, name)))
        return out

    def objects_at(self, revision: int) -> list[dict[str, Any]]:
        """Every document as it stood right after `revision` (0: none), from the full history."""
        with self._read() as conn:
            if revision > self._revision(conn):
                raise ValueError(f"revision {revision} does not exist yet")
            rows = conn.execute(
                "SELECT h.document FROM history h JOIN ("
                "  SELECT kind, namespace, name, MAX(rev) AS rev FROM history WHERE rev <= ? "
                "  GROUP BY kind, namespace, name) last "
                "ON h.kind = last.kind AND h.namespace = last.namespace AND h.name = last.name "
                "AND h.rev = last.rev WHERE h.type = 'PUT' ORDER BY h.kind, h.namespace, h.name",
                (revision,)).fetchall()
        return [json.loads(r[0]) for r in rows]

    # ---------------------------------------------------------------- writing

    def commit(self, changes: Sequence[Change], author: str, message: str, time: datetime) -> Revision:
        """Apply `changes` as one new revision, atomically; return it."""
        return self.commit_audited(changes, author, message, time, None)[0]

    def commit_audited(self, changes: Sequence[Change], author: str, message: str, time: datetime,
                       audit: AuditRows | None) -> tuple[Revision, list[int]]:
        """Apply `changes` as one new revision and store the audit entries `audit(revision number)`
        gives in the same transaction: both or neither. Returns the revision and the entries' seqs."""
        if not changes:
            raise ValueError("a revision needs at least one change")
        when = time.isoformat(timespec="milliseconds")
        rows: list[tuple[int, int, str, str, str, str, str | None]] = []
        seqs: list[int] = []
        with self._write() as conn:
            rev = self._revision(conn) + 1
            conn.execute("INSERT INTO revisions (rev, author, message, time) VALUES (?, ?, ?, ?)",
                         (rev, author, message, when))
            for seq, change in enumerate(changes):
                k = change.key
                if change.document is None:
                    conn.execute("DELETE FROM objects WHERE kind = ? AND namespace = ? AND name = ?",
                                 (k.kind, k.namespace, k.name))
                    doc_json = None
                else:
                    doc_json = json.dumps(change.document, sort_keys=True, separators=(",", ":"))
                    conn.execute(
                        "INSERT INTO objects (kind, namespace, name, document, rev) VALUES (?, ?, ?, ?, ?) "
                        "ON CONFLICT (kind, namespace, name) DO UPDATE SET document = excluded.document, "
                        "rev = excluded.rev", (k.kind, k.namespace, k.name, doc_json, rev))
                row = (rev, seq, "PUT" if doc_json is not None else "DELETE", k.kind, k.namespace, k.name,
                       doc_json)
                conn.execute("INSERT INTO events (rev, seq, type, kind, namespace, name, document) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)", row)
                conn.execute("INSERT INTO history (rev, seq, type, kind, namespace, name, document) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)", row)
                rows.append(row)
            self._compact(conn)
            if audit is not None:
                seqs = self._insert_audit(conn, audit(rev))
        revision = Revision(rev, author, message, when)
        self._tail.add(revision, [_event(r) for r in rows])  # committed: readers may now see it
        return revision, seqs

    def _compact(self, conn: sqlite3.Connection) -> None:
        """Drop the oldest whole revisions from the event log until it fits the retention.

        The newest revision is always kept, even when it alone is larger.
        """
        total = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        if total <= self.event_retention:
            return
        kept = 0
        cut: int | None = None
        for i, (rev, count) in enumerate(conn.execute(
                "SELECT rev, COUNT(*) FROM events GROUP BY rev ORDER BY rev DESC").fetchall()):
            if i > 0 and kept + count > self.event_retention:
                cut = rev
                break
            kept += count
        if cut is None:
            return
        conn.execute("DELETE FROM events WHERE rev <= ?", (cut,))
        conn.execute("INSERT INTO meta (key, value) VALUES ('compacted', ?) "
                     "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(cut),))

    # ----------------------------------------------------------------- tokens

    def add_token(self, token: StoredToken) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO tokens (id, sha256, name, role, namespaces, host, created, created_by, expires, "
                "revoked) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (token.id, token.sha256, token.name, token.role, json.dumps(list(token.namespaces)),
                 token.host, token.created, token.created_by, token.expires, token.revoked))

    def tokens(self) -> list[StoredToken]:
        with self._read() as conn:
            rows = conn.execute("SELECT id, sha256, name, role, namespaces, host, created, created_by, expires, "
                                "revoked FROM tokens ORDER BY created, id").fetchall()
        return [StoredToken(r[0], r[1], r[2], r[3], tuple(json.loads(r[4])), r[5], r[6], r[7], r[8], r[9])
                for r in rows]

    def revoke_hash(self, sha256: str, when: str) -> None:
        """Revoke a token by hash, whether it was made through the API or comes from the tokens file."""
        with self._write() as conn:
            conn.execute("UPDATE tokens SET revoked = ? WHERE sha256 = ? AND revoked IS NULL", (when, sha256))
            conn.execute("INSERT INTO revoked_hashes (sha256, revoked) VALUES (?, ?) "
                         "ON CONFLICT (sha256) DO NOTHING", (sha256, when))

    def revoked_hashes(self) -> set[str]:
        with self._read() as conn:
            return {r[0] for r in conn.execute("SELECT sha256 FROM revoked_hashes")}

    # ------------------------------------------------------------------ audit

    def append_audit(self, time: str, entry: dict[str, Any]) -> int:
        """Keep one audit entry (already free of secrets, `time` is its "time")."""
        return self.append_audit_batch([{**entry, "time": time}])[0]

    def append_audit_batch(self, entries: Sequence[dict[str, Any]]) -> list[int]:
        """Keep audit entries (free of secrets, each with its ISO "time"), in order, in one durable
        transaction; returns their seqs. Trims the oldest beyond the retention."""
        with self._write() as conn:
            return self._insert_audit(conn, entries)

    def _insert_audit(self, conn: sqlite3.Connection, entries: Sequence[dict[str, Any]]) -> list[int]:
        seqs: list[int] = []
        for entry in entries:
            cur = conn.execute("INSERT INTO audit (time, entry) VALUES (?, ?)",
                               (entry["time"], json.dumps(entry, sort_keys=True)))
            seqs.append(int(cur.lastrowid or 0))
        if seqs and seqs[-1] // 1000 != (seqs[0] - 1) // 1000:  # crossed a multiple of 1000
            conn.execute("DELETE FROM audit WHERE seq <= ?", (seqs[-1] - self.audit_retention,))
        return seqs

    def audit(self, since: str | None = None, limit: int = 1000) -> list[tuple[int, dict[str, Any]]]:
        """The newest `limit` audit entries at or after `since` (ISO time), oldest first."""
        sql, args = "SELECT seq, entry FROM audit", []
        if since is not None:
            sql += " WHERE time >= ?"
            args.append(since)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        with self._read() as conn:
            rows = conn.execute(sql, args).fetchall()
        return [(seq, json.loads(e)) for seq, e in reversed(rows)]

    # ----------------------------------------------------------------- agents

    def put_agent(self, host: str, report: dict[str, Any], seen: datetime) -> None:
        """Record an agent's latest report; this is runtime state, not a revision. Kept in
        memory and saved behind, a burst at a time (controller.agent_reports)."""
        self._agent_reports.put(AgentRecord(host, report, seen))

    def agents(self) -> list[AgentRecord]:
        return self._agent_reports.all()

    def _load_agents(self) -> list[AgentRecord]:
        """The reports file's records; on the first start after the upgrade, the ones an older
        version kept in this database (its `agents` table, no longer written)."""
        loaded = self._report_file.load()
        if loaded:
            return loaded
        with self._read() as conn:
            rows = conn.execute("SELECT host, report, last_seen FROM agents ORDER BY host").fetchall()
        return [AgentRecord(h, json.loads(r), datetime.fromisoformat(s)) for h, r, s in rows]


def reports_path(db: Path) -> Path:
    """Where the agent reports of the store at `db` live: `stockade.db` → `stockade-agents.db`."""
    return db.with_name(f"{db.stem}-agents{db.suffix}")
