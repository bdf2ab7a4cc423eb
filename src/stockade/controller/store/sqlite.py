"""The SQLite backend of the state store: objects, numbered revisions, a bounded event log, history.

Implements `store.protocol.StateStore` on one database file (`store.sqlite_file`), which
the token and audit repositories share, so a revision and its audit entry are one
transaction.

Invariants:
- Every write of desired state is ONE transaction that creates ONE revision
  (number, author, message, UTC time) with at least one event; revision numbers
  are consecutive from 1. Revision 0 is the empty store.
- Compare-and-swap: the resourceVersions a commit expects are checked inside its own
  write transaction (BEGIN IMMEDIATE holds the file's write lock), so a second writer on
  the same file cannot slip in between the check and the write.
- The objects table always equals the replay of every revision's events.
- The event log keeps whole revisions only: events of revisions <= `compacted`
  are gone, every later one is complete. A reader asking for events after a
  revision older than `compacted` gets `Gone` and must relist.
- The history table keeps every change of every revision forever (the event log
  above is only the watch's window): it answers "what changed in revision N" and
  "what was the state at revision N" for history, diff and rollback.
- A revision and the audit entries handed to `commit` are one transaction: both are
  stored, or neither. Durability: see `store.sqlite_file` (synchronous=FULL, always).
- Documents are stored as given (already validated by the service); the store
  knows nothing of their meaning beyond kind, namespace and name.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Sequence

from stockade.controller.store.audit_log import DEFAULT_AUDIT_RETENTION, insert_entries
from stockade.controller.store.sqlite_file import SqliteFile
from stockade.controller.store.types import (
    DEFAULT_EVENT_RETENTION,
    AuditRows,
    Change,
    Committed,
    Event,
    EventType,
    Revision,
    StaleBase,
    canonical_json,
    stale_versions,
)
from stockade.errors import ConflictError, Gone
from stockade.model.kinds import ObjectKey



def _event(row: Sequence[Any]) -> Event:
    """An event from its row: (rev, seq, type, kind, namespace, name, document JSON or None)."""
    return Event(row[0], row[1], row[2], ObjectKey(row[3], row[4], row[5]),
                 json.loads(row[6]) if row[6] is not None else None)


class SqliteStateStore:
    """The state store on a `SqliteFile`, which it owns (closing this closes the file)."""

    def __init__(self, db: SqliteFile, event_retention: int = DEFAULT_EVENT_RETENTION,
                 audit_retention: int = DEFAULT_AUDIT_RETENTION) -> None:
        if event_retention < 1:
            raise ValueError("event_retention must be at least 1")
        self.db = db
        self.event_retention = event_retention
        self.audit_retention = audit_retention

    @classmethod
    def open(cls, path: Path | str, event_retention: int = DEFAULT_EVENT_RETENTION) -> SqliteStateStore:
        return cls(SqliteFile(path), event_retention)

    @property
    def path(self) -> Path:
        return self.db.path

    @property
    def cluster_id(self) -> str:
        return self.db.cluster_id

    @property
    def lineage(self) -> tuple[str, ...]:
        return self.db.lineage

    def close(self) -> None:
        self.db.close()

    # ---------------------------------------------------------------- reading

    @staticmethod
    def _revision(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT COALESCE(MAX(rev), 0) FROM revisions").fetchone()[0])

    @staticmethod
    def _compacted(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT value FROM meta WHERE key = 'compacted'").fetchone()
        return int(row[0]) if row else 0

    def revision(self) -> int:
        with self.db.read() as conn:
            return self._revision(conn)

    def objects(self, kind: str | None = None, namespace: str | None = None,
                name: str | None = None) -> tuple[int, list[dict[str, Any]]]:
        where, args = [], []
        for column, value in (("kind", kind), ("namespace", namespace), ("name", name)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT document FROM objects"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY kind, namespace, name"
        with self.db.read() as conn:
            rev = self._revision(conn)
            docs = [json.loads(row[0]) for row in conn.execute(sql, args)]
        return rev, docs

    def events_since(self, since: int) -> tuple[int, list[Event]]:
        with self.db.read() as conn:
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

    def compacted(self) -> int:
        with self.db.read() as conn:
            return self._compacted(conn)

    def revisions(self, limit: int | None = None) -> list[Revision]:
        sql = "SELECT rev, author, message, time FROM revisions ORDER BY rev DESC"
        args: tuple[int, ...] = ()
        if limit is not None:
            sql += " LIMIT ?"
            args = (limit,)
        with self.db.read() as conn:
            return [Revision(*row) for row in conn.execute(sql, args)]

    def revision_info(self, number: int) -> Revision | None:
        with self.db.read() as conn:
            row = conn.execute("SELECT rev, author, message, time FROM revisions WHERE rev = ?",
                               (number,)).fetchone()
        return Revision(*row) if row is not None else None

    def object_revisions(self) -> dict[ObjectKey, int]:
        with self.db.read() as conn:
            return self._object_revisions(conn)

    @staticmethod
    def _object_revisions(conn: sqlite3.Connection) -> dict[ObjectKey, int]:
        return {ObjectKey(k, ns, n): rev
                for k, ns, n, rev in conn.execute("SELECT kind, namespace, name, rev FROM objects")}

    def changes_of(self, revisions: Sequence[int]) -> dict[int, list[tuple[EventType, ObjectKey]]]:
        out: dict[int, list[tuple[EventType, ObjectKey]]] = {r: [] for r in revisions}
        if not revisions:
            return out
        marks = ",".join("?" * len(revisions))
        with self.db.read() as conn:
            for rev, typ, kind, ns, name in conn.execute(
                    f"SELECT rev, type, kind, namespace, name FROM history WHERE rev IN ({marks}) "
                    "ORDER BY rev, seq", list(revisions)):
                out[rev].append((typ, ObjectKey(kind, ns, name)))
        return out

    def objects_at(self, revision: int) -> list[dict[str, Any]]:
        with self.db.read() as conn:
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

    def commit(self, changes: Sequence[Change], author: str, message: str, time: datetime, *,
               expected: Mapping[ObjectKey, str] | None = None, audit: AuditRows | None = None,
               base: int | None = None) -> Committed:
        if not changes:
            raise ValueError("a revision needs at least one change")
        when = time.isoformat(timespec="milliseconds")
        rows: list[tuple[int, int, str, str, str, str, str | None]] = []
        seqs: list[int] = []
        with self.db.write() as conn:
            rev = self._revision(conn) + 1
            if base is not None and rev - 1 != base:
                raise StaleBase(f"the store moved on to revision {rev - 1} while this change was checked "
                                f"against revision {base}; send it again")
            if expected:
                stale = stale_versions(expected, self._object_revisions(conn))
                if stale:
                    raise ConflictError("; ".join(stale))
            conn.execute("INSERT INTO revisions (rev, author, message, time) VALUES (?, ?, ?, ?)",
                         (rev, author, message, when))
            for seq, change in enumerate(changes):
                k = change.key
                if change.document is None:
                    conn.execute("DELETE FROM objects WHERE kind = ? AND namespace = ? AND name = ?",
                                 (k.kind, k.namespace, k.name))
                    doc_json = None
                else:
                    doc_json = canonical_json(change.document)
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
                seqs = insert_entries(conn, audit(rev), self.audit_retention)
        return Committed(Revision(rev, author, message, when), tuple(_event(r) for r in rows), tuple(seqs))

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
