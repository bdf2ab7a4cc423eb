"""Routes of what happened: the revision history and the audit log."""

from typing import Annotated, Any

from fastapi import APIRouter, Query

from stockade.controller.audit import AuditLog
from stockade.controller.flows import DEFAULT_QUERY_LIMIT, MAX_QUERY_LIMIT
from stockade.controller.routes.deps import API, ERROR_RESPONSES, AuditReader, HistoryReader, parse_since
from stockade.controller.schemas import AuditResponse, RevisionsResponse
from stockade.controller.revision_diff import revision_diff
from stockade.controller.service import ControllerService


def router(service: ControllerService, audit: AuditLog) -> APIRouter:
    r = APIRouter()

    @r.get(f"{API}/revisions", response_model=RevisionsResponse, responses=ERROR_RESPONSES, tags=["objects"])
    def revisions(principal: HistoryReader,
                  limit: Annotated[int | None, Query(ge=1, le=100_000)] = None) -> dict[str, Any]:
        """Revision history, newest first, with the objects each revision changed
        (a tenant sees the revisions that touched its namespaces)."""
        return {"revisions": service.history(limit, principal)}

    @r.get(f"{API}/revisions/diff", responses=ERROR_RESPONSES, tags=["objects"])
    def diff_revisions(principal: HistoryReader,
                       older: Annotated[int, Query(alias="from", ge=0, description="the older revision")],
                       newer: Annotated[int, Query(alias="to", ge=1, description="the newer revision")]
                       ) -> dict[str, Any]:
        """Every object that differs between two revisions, field by field (a tenant: its objects)."""
        return revision_diff(service, principal, older, newer)

    @r.get(f"{API}/audit", response_model=AuditResponse, responses=ERROR_RESPONSES, tags=["audit"])
    def audit_log(_: AuditReader,
                  since: Annotated[str | None, Query(description="entries at or after this ISO 8601 time")] = None,
                  limit: Annotated[int, Query(ge=1, le=MAX_QUERY_LIMIT)] = DEFAULT_QUERY_LIMIT) -> dict[str, Any]:
        """Every write and every refusal: who, when, what, and the revision or the reason. Oldest first."""
        return {"entries": audit.query(parse_since(since), limit)}

    return r
