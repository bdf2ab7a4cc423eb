"""Whole-store dump and load for the etcd backend (`store.archive.StoreArchive`).

A dump reads every key of the store at ONE etcd revision (the head's read), page by page, so
it is one Stockade revision with the tokens and audit entries of that moment, while the
controllers go on writing.

A load cannot be one etcd transaction (a store's history is larger than etcd's request
limit), so it writes every key but the head first, in transactions within etcd's default
limits, and the head (with the identity) last, in a transaction that requires the head to be
absent. Until that last one, the prefix reads as an empty store (revision 0) to any
controller; if a step fails, what was written is deleted again, so a restore is whole or
nothing of it is left.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from stockade.controller.store.archive import RevisionRecord, StoreDump, final_objects
from stockade.controller.store.etcd import Head, object_value, revision_value
from stockade.controller.store.etcd_kv import EtcdKV, mod_is, prefix_end, put
from stockade.controller.store.etcd_kv import delete as delete_op
from stockade.controller.store.etcd_layout import Layout
from stockade.controller.store.etcd_repos import json_value, token_from_value, token_value
from stockade.controller.store.types import Change, Revision
from stockade.errors import ConflictError
from stockade.model.kinds import ObjectKey

# Within etcd's defaults (--max-txn-ops 128, --max-request-bytes 1.5 MiB, base64 on the wire),
# so a restore needs no special member flags beyond what its largest revision needs.
OPS_PER_TXN = 100
BYTES_PER_TXN = 700_000


def _number(key: bytes) -> int:
    return int(key.rsplit(b"/", 1)[1])


class EtcdArchive:
    """Dump and load the store under `layout`'s prefix through `kv` (which it does not own)."""

    def __init__(self, kv: EtcdKV, layout: Layout, on_loaded: Callable[[], None] = lambda: None) -> None:
        self._kv = kv
        self._layout = layout
        self._on_loaded = on_loaded  # the state store reads its new identity (EtcdStateStore.reload_identity)

    def _scan(self, prefix: bytes, at: int) -> list[Any]:
        return list(self._kv.scan(prefix, prefix_end(prefix), at))

    def dump(self, created: str) -> StoreDump:
        lay = self._layout
        at, head_kv = self._kv.get(lay.head)
        head = Head.of(head_kv)
        records = []
        events = {_number(kv.key): json.loads(kv.value) for kv in self._scan(lay.event_prefix, at)}
        for kv in self._scan(lay.revision_prefix, at):
            r = json.loads(kv.value)
            changes = tuple(Change(ObjectKey(kind, ns, name), doc) for _, kind, ns, name, doc in events[r["number"]])
            records.append(RevisionRecord(Revision(int(r["number"]), r["author"], r["message"], r["time"]), changes))
        tokens = tuple(token_from_value(kv.value) for kv in self._scan(lay.tokens, at))
        revoked = tuple((kv.key[len(lay.revoked_all):].decode(), kv.value.decode())
                        for kv in self._scan(lay.revoked_all, at))
        audit = tuple((_number(kv.key), json.loads(kv.value)) for kv in self._scan(lay.audit_prefix, at))
        objects = sum(1 for _ in self._kv.scan(lay.objects, prefix_end(lay.objects), at))
        _, identity = self._kv.get(lay.cluster_id, revision=at)
        _, lineage = self._kv.get(lay.lineage, revision=at)
        return StoreDump(identity.value.decode() if identity is not None else "", head.revision, head.compacted,
                         tuple(records), tuple(sorted(tokens, key=lambda t: (t.created, t.id))),
                         tuple(sorted(revoked, key=lambda r: (r[1], r[0]))), audit,
                         tuple(json.loads(lineage.value)) if lineage is not None else (), created, "etcd", objects)

    def _held(self) -> list[str]:
        """What of a store the prefix holds already (its identity alone is no store)."""
        lay = self._layout
        held = []
        for what, prefix in (("revisions", lay.revision_prefix), ("objects", lay.objects),
                             ("API tokens", lay.tokens), ("revocations", lay.revoked_all),
                             ("audit entries", lay.audit_prefix), ("events", lay.event_prefix)):
            _, kvs, _ = self._kv.range(prefix, prefix_end(prefix), limit=1)
            if kvs:
                held.append(what)
        if self._kv.get(lay.head)[1] is not None:
            held.append("a head revision")
        return held

    def load(self, dump: StoreDump) -> None:
        lay = self._layout
        held = self._held()
        if held:
            raise ConflictError(f"the etcd prefix {lay.prefix} holds a store already ({', '.join(held)}): a restore "
                                "or migration writes only into an empty prefix; nothing was written")
        try:
            self._write(self._body(dump))
            kept = sum(len(r.changes) for r in dump.revisions if r.revision.number > dump.compacted)
            head = Head(dump.revision, dump.compacted, kept, 0)
            done = self._kv.txn([mod_is(lay.head, 0)],
                                [put(lay.head, head.value()), put(lay.cluster_id, dump.cluster_id.encode()),
                                 put(lay.lineage, json_value(list(dump.lineage)))])
            if not done.succeeded:
                raise ConflictError(f"another writer made a store under {lay.prefix} during the restore "
                                    "(is a controller running on it?); nothing of the restore was kept")
        except BaseException:
            self._undo()
            raise
        self._on_loaded()

    def _body(self, dump: StoreDump) -> list[dict[str, Any]]:
        """Every key of the store but the head and the identity, as puts."""
        lay = self._layout
        ops = []
        for record in dump.revisions:
            r = record.revision
            kinds = [("PUT" if c.document is not None else "DELETE", c.key) for c in record.changes]
            ops.append(put(lay.revision(r.number), revision_value(r.number, r.author, r.message, r.time, "", kinds)))
            ops.append(put(lay.events(r.number), json_value([[typ, k.kind, k.namespace, k.name, c.document]
                                                             for (typ, k), c in zip(kinds, record.changes)])))
        for key, (rev, doc) in final_objects(dump.revisions).items():
            ops.append(put(lay.object(key), object_value(key, rev, json_value(doc).decode())))
        ops += [put(lay.token(t.id), token_value(t)) for t in dump.tokens]
        ops += [put(lay.revoked(sha), when.encode()) for sha, when in dump.revoked]
        ops += [put(lay.audit(seq), json_value(entry)) for seq, entry in dump.audit]
        if dump.audit:
            ops.append(put(lay.audit_seq, str(max(seq for seq, _ in dump.audit)).encode()))
        return ops

    def _write(self, ops: list[dict[str, Any]]) -> None:
        batch: list[dict[str, Any]] = []
        size = 0
        for op in ops:
            weight = len(op["request_put"]["value"]) + len(op["request_put"]["key"])
            if batch and (len(batch) >= OPS_PER_TXN or size + weight > BYTES_PER_TXN):
                self._kv.txn([mod_is(self._layout.head, 0)], batch)
                batch, size = [], 0
            batch.append(op)
            size += weight
        if batch:
            self._kv.txn([mod_is(self._layout.head, 0)], batch)

    def discard(self) -> None:
        lay = self._layout
        self._kv.txn([], [delete_op(lay.head), delete_op(lay.lineage)])
        self._undo()

    def _undo(self) -> None:
        """Delete what a failed load wrote (never the head: if it exists, it is another writer's)."""
        lay = self._layout
        if self._kv.get(lay.head)[1] is not None:
            return
        for prefix in (lay.revision_prefix, lay.event_prefix, lay.objects, lay.tokens, lay.revoked_all,
                       lay.audit_prefix):
            self._kv.txn([mod_is(lay.head, 0)], [delete_op(prefix, prefix_end(prefix))])
        self._kv.txn([mod_is(lay.head, 0)], [delete_op(lay.audit_seq)])

