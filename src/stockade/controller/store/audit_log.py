"""The audit repository: stored audit entries, oldest first, with a bounded retention.

`controller.audit.AuditLog` (ordering, the write-behind queue, the JSON-lines mirror) is
built on this; a revision's own entry is stored by the state store's `commit` in the
revision's transaction (`insert_entries` is that shared step for SQLite).

Invariants: entries arrive free of secrets, each with its ISO "time"; seqs increase in
the order entries are stored; the newest `retention` entries are kept.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Protocol, Sequence

from stockade.controller.store.sqlite_file import SqliteFile

DEFAULT_AUDIT_RETENTION = 100_000


class AuditRepository(Protocol):
    def append(self, entries: Sequence[dict[str, Any]]) -> list[int]:
        """Store `entries` in order, in one durable transaction; return their seqs."""
        ...

    def entries(self, since: str | None = None, limit: int = 1000) -> list[tuple[int, dict[str, Any]]]:
        """The newest `limit` entries at or after `since` (ISO time), oldest first, with their seqs."""
        ...


def insert_entries(conn: sqlite3.Connection, entries: Sequence[dict[str, Any]], retention: int) -> list[int]:
    """Insert `entries` inside the caller's transaction; trims the oldest beyond `retention`."""
    seqs: list[int] = []
    for entry in entries:
        cur = conn.execute("INSERT INTO audit (time, entry) VALUES (?, ?)",
                           (entry["time"], json.dumps(entry, sort_keys=True)))
        seqs.append(int(cur.lastrowid or 0))
    if seqs and seqs[-1] // 1000 != (seqs[0] - 1) // 1000:  # crossed a multiple of 1000
        conn.execute("DELETE FROM audit WHERE seq <= ?", (seqs[-1] - retention,))
    return seqs


class SqliteAudit:
    """Audit entries in the revisions' database file (`SqliteFile`, which it does not own)."""

    def __init__(self, db: SqliteFile, retention: int = DEFAULT_AUDIT_RETENTION) -> None:
        self._db = db
        self.retention = retention

    def append(self, entries: Sequence[dict[str, Any]]) -> list[int]:
        with self._db.write() as conn:
            return insert_entries(conn, entries, self.retention)

    def entries(self, since: str | None = None, limit: int = 1000) -> list[tuple[int, dict[str, Any]]]:
        sql, args = "SELECT seq, entry FROM audit", []
        if since is not None:
            sql += " WHERE time >= ?"
            args.append(since)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        with self._db.read() as conn:
            rows = conn.execute(sql, args).fetchall()
        return [(seq, json.loads(e)) for seq, e in reversed(rows)]
