"""The audit log: every write and every refusal, who, when, what, and the revision or the reason.

Entries go to the store (queryable: `GET /api/v1/audit`, `stockade audit`) and, when
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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal

from stockade.controller.store import Store
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


class AuditLog:
    def __init__(self, store: Store, jsonl_path: Path | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.store = store
        self.jsonl_path = Path(jsonl_path) if jsonl_path else None
        self._clock = clock
        self._file_lock = threading.Lock()

    def record(self, entry: AuditEntry) -> dict[str, Any]:
        doc = redact_value(entry.to_dict(self._clock().isoformat(timespec="milliseconds")))
        seq = self.store.append_audit(doc["time"], doc)
        doc = {"seq": seq, **doc}
        if self.jsonl_path is not None:
            try:
                with self._file_lock, open(self.jsonl_path, "a") as f:
                    f.write(json.dumps(doc, sort_keys=True) + "\n")
            except OSError as e:
                # The store holds the entry; a full or unwritable file must not fail the request.
                log.error("cannot append to the audit file %s: %s", self.jsonl_path, e)
        return doc

    def query(self, since: datetime | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        when = since.astimezone(timezone.utc).isoformat(timespec="milliseconds") if since else None
        return [{"seq": seq, **doc} for seq, doc in self.store.audit(when, limit)]
