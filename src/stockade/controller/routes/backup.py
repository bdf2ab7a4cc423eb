"""The backup route: the whole store at one revision, as a backup file's document (admins only)."""

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from stockade.controller.audit import AuditEntry, AuditLog
from stockade.controller.backups import take_backup
from stockade.controller.routes.deps import API, ERROR_RESPONSES, BackupTaker, client_of
from stockade.controller.store import Backend
from stockade.controller.store.archive import document_of


def router(backend: Backend, audit: AuditLog) -> APIRouter:
    r = APIRouter(tags=["operations"])

    @r.get(f"{API}/backup", responses=ERROR_RESPONSES)
    async def backup(principal: BackupTaker, request: Request) -> dict[str, Any]:
        """Every revision with its changes, the API tokens (hashes only), revocations and the audit
        log, read at one revision while the controller goes on serving: the document
        `stockade backup FILE` writes and `stockade restore FILE` reads (docs/operations.md)."""
        dump = await run_in_threadpool(take_backup, backend)
        # Who took the store's token hashes and audit log away is itself worth an entry.
        audit.record(AuditEntry(action="store.backup", outcome="ok", status=200, method=request.method,
                                path=request.url.path, client=client_of(request.client), actor=principal.describe(),
                                revision=dump.revision))
        return document_of(dump)

    return r
