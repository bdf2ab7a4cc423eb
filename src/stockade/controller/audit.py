"""The audit log: every write and every refusal, who, when, what, and the revision or the reason.

Entries go to the audit repository (`store.audit_log`; queryable: `GET /api/v1/audit`, `stockade audit`) and, when
configured, are appended as JSON lines to a file for a SIEM to ship. An entry is built
only from the caller's public identity (token name, role, token id), the request's route
and the outcome: never a token, a header or a request body. And whatever field a token may
still arrive in (a path like `DELETE /tokens/stk_…`, a name, a reason quoting input), anything
token-shaped is masked on the way in (`stockade.redaction`), in the store and in the file alike.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal

from stockade.clock import utc_now
from stockade.controller.store.audit_log import AuditRepository
from stockade.controller.store.types import AuditRows, Committed
from stockade.redaction import redact_value

log = logging.getLogger(__name__)

Outcome = Literal["ok", "refused", "failed"]


@dataclass(frozen=True)
class AuditEntry:
    action: str                                  # apply, delete, rollback, token.create, token.revoke, request
    outcome: Outcome
    status: int
    method: str
    path: str
    client: str
    actor: dict[str, Any] | None = None          # Principal.describe(): name, role, tokenId[, namespaces|host]
    revision: int | None = None
    objects: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, time: str) -> dict[str, Any]:
        out: dict[str, Any] = {"time": time, "action": self.action, "outcome": self.outcome,
                               "status": self.status, "method": self.method, "path": self.path,
                               "client": self.client, "actor": self.actor}
        if self.revision is not None:
            out["revision"] = self.revision
        if self.objects:
            out["objects"] = self.objects
        if self.reason:
            out["reason"] = self.reason
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass(frozen=True)
class WriteAudit:
    """Who asked for a write and how: the audit entry of the revision it makes, but the revision."""

    action: str                                  # apply, delete, rollback
    method: str
    path: str
    client: str
    actor: dict[str, Any] | None
    detail: dict[str, Any] = field(default_factory=dict)

    def entry(self, revision: int, objects: list[dict[str, Any]]) -> AuditEntry:
        return AuditEntry(action=self.action, outcome="ok", status=200, method=self.method, path=self.path,
                          client=self.client, actor=self.actor, revision=revision, objects=objects,
                          detail={k: v for k, v in self.detail.items() if v not in (None, "")})


class AuditLog:
    """Records audit entries in the order they happen, without making a request wait for the disk.

    - `record` (refusals, failed writes) stamps the entry and queues it; a writer thread stores
      what is queued in one durable transaction per batch, so a flood of refusals costs the
      event loop a list append each, and the disk one fsync per batch, not one per refusal.
    - `record_now` (token create/revoke) returns once the entry, and all before it, are stored.
    - `commit_revision` stores what is queued, a revision and that revision's own entry in one
      transaction (the state store's `commit`, given the rows): a revision without its entry cannot exist.
    - `query` stores what is queued first, so a reader sees every entry recorded before it asked.

    Order: entries reach the store (their `seq`) in the order they were recorded, because one
    lock (`_order`) is held from taking the queue until its transaction commits, by whichever
    of the writer thread, `record_now`, `commit_revision` or `query` stores it. Lock order:
    `_order`, then SQLite's write lock, everywhere. An entry whose write fails stays queued, in
    its place, and is retried; none is dropped.
    """

    def __init__(self, repository: AuditRepository, jsonl_path: Path | None = None,
                 clock: Callable[[], datetime] = utc_now,
                 retry_delay: float = 1.0) -> None:
        self.repository = repository
        self.jsonl_path = Path(jsonl_path) if jsonl_path else None
        self._clock = clock
        self._retry_delay = retry_delay
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()     # guards _pending and the writer's life
        self._order = threading.Lock()    # one writer of entries at a time (see the class docstring)
        self._wake = threading.Event()
        self._stopping = False
        self._writer: threading.Thread | None = None

    def _stamp(self, entry: AuditEntry) -> dict[str, Any]:
        # Masked here, once, whatever field a token-shaped secret arrived in (stockade.redaction).
        return redact_value(entry.to_dict(self._clock().isoformat(timespec="milliseconds")))

    def record(self, entry: AuditEntry) -> None:
        """Queue `entry`; it is stored in the background, after every entry recorded before it."""
        doc = self._stamp(entry)
        with self._lock:
            self._pending.append(doc)
            if self._writer is None and not self._stopping:
                self._writer = threading.Thread(target=self._write_behind, name="audit-writer", daemon=True)
                self._writer.start()
        self._wake.set()

    def record_now(self, entry: AuditEntry) -> None:
        """Store `entry` (and every entry queued before it) before returning."""
        doc = self._stamp(entry)
        with self._lock:
            self._pending.append(doc)
        self.flush()

    def flush(self) -> None:
        """Store every queued entry now, in order, in one transaction."""
        with self._order:
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                seqs = self.repository.append(batch)
            except BaseException:
                self._requeue(batch)
                raise
            self._mirror(batch, seqs)

    def commit_revision(self, commit: Callable[[AuditRows], Committed],
                        entry_for: Callable[[int], AuditEntry]) -> Committed:
        """Run `commit` (a store commit taking the audit rows to write with the revision) so that
        the queued entries and `entry_for(revision number)` are stored in the revision's own
        transaction: the revision and its entry exist both, or neither."""
        with self._order:
            with self._lock:
                earlier, self._pending = self._pending, []
            written: list[dict[str, Any]] = []

            def rows(revision: int) -> list[dict[str, Any]]:
                written[:] = [*earlier, self._stamp(entry_for(revision))]
                return written

            try:
                committed = commit(rows)
            except BaseException:
                self._requeue(earlier)
                raise
            self._mirror(written, list(committed.audit_seqs))
        return committed

    def query(self, since: datetime | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        self.flush()
        when = since.astimezone(timezone.utc).isoformat(timespec="milliseconds") if since else None
        return [{"seq": seq, **doc} for seq, doc in self.repository.entries(when, limit)]

    def pending(self) -> int:
        """How many entries are recorded but not stored yet."""
        with self._lock:
            return len(self._pending)

    def close(self) -> None:
        """Stop the writer and store what is left."""
        with self._lock:
            self._stopping = True
            writer = self._writer
        self._wake.set()
        if writer is not None:
            writer.join(10)
        self.flush()

    def _requeue(self, batch: list[dict[str, Any]]) -> None:
        with self._lock:
            self._pending[:0] = batch  # back in front of what came meanwhile: the order holds

    def _write_behind(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return  # close() stores the rest
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - kept queued, in order, and retried
                log.exception("storing audit entries failed; they stay queued and are retried")
                time.sleep(self._retry_delay)
                self._wake.set()

    def _mirror(self, docs: list[dict[str, Any]], seqs: list[int]) -> None:
        """Append stored entries to the JSON-lines file (called under `_order`: in seq order)."""
        if self.jsonl_path is None or not docs:
            return
        lines = "".join(json.dumps({"seq": seq, **doc}, sort_keys=True) + "\n" for seq, doc in zip(seqs, docs))
        try:
            with open(self.jsonl_path, "a") as f:
                f.write(lines)
        except OSError as e:
            # The store holds the entries; a full or unwritable file must not fail the request.
            log.error("cannot append to the audit file %s: %s", self.jsonl_path, e)
