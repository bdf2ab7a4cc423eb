"""Whole-store dump and load for the SQLite backend (`store.archive.StoreArchive`).

A dump is read in ONE read transaction (WAL snapshot isolation), so it is one revision with
the tokens and audit entries of that moment, while the controller goes on writing. A load is
ONE write transaction into a file that holds no revision, token or audit entry: a restore
is whole, or nothing of it is stored.
"""

from __future__ import annotations

import json
import sqlite3

from stockade.controller.store.archive import RevisionRecord, StoreDump, final_objects
from stockade.controller.store.sqlite_file import SqliteFile, read_lineage
from stockade.controller.store.tokens import insert_tokens, token_rows
from stockade.controller.store.types import Change, Revision, canonical_json
from stockade.errors import ConflictError
from stockade.model.kinds import ObjectKey


def _meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


class SqliteArchive:
    """Dump and load the store in a `SqliteFile` (which it does not own)."""

    def __init__(self, db: SqliteFile) -> None:
        self._db = db

    def dump(self, created: str) -> StoreDump:
        with self._db.read() as conn:
            changes: dict[int, list[Change]] = {}
            for rev, kind, ns, name, doc in conn.execute(
                    "SELECT rev, kind, namespace, name, document FROM history ORDER BY rev, seq"):
                changes.setdefault(rev, []).append(
                    Change(ObjectKey(kind, ns, name), json.loads(doc) if doc is not None else None))
            records = tuple(RevisionRecord(Revision(*row), tuple(changes.get(row[0], ())))
                            for row in conn.execute("SELECT rev, author, message, time FROM revisions ORDER BY rev"))
            tokens = tuple(token_rows(conn))
            revoked = tuple((r[0], r[1]) for r in
                            conn.execute("SELECT sha256, revoked FROM revoked_hashes ORDER BY revoked, sha256"))
            audit = tuple((seq, json.loads(entry)) for seq, entry in
                          conn.execute("SELECT seq, entry FROM audit ORDER BY seq"))
            objects = conn.execute("SELECT COUNT(*) FROM objects").fetchone()[0]
            cluster_id = _meta(conn, "cluster_id") or self._db.cluster_id
            compacted = int(_meta(conn, "compacted") or 0)
            lineage = read_lineage(conn)
        return StoreDump(cluster_id, len(records), compacted, records, tokens, revoked, audit, lineage, created,
                         "sqlite", objects)

    def load(self, dump: StoreDump) -> None:
        with self._db.write() as conn:
            held = [what for what, sql in (("revisions", "SELECT COUNT(*) FROM revisions"),
                                           ("API tokens", "SELECT COUNT(*) FROM tokens"),
                                           ("revocations", "SELECT COUNT(*) FROM revoked_hashes"),
                                           ("audit entries", "SELECT COUNT(*) FROM audit"))
                    if conn.execute(sql).fetchone()[0]]
            if held:
                raise ConflictError(f"{self._db.path} holds a store already ({', '.join(held)}): a restore or "
                                    "migration writes only into an empty store; nothing was written")
            for record in dump.revisions:
                r = record.revision
                conn.execute("INSERT INTO revisions (rev, author, message, time) VALUES (?, ?, ?, ?)",
                             (r.number, r.author, r.message, r.time))
                for seq, change in enumerate(record.changes):
                    k = change.key
                    row = (r.number, seq, "PUT" if change.document is not None else "DELETE", k.kind, k.namespace,
                           k.name, canonical_json(change.document) if change.document is not None else None)
                    conn.execute("INSERT INTO history (rev, seq, type, kind, namespace, name, document) "
                                 "VALUES (?, ?, ?, ?, ?, ?, ?)", row)
                    if r.number > dump.compacted:  # the event window as the source kept it
                        conn.execute("INSERT INTO events (rev, seq, type, kind, namespace, name, document) "
                                     "VALUES (?, ?, ?, ?, ?, ?, ?)", row)
            conn.executemany("INSERT INTO objects (kind, namespace, name, document, rev) VALUES (?, ?, ?, ?, ?)",
                             [(k.kind, k.namespace, k.name, canonical_json(doc), rev)
                              for k, (rev, doc) in final_objects(dump.revisions).items()])
            insert_tokens(conn, dump.tokens)
            conn.executemany("INSERT INTO revoked_hashes (sha256, revoked) VALUES (?, ?)", dump.revoked)
            # Explicit seqs: AUTOINCREMENT goes on after the highest, as it did in the source.
            conn.executemany("INSERT INTO audit (seq, time, entry) VALUES (?, ?, ?)",
                             [(seq, entry.get("time", ""), json.dumps(entry, sort_keys=True))
                              for seq, entry in dump.audit])
            for key, value in (("cluster_id", dump.cluster_id), ("compacted", str(dump.compacted)),
                               ("lineage", json.dumps(list(dump.lineage)))):
                conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                             "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))
        self._db.reload_identity()

    def discard(self) -> None:
        with self._db.write() as conn:
            for table in ("revisions", "history", "events", "objects", "tokens", "revoked_hashes", "audit"):
                conn.execute(f"DELETE FROM {table}")
            conn.execute("DELETE FROM meta WHERE key IN ('compacted', 'lineage')")
        self._db.reload_identity()
