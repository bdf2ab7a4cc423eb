"""A whole store as one value, and its backup file: what backup, restore and migrate move.

Pure data and its file format, no store I/O. A backend's archive (`store.sqlite_archive`,
`store.etcd_archive`) reads a `StoreDump` at one revision and loads one into an empty store;
`store.operations` strings those into backup, restore and migrate.

What a dump holds is everything that is the store's own and not runtime state: every revision
with its author, message, time and changes (so history, diff and rollback work after a
restore, and revision numbers are kept), the event window's bound, API tokens (SHA-256 hashes
only, never a secret) and revocations, and the audit log. Agent reports are left out: agents
report again within seconds.

The backup file is one JSON document (UTF-8), `format: stockade-backup`, `version: 1`, with a
`checksum` (`sha256:` of the canonical JSON of every other field), so a torn, truncated or
edited file is refused before anything is written. Its fields are in docs/operations.md.

Invariants checked on reading (`dump_from_document`): revisions are numbered 1..`revision`
without a gap, each with at least one change; every change names kind, namespace and name;
`compacted` <= `revision`; the checksum matches.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol

from stockade.controller.store.tokens import StoredToken
from stockade.controller.store.types import Change, Revision
from stockade.errors import ValidationError
from stockade.model.kinds import ObjectKey
from stockade.private_files import write_private

FORMAT = "stockade-backup"
VERSION = 1


@dataclass(frozen=True)
class RevisionRecord:
    """One revision as history keeps it: who, when, why, and its changes in commit order."""

    revision: Revision
    changes: tuple[Change, ...]


@dataclass(frozen=True)
class StoreDump:
    """Everything of one store at revision `revision` (see the module's docstring)."""

    cluster_id: str
    revision: int
    compacted: int
    revisions: tuple[RevisionRecord, ...]
    tokens: tuple[StoredToken, ...] = ()
    revoked: tuple[tuple[str, str], ...] = ()          # (sha256, time of the revocation)
    audit: tuple[tuple[int, dict[str, Any]], ...] = ()  # (seq, entry), oldest first
    # The identities this store was restored from, oldest first: an agent that enforces a
    # program of one of them takes this store's state as a deliberate restore (agent.loop).
    lineage: tuple[str, ...] = ()
    created: str = ""                                   # when the dump was taken (UTC, ISO 8601)
    source: str = ""                                    # the kind of store it was taken from
    objects: int = field(default=0, compare=False)      # objects at `revision` (for the summary)

    def summary(self) -> str:
        return (f"revision {self.revision}, {self.objects} objects, {len(self.revisions)} revisions of history, "
                f"{len(self.tokens)} API tokens, {len(self.revoked)} revocations, {len(self.audit)} audit entries")


class StoreArchive(Protocol):
    """A backend's reader and writer of whole stores."""

    def dump(self, created: str) -> StoreDump:
        """Everything of the store at one revision, read in one consistent snapshot."""
        ...

    def load(self, dump: StoreDump) -> None:
        """Write `dump` into this store, which must hold no revision, token or audit entry
        (else ConflictError, and nothing is written). Afterwards the store answers exactly as the
        one dumped: same identity, revision numbers, history, tokens and audit log."""
        ...

    def discard(self) -> None:
        """Remove the store `load` wrote, leaving an empty store (a migration whose source moved on)."""
        ...


def final_objects(revisions: Iterable[RevisionRecord]) -> dict[ObjectKey, tuple[int, dict[str, Any]]]:
    """The objects after every revision: key -> (revision that last changed it, document)."""
    state: dict[ObjectKey, tuple[int, dict[str, Any]]] = {}
    for record in revisions:
        for change in record.changes:
            if change.document is None:
                state.pop(change.key, None)
            else:
                state[change.key] = (record.revision.number, change.document)
    return state


# ------------------------------------------------------------------ the file


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def document_of(dump: StoreDump) -> dict[str, Any]:
    """The backup file's JSON document for `dump`, checksum included."""
    body: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "clusterId": dump.cluster_id, "lineage": list(dump.lineage),
        "revision": dump.revision, "compacted": dump.compacted, "created": dump.created, "source": dump.source,
        "objects": dump.objects,
        "revisions": [{"number": r.revision.number, "author": r.revision.author, "message": r.revision.message,
                       "time": r.revision.time,
                       "changes": [["PUT" if c.document is not None else "DELETE", c.key.kind, c.key.namespace,
                                    c.key.name, c.document] for c in r.changes]}
                      for r in dump.revisions],
        "tokens": [{**asdict(t), "namespaces": list(t.namespaces)} for t in dump.tokens],
        "revoked": [{"sha256": sha, "time": when} for sha, when in dump.revoked],
        "audit": [{"seq": seq, "entry": entry} for seq, entry in dump.audit],
    }
    body["checksum"] = "sha256:" + hashlib.sha256(_canonical(body)).hexdigest()
    return body


def _problem(field_name: str, message: str) -> ValidationError:
    return ValidationError.single("backup", field_name, message)


def _need(doc: Mapping[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _problem(f"{where}{name}", f"missing or not a {getattr(kind, '__name__', 'value')}")
    return value


def dump_from_document(doc: Any) -> StoreDump:
    """The dump a backup file's document holds; ValidationError naming the field when it is not one."""
    if not isinstance(doc, dict):
        raise _problem("", "a backup is a JSON object")
    if doc.get("format") != FORMAT:
        raise _problem("format", f"is {doc.get('format')!r}, not {FORMAT!r}: not a Stockade backup")
    if doc.get("version") != VERSION:
        raise _problem("version", f"is {doc.get('version')!r}; this Stockade reads version {VERSION}")
    body = {k: v for k, v in doc.items() if k != "checksum"}
    wanted = "sha256:" + hashlib.sha256(_canonical(body)).hexdigest()
    if doc.get("checksum") != wanted:
        raise _problem("checksum", "does not match the content: the file is damaged or was edited")
    revision = _need(doc, "revision", int, "")
    compacted = _need(doc, "compacted", int, "")
    if not 0 <= compacted <= revision:
        raise _problem("compacted", f"{compacted} is not between 0 and the revision {revision}")
    records: list[RevisionRecord] = []
    for i, r in enumerate(_need(doc, "revisions", list, "")):
        where = f"revisions[{i}]."
        if not isinstance(r, dict):
            raise _problem(f"revisions[{i}]", "not an object")
        number = _need(r, "number", int, where)
        if number != i + 1:
            raise _problem(f"{where}number", f"is {number}, expected {i + 1}: revisions must run 1, 2, 3, ...")
        changes: list[Change] = []
        for j, c in enumerate(_need(r, "changes", list, where)):
            if (not isinstance(c, list) or len(c) != 5 or c[0] not in ("PUT", "DELETE")
                    or not all(isinstance(p, str) for p in c[1:4])
                    or (c[0] == "PUT") != isinstance(c[4], dict)):
                raise _problem(f"{where}changes[{j}]", "expected [PUT|DELETE, kind, namespace, name, document|null]")
            changes.append(Change(ObjectKey(c[1], c[2], c[3]), c[4]))
        if not changes:
            raise _problem(f"{where}changes", "a revision has at least one change")
        records.append(RevisionRecord(Revision(number, _need(r, "author", str, where), _need(r, "message", str, where),
                                               _need(r, "time", str, where)), tuple(changes)))
    if len(records) != revision:
        raise _problem("revisions", f"holds {len(records)} revisions, but the backup is of revision {revision}")
    try:
        tokens = tuple(StoredToken(**{**t, "namespaces": tuple(t["namespaces"])})
                       for t in _need(doc, "tokens", list, ""))
        revoked = tuple((str(r["sha256"]), str(r["time"])) for r in _need(doc, "revoked", list, ""))
        audit = tuple((int(a["seq"]), dict(a["entry"])) for a in _need(doc, "audit", list, ""))
    except (TypeError, KeyError, ValueError) as e:
        raise _problem("tokens/revoked/audit", f"malformed entry: {e}") from None
    lineage = tuple(str(x) for x in _need(doc, "lineage", list, ""))
    return StoreDump(_need(doc, "clusterId", str, ""), revision, compacted, tuple(records), tokens, revoked, audit,
                     lineage, str(doc.get("created", "")), str(doc.get("source", "")), int(doc.get("objects", 0)))


def write_backup(path: Path, dump: StoreDump) -> None:
    """Write the backup file (0600: it holds token hashes and the audit log), whole or not at all."""
    write_private(path, json.dumps(document_of(dump), ensure_ascii=False, separators=(",", ":")) + "\n",
                  durable=True)


def read_backup(path: Path) -> StoreDump:
    """The dump in the backup file at `path`; ValidationError naming the file's problem."""
    try:
        doc = json.loads(path.read_bytes())
    except OSError as e:
        raise ValidationError.single("backup", str(path), f"cannot be read: {e.strerror or e}") from None
    except ValueError as e:
        raise ValidationError.single("backup", str(path), f"is not JSON (truncated?): {e}") from None
    return dump_from_document(doc)
