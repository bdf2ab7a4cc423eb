"""Routes of a live migration's connection handoff: the source host's agent gives a moving
workload's open connections, the destination's takes them (`controller.handoffs` decides who may)."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from stockade.controller.audit import AuditEntry, AuditLog
from stockade.controller.auth import Principal
from stockade.controller.handoffs import HandoffBox
from stockade.controller.rbac import Permission
from stockade.controller.routes.deps import API, ERROR_RESPONSES, allowed, client_of
from stockade.controller.schemas import HandoffRequest, OkResponse

HandingOff = Annotated[Principal, Depends(allowed(Permission.HAND_OFF_CONNECTIONS))]


def router(handoffs: HandoffBox, audit: AuditLog) -> APIRouter:
    r = APIRouter(tags=["agents"])

    @r.put(f"{API}/handoffs/{{namespace}}/{{name}}", response_model=OkResponse, responses=ERROR_RESPONSES)
    def give(namespace: str, name: str, body: HandoffRequest, principal: HandingOff,
             request: Request) -> dict[str, Any]:
        """The agent of the host a workload moved from hands over its open connections."""
        entries = [e.model_dump(mode="json") for e in body.entries]
        kept = handoffs.give(principal, namespace, name, body.revision, entries)
        # Connection state another host will admit packets by, without asking a policy: who gave
        # it is worth an entry (refusals are audited like every refused request).
        audit.record(AuditEntry(action="connections.handoff", outcome="ok", status=200, method=request.method,
                                path=request.url.path, client=client_of(request.client),
                                actor=principal.describe(), revision=body.revision,
                                reason=f"{kept} open connections of Workload {namespace}/{name}"))
        return {"ok": True}

    @r.get(f"{API}/handoffs/{{namespace}}/{{name}}", responses=ERROR_RESPONSES)
    def take(namespace: str, name: str, principal: HandingOff) -> dict[str, Any]:
        """The agent of the host a workload moved to takes its open connections (404: not yet given)."""
        return handoffs.take(principal, namespace, name).to_dict()

    return r
