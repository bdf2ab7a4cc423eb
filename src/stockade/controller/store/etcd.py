"""The etcd v3 backend of the state store: one etcd transaction per revision, shared by replicas.

Implements `store.protocol.StateStore` on an etcd cluster (`store.etcd_kv`), under a key
prefix (default `/stockade/`) that holds nothing else; `store.etcd_repos` keeps tokens,
audit entries and agent reports under the same prefix. Key layout (docs/architecture.md):

    PREFIX meta/cluster_id               made once, by a create-if-absent transaction (or a restore)
    PREFIX meta/lineage                  the identities this store was restored from (JSON list)
    PREFIX head                          {"revision": N, "compacted": C, "kept": E}: the newest
                                         revision, the event window's bound, events kept in it
    PREFIX objects/KIND/NS/NAME          '{"kind","namespace","name","revision"}' LF document
    PREFIX revisions/%012d               {"number","author","message","time","commit","changes"}
    PREFIX events/%012d                  [[type, kind, namespace, name, document|null], ...]
    PREFIX audit-seq, audit/%012d        see store.etcd_repos

Invariants:
- A commit is ONE etcd transaction. It compares the head key's etcd mod revision (so the
  revision number it writes is the head's plus one: numbers stay gap-free and monotonic
  across every replica), the mod revision of every object in `expected` (compare-and-swap
  across replicas) and, with audit rows, the audit sequence key; and it puts the head, every
  object put or delete, the revision's record, its events and the audit rows. All or nothing.
- A commit whose comparison fails (another writer committed first) is planned again on the
  new head: with `base` it raises `StaleBase` instead (the caller validated against `base`),
  and a stale `expected` version raises `ConflictError`; never a commit on a state it did not check.
- A transaction sent without an answer (`OutcomeUnknown`) is resolved by reading back: every
  revision record holds the commit id of the call that wrote it, so a commit is never
  applied twice and never reported lost when it was stored.
- Events and history are one record per revision, kept forever (`events/N`): the event
  window (`compacted`) is bookkeeping in the head, so `objects_at` and `changes_of` answer
  for every revision. `objects_at` replays the events up to the revision.
- Objects are read at one etcd revision (the head's read), so an answer is one Stockade revision.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Mapping, Sequence

from stockade.controller.store.etcd_kv import EtcdKV, KeyValue, OutcomeUnknown, get, mod_is, prefix_end, put
from stockade.controller.store.etcd_kv import delete as delete_op
from stockade.controller.store.etcd_layout import Layout
from stockade.controller.store.etcd_repos import audit_ops
from stockade.controller.store.audit_log import DEFAULT_AUDIT_RETENTION
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

# Commits lost to other writers before this one gives up (each lost race means another commit
# succeeded, so the store as a whole moves on; only one writer can starve).
MAX_ATTEMPTS = 50


@dataclass(frozen=True)
class Head:
    revision: int
    compacted: int
    kept: int            # events in revisions (compacted, revision]
    mod_revision: int    # etcd's revision of the head key's last change; 0 for the empty store

    @classmethod
    def of(cls, kv: KeyValue | None) -> Head:
        if kv is None:
            return cls(0, 0, 0, 0)
        value = json.loads(kv.value)
        return cls(int(value["revision"]), int(value["compacted"]), int(value["kept"]), kv.mod_revision)

    def value(self) -> bytes:
        return canonical_json({"revision": self.revision, "compacted": self.compacted, "kept": self.kept}).encode()


@dataclass(frozen=True)
class _Snapshot:
    """Every object at one revision: key -> (revision that last changed it, document JSON)."""

    revision: int
    objects: dict[ObjectKey, tuple[int, str]]


def object_value(key: ObjectKey, revision: int, doc_json: str) -> bytes:
    header = canonical_json({"kind": key.kind, "namespace": key.namespace, "name": key.name, "revision": revision})
    return f"{header}\n{doc_json}".encode()


def parse_object(value: bytes) -> tuple[ObjectKey, int, str]:
    header, _, doc_json = value.decode().partition("\n")
    h = json.loads(header)
    return ObjectKey(h["kind"], h["namespace"], h["name"]), int(h["revision"]), doc_json


def revision_value(number: int, author: str, message: str, time: str, commit: str,
                   changes: Sequence[tuple[str, ObjectKey]]) -> bytes:
    """The value of `revisions/N`: who, when, why, the commit id, and what changed (type, key)."""
    return canonical_json({"number": number, "author": author, "message": message, "time": time, "commit": commit,
                   "changes": [[typ, k.kind, k.namespace, k.name] for typ, k in changes]}).encode()


def _order(key: ObjectKey) -> tuple[str, str, str]:
    """Objects come back by kind, namespace, name, as from every backend."""
    return key.kind, key.namespace, key.name


def _events(number: int, value: bytes) -> list[Event]:
    return [Event(number, seq, typ, ObjectKey(kind, ns, name), doc)
            for seq, (typ, kind, ns, name, doc) in enumerate(json.loads(value))]


def _revision(value: bytes) -> Revision:
    r = json.loads(value)
    return Revision(int(r["number"]), r["author"], r["message"], r["time"])


class EtcdStateStore:
    """The state store on an etcd cluster through `kv`, which it owns (closing this closes it)."""

    def __init__(self, kv: EtcdKV, layout: Layout | None = None,
                 event_retention: int = DEFAULT_EVENT_RETENTION,
                 audit_retention: int = DEFAULT_AUDIT_RETENTION) -> None:
        if event_retention < 1:
            raise ValueError("event_retention must be at least 1")
        self.kv = kv
        self.layout = layout or Layout()
        self.event_retention = event_retention
        self.audit_retention = audit_retention
        self._cache: _Snapshot | None = None
        self._cache_lock = threading.Lock()
        self._cluster_id = self._make_cluster_id()
        self._lineage = self._read_lineage()

    def _read_lineage(self) -> tuple[str, ...]:
        _, kv = self.kv.get(self.layout.lineage)
        return tuple(json.loads(kv.value)) if kv is not None else ()

    def reload_identity(self) -> None:
        """Read the identity again (after a restore wrote another one: store.etcd_archive)."""
        _, kv = self.kv.get(self.layout.cluster_id)
        self._cluster_id = kv.value.decode() if kv is not None else self._make_cluster_id()
        self._lineage = self._read_lineage()

    def _make_cluster_id(self) -> str:
        """The store's identity: created by the first controller to open the prefix, read by every other."""
        for _ in range(MAX_ATTEMPTS):
            _, known = self.kv.get(self.layout.cluster_id)  # a read first: an unreachable cluster says so here
            if known is not None:
                return known.value.decode()
            mine = uuid.uuid4().hex
            try:
                result = self.kv.txn([mod_is(self.layout.cluster_id, 0)], [put(self.layout.cluster_id, mine.encode())],
                                     [get(self.layout.cluster_id)])
            except OutcomeUnknown:
                continue  # created or not: the next try reads it, or creates it
            return mine if result.succeeded else result.ranges[0][0].value.decode()
        raise ConflictError("could not read or create the store's cluster id")

    @property
    def cluster_id(self) -> str:
        return self._cluster_id

    @property
    def lineage(self) -> tuple[str, ...]:
        return self._lineage

    def close(self) -> None:
        self.kv.close()

    # ---------------------------------------------------------------- reading

    def _head(self) -> tuple[int, Head]:
        """(etcd revision read at, the head)."""
        at, kv = self.kv.get(self.layout.head)
        return at, Head.of(kv)

    def revision(self) -> int:
        return self._head()[1].revision

    def compacted(self) -> int:
        return self._head()[1].compacted

    def _snapshot(self) -> _Snapshot:
        """Every object at the newest revision; from memory while no commit happened since."""
        at, head = self._head()
        with self._cache_lock:
            cached = self._cache
        if cached is not None and cached.revision == head.revision:
            return cached
        objects: dict[ObjectKey, tuple[int, str]] = {}
        for kv in self.kv.scan(self.layout.objects, prefix_end(self.layout.objects), at):
            key, rev, doc_json = parse_object(kv.value)
            objects[key] = (rev, doc_json)
        snapshot = _Snapshot(head.revision, objects)
        self._remember(snapshot)
        return snapshot

    def _remember(self, snapshot: _Snapshot) -> None:
        with self._cache_lock:
            if self._cache is None or self._cache.revision <= snapshot.revision:
                self._cache = snapshot

    def objects(self, kind: str | None = None, namespace: str | None = None,
                name: str | None = None) -> tuple[int, list[dict[str, Any]]]:
        snapshot = self._snapshot()
        found = [(k, doc) for k, (_, doc) in snapshot.objects.items()
                 if (kind is None or k.kind == kind) and (namespace is None or k.namespace == namespace)
                 and (name is None or k.name == name)]
        found.sort(key=lambda item: _order(item[0]))
        return snapshot.revision, [json.loads(doc) for _, doc in found]

    def object_revisions(self) -> dict[ObjectKey, int]:
        return {k: rev for k, (rev, _) in self._snapshot().objects.items()}

    def events_since(self, since: int) -> tuple[int, list[Event]]:
        at, head = self._head()
        if since < head.compacted:
            raise Gone(f"revision {since} is older than the oldest kept event (revisions after "
                       f"{head.compacted} are kept); list again")
        if since > head.revision:
            raise Gone(f"revision {since} is newer than the store's revision {head.revision}; list again")
        return head.revision, self._events_between(since, head.revision, at)

    def _events_between(self, after: int, upto: int, at: int) -> list[Event]:
        events: list[Event] = []
        if upto > after:
            for kv in self.kv.scan(self.layout.events(after + 1), self.layout.events(upto + 1), at):
                events.extend(_events(int(kv.key.rsplit(b"/", 1)[1]), kv.value))
        return events

    def revisions(self, limit: int | None = None) -> list[Revision]:
        start, end = self.layout.revision(0), prefix_end(self.layout.revision(0)[:-12])
        if limit is not None:
            if limit <= 0:
                return []
            _, kvs, _ = self.kv.range(start, end, limit=limit, descend=True)
            return [_revision(kv.value) for kv in kvs]
        return [_revision(kv.value) for kv in self.kv.scan_descending(start, end)]

    def revision_info(self, number: int) -> Revision | None:
        if number <= 0:
            return None
        _, kv = self.kv.get(self.layout.revision(number))
        return _revision(kv.value) if kv is not None else None

    def changes_of(self, revisions: Sequence[int]) -> dict[int, list[tuple[EventType, ObjectKey]]]:
        out: dict[int, list[tuple[EventType, ObjectKey]]] = {r: [] for r in revisions}
        if not revisions:
            return out
        at, _ = self._head()
        for kv in self.kv.scan(self.layout.revision(min(revisions)), self.layout.revision(max(revisions) + 1), at):
            record = json.loads(kv.value)
            if record["number"] in out:
                out[record["number"]] = [(typ, ObjectKey(kind, ns, name)) for typ, kind, ns, name in record["changes"]]
        return out

    def objects_at(self, revision: int) -> list[dict[str, Any]]:
        at, head = self._head()
        if revision > head.revision:
            raise ValueError(f"revision {revision} does not exist yet")
        state: dict[ObjectKey, dict[str, Any] | None] = {}
        for event in self._events_between(0, revision, at):
            state[event.key] = event.document
        return [doc for _, doc in sorted(state.items(), key=lambda item: _order(item[0])) if doc is not None]

    # ---------------------------------------------------------------- writing

    def commit(self, changes: Sequence[Change], author: str, message: str, time: datetime, *,
               expected: Mapping[ObjectKey, str] | None = None, audit: AuditRows | None = None,
               base: int | None = None) -> Committed:
        if not changes:
            raise ValueError("a revision needs at least one change")
        when = time.isoformat(timespec="milliseconds")
        # Serialized first: a document that cannot be stored fails the commit before anything is sent.
        docs = [canonical_json(c.document) if c.document is not None else None for c in changes]
        commit_id = uuid.uuid4().hex
        unknown: Committed | None = None  # a commit sent without an answer: maybe stored
        for _ in range(MAX_ATTEMPTS):
            at, head_kv = self.kv.get(self.layout.head)
            head = Head.of(head_kv)
            if unknown is not None and head.revision >= unknown.revision.number:
                if self._written_by(unknown.revision.number, commit_id):
                    self._after_commit(unknown.revision.number - 1, unknown, changes, docs)
                    return unknown
            if base is not None and head.revision != base:
                raise StaleBase(f"the store moved on to revision {head.revision} while this change was checked "
                                f"against revision {base}; send it again")
            compare = [mod_is(self.layout.head, head.mod_revision)]
            if expected:
                versions: dict[ObjectKey, int] = {}
                for key in expected:
                    _, kv = self.kv.get(self.layout.object(key), revision=at)
                    if kv is not None:
                        versions[key] = parse_object(kv.value)[1]
                    compare.append(mod_is(self.layout.object(key), kv.mod_revision if kv is not None else 0))
                stale = stale_versions(expected, versions)
                if stale:
                    raise ConflictError("; ".join(stale))
            number = head.revision + 1
            ops, committed = self._plan(number, head, at, changes, docs, author, message, when, commit_id)
            if audit is not None:
                rows = list(audit(number))
                if rows:
                    _, seq_kv = self.kv.get(self.layout.audit_seq, revision=at)
                    compare.append(mod_is(self.layout.audit_seq, seq_kv.mod_revision if seq_kv else 0))
                    audit_put, seqs = audit_ops(self.layout, int(seq_kv.value) if seq_kv else 0, rows,
                                                self.audit_retention)
                    ops += audit_put
                    committed = Committed(committed.revision, committed.events, tuple(seqs))
            try:
                result = self.kv.txn(compare, ops)
            except OutcomeUnknown:
                unknown = committed  # read back on the next round: stored, or not
                continue
            if result.succeeded:
                self._after_commit(head.revision, committed, changes, docs)
                return committed
            # Another writer committed (or stored audit entries) first: plan again on what is there now.
        raise ConflictError(f"the commit lost {MAX_ATTEMPTS} races to other writers in a row; send it again")

    def _plan(self, number: int, head: Head, at: int, changes: Sequence[Change], docs: list[str | None],
              author: str, message: str, when: str, commit_id: str) -> tuple[list[dict[str, Any]], Committed]:
        """The transaction's puts and deletes for revision `number` on `head`, and what it commits."""
        events: list[Event] = []
        rows: list[str] = []
        final: dict[ObjectKey, str | None] = {}  # a key given twice: its last change is what is stored
        for seq, (change, doc_json) in enumerate(zip(changes, docs)):
            k = change.key
            typ: EventType = "PUT" if doc_json is not None else "DELETE"
            events.append(Event(number, seq, typ, k, json.loads(doc_json) if doc_json is not None else None))
            rows.append(f"[{canonical_json(typ)},{canonical_json(k.kind)},{canonical_json(k.namespace)},{canonical_json(k.name)},"
                        f"{doc_json if doc_json is not None else 'null'}]")
            final[k] = doc_json
        compacted, kept = self._compact(head, len(changes), number, at)
        new_head = Head(number, compacted, kept, 0)
        ops = [put(self.layout.head, new_head.value())]
        for k, doc_json in final.items():
            ops.append(put(self.layout.object(k), object_value(k, number, doc_json)) if doc_json is not None
                       else delete_op(self.layout.object(k)))
        ops.append(put(self.layout.revision(number),
                       revision_value(number, author, message, when, commit_id, [(e.type, e.key) for e in events])))
        ops.append(put(self.layout.events(number), ("[" + ",".join(rows) + "]").encode()))
        return ops, Committed(Revision(number, author, message, when), tuple(events))

    def _compact(self, head: Head, added: int, number: int, at: int) -> tuple[int, int]:
        """The event window after a revision of `added` events: drop the oldest whole revisions
        until it fits the retention, never the newest (`number`) even when it alone is larger."""
        compacted, kept = head.compacted, head.kept + added
        start = compacted + 1
        while kept > self.event_retention and start < number:
            _, kvs, _ = self.kv.range(self.layout.revision(start), self.layout.revision(number), revision=at,
                                      limit=16)
            if not kvs:
                break
            for kv in kvs:
                if kept <= self.event_retention:
                    break
                record = json.loads(kv.value)
                kept -= len(record["changes"])
                compacted = int(record["number"])
            start = compacted + 1
        return compacted, kept

    def _written_by(self, number: int, commit_id: str) -> bool:
        _, kv = self.kv.get(self.layout.revision(number))
        return kv is not None and json.loads(kv.value).get("commit") == commit_id

    def _after_commit(self, previous: int, committed: Committed, changes: Iterable[Change],
                      docs: list[str | None]) -> None:
        """Carry the object cache to the committed revision when it held the one just before."""
        with self._cache_lock:
            cached = self._cache
        if cached is None or cached.revision != previous:
            return
        objects = dict(cached.objects)
        number = committed.revision.number
        for change, doc_json in zip(changes, docs):
            if doc_json is None:
                objects.pop(change.key, None)
            else:
                objects[change.key] = (number, doc_json)
        self._remember(_Snapshot(number, objects))
