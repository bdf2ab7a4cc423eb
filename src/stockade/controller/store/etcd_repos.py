"""The repositories beside the etcd state store: tokens, audit entries, agent reports.

Each implements its Protocol (`store.tokens`, `store.audit_log`, `store.agent_reports`) on
the same etcd cluster and key prefix as `store.etcd` (keys: `store.etcd_layout`), so every
controller replica sees the same tokens, revocations and audit log.

Invariants:
- Audit seqs come from one counter key (`audit-seq`), moved by compare-and-swap in the same
  transaction that stores the entries (and, for a revision's own entry, the revision: see
  `audit_ops`): seqs increase in the order entries are stored, across replicas, none twice.
- A revocation is stored once, with the time of the first one, and never undone.
- Agent reports are runtime state: each replica keeps the newest per host in memory and saves
  them behind (`agent_reports.AgentReports`) to `agents/HOST`, loaded when a replica starts
  and taken again by `refresh` (controller.replicas calls it), so every replica's status
  shows every agent within about a second.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from typing import Any, Sequence

from stockade.controller.store.agent_reports import AgentRecord, WriteBehindReports
from stockade.controller.store.audit_log import DEFAULT_AUDIT_RETENTION
from stockade.controller.store.etcd_kv import EtcdKV, OutcomeUnknown, mod_is, prefix_end, put
from stockade.controller.store.etcd_kv import delete as delete_op
from stockade.controller.store.etcd_layout import Layout
from stockade.controller.store.tokens import StoredToken
from stockade.controller.store.types import canonical_json
from stockade.errors import ConflictError

MAX_ATTEMPTS = 50
REPORTS_PER_TXN = 100  # within etcd's default --max-txn-ops (128): reports are saved independently
REPORT_BYTES_PER_TXN = 1024 * 1024  # within etcd's default --max-request-bytes (1.5 MiB)


def json_value(value: Any) -> bytes:
    """A value as the store writes it (`types.canonical_json`), as etcd takes it."""
    return canonical_json(value).encode()


def token_value(token: StoredToken) -> bytes:
    return json_value({**asdict(token), "namespaces": list(token.namespaces)})


def token_from_value(value: bytes) -> StoredToken:
    t = json.loads(value)
    return StoredToken(**{**t, "namespaces": tuple(t["namespaces"])})


def _seq(key: bytes) -> int:
    return int(key.rsplit(b"/", 1)[1])


def audit_ops(layout: Layout, last: int, entries: Sequence[dict[str, Any]],
              retention: int) -> tuple[list[dict[str, Any]], list[int]]:
    """The puts that store `entries` after seq `last` (and move the counter), and their seqs;
    when the seqs cross a multiple of 1000, a delete of the entries beyond `retention` (as SQLite)."""
    seqs = [last + i + 1 for i in range(len(entries))]
    ops = [put(layout.audit(seq), json_value(entry)) for seq, entry in zip(seqs, entries)]
    if seqs:
        ops.append(put(layout.audit_seq, str(seqs[-1]).encode()))
        cut = seqs[-1] - retention
        if seqs[-1] // 1000 != (seqs[0] - 1) // 1000 and cut >= 1:
            ops.append(delete_op(layout.audit(0), layout.audit(cut + 1)))
    return ops, seqs


class EtcdAudit:
    """Audit entries under `PREFIX audit/`, numbered by `PREFIX audit-seq`."""

    def __init__(self, kv: EtcdKV, layout: Layout, retention: int = DEFAULT_AUDIT_RETENTION) -> None:
        self._kv = kv
        self._layout = layout
        self.retention = retention

    def append(self, entries: Sequence[dict[str, Any]]) -> list[int]:
        if not entries:
            return []
        sent: list[int] = []  # the seqs of a transaction sent without an answer
        for _ in range(MAX_ATTEMPTS):
            _, seq_kv = self._kv.get(self._layout.audit_seq)
            last = int(seq_kv.value) if seq_kv is not None else 0
            if sent and last >= sent[-1]:
                _, first = self._kv.get(self._layout.audit(sent[0]))
                if first is not None and first.value == json_value(entries[0]):
                    return sent  # that transaction was applied
            ops, seqs = audit_ops(self._layout, last, entries, self.retention)
            try:
                if self._kv.txn([mod_is(self._layout.audit_seq, seq_kv.mod_revision if seq_kv else 0)],
                                ops).succeeded:
                    return seqs
            except OutcomeUnknown:
                sent = seqs
        raise ConflictError(f"audit entries lost {MAX_ATTEMPTS} races to other writers in a row")

    def entries(self, since: str | None = None, limit: int = 1000) -> list[tuple[int, dict[str, Any]]]:
        out: list[tuple[int, dict[str, Any]]] = []
        if limit <= 0:
            return out
        start = self._layout.audit(0)
        for kv in self._kv.scan_descending(start, prefix_end(start[:-12])):
            entry = json.loads(kv.value)
            if since is None or entry["time"] >= since:
                out.append((_seq(kv.key), entry))
                if len(out) >= limit:
                    break
        return list(reversed(out))


class EtcdTokens:
    """API tokens under `PREFIX tokens/ID` (hashes only), revocations under `PREFIX revoked/SHA256`."""

    def __init__(self, kv: EtcdKV, layout: Layout) -> None:
        self._kv = kv
        self._layout = layout

    def add(self, token: StoredToken) -> None:
        key, value = self._layout.token(token.id), token_value(token)
        for _ in range(MAX_ATTEMPTS):
            try:
                if self._kv.txn([mod_is(key, 0)], [put(key, value)]).succeeded:
                    return
            except OutcomeUnknown:
                continue  # the next round finds it stored (ours) or absent (try again)
            _, stored = self._kv.get(key)
            if stored is not None and stored.value == value:
                return
            raise ConflictError(f"a token with id {token.id} exists already")
        raise ConflictError(f"token {token.id} could not be stored")

    def all(self) -> list[StoredToken]:
        tokens = [token_from_value(kv.value) for kv in self._kv.scan(self._layout.tokens, prefix_end(self._layout.tokens), 0)]
        return sorted(tokens, key=lambda t: (t.created, t.id))

    def revoke_hash(self, sha256: str, when: str) -> None:
        mark = self._layout.revoked(sha256)
        for _ in range(MAX_ATTEMPTS):
            at, revoked = self._kv.get(mark)
            compare = [mod_is(mark, revoked.mod_revision if revoked is not None else 0)]
            ops = [] if revoked is not None else [put(mark, when.encode())]
            for kv in self._kv.scan(self._layout.tokens, prefix_end(self._layout.tokens), at):
                t = json.loads(kv.value)
                if t["sha256"] == sha256 and t["revoked"] is None:
                    compare.append(mod_is(kv.key, kv.mod_revision))
                    ops.append(put(kv.key, json_value({**t, "revoked": when})))
            if not ops:
                return  # revoked already: a revocation is never changed
            try:
                if self._kv.txn(compare, ops).succeeded:
                    return
            except OutcomeUnknown:
                continue  # revoking again is harmless: the next round sees what was stored
        raise ConflictError(f"the revocation of {sha256[:12]}… lost {MAX_ATTEMPTS} races in a row")

    def revoked_hashes(self) -> set[str]:
        prefix = self._layout.revoked_all
        return {kv.key[len(prefix):].decode() for kv in self._kv.scan(prefix, prefix_end(prefix), 0)}


class EtcdAgentReports(WriteBehindReports):
    """Reports in memory, saved behind to `PREFIX agents/HOST` (one transaction per burst)."""

    def __init__(self, kv: EtcdKV, layout: Layout, flush_delay: float = 0.5) -> None:
        self._kv = kv
        self._layout = layout
        super().__init__(self._load(), self._save, flush_delay)

    def refresh(self) -> None:
        """Take the reports other replicas saved (an agent reports to one replica at a time)."""
        self._reports.merge(self._load())

    def _load(self) -> list[AgentRecord]:
        prefix = self._layout.agents
        records = []
        for kv in self._kv.scan(prefix, prefix_end(prefix), 0):
            r = json.loads(kv.value)
            records.append(AgentRecord(r["host"], r["report"], datetime.fromisoformat(r["lastSeen"])))
        return records

    def _save(self, batch: list[AgentRecord]) -> None:
        # Reports carry rule counters (up to the agent's cap: a few hundred KB), so a transaction is
        # bounded by bytes as well as by operations, within etcd's default --max-request-bytes.
        ops: list[Any] = []
        size = 0
        for r in batch:
            value = json_value({"host": r.host, "report": r.report,
                                "lastSeen": r.last_seen.isoformat(timespec="milliseconds")})
            if ops and (len(ops) >= REPORTS_PER_TXN or size + len(value) > REPORT_BYTES_PER_TXN):
                self._kv.txn([], ops)  # an error leaves the batch to the next burst (AgentReports)
                ops, size = [], 0
            ops.append(put(self._layout.agent(r.host), value))
            size += len(value)
        if ops:
            self._kv.txn([], ops)
