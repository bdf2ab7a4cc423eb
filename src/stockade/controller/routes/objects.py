"""Routes of desired state: apply, delete, diff, rollback and list (`controller.service` decides)."""

from typing import Any

from fastapi import APIRouter, Request

from stockade.controller.routes.deps import API, ERROR_RESPONSES, ObjectLister, ObjectWriter, Writer, write_audit
from stockade.controller.schemas import (
    ApplyRequest,
    DeleteRequest,
    DiffRequest,
    DiffResponse,
    ListResponse,
    RollbackRequest,
    WriteResponse,
)
from stockade.controller.service import ControllerService, object_key


def router(service: ControllerService) -> APIRouter:
    r = APIRouter(tags=["objects"])

    # exclude_unset: a result's `warnings` is there only when it has some (namespace: null stays).
    @r.post(f"{API}/apply", response_model=WriteResponse, response_model_exclude_unset=True,
            responses=ERROR_RESPONSES)
    def apply(body: ApplyRequest, principal: ObjectWriter, request: Request) -> dict[str, Any]:
        """Create or update objects, all or nothing, as one revision authored by the token's name.
        Each object must be within the caller's role; a stale metadata.resourceVersion gives 409."""
        return service.apply(body.documents, principal.name, body.message, body.namespace, principal=principal,
                             audit=write_audit(request, principal, "apply", message=body.message)).to_dict()

    @r.post(f"{API}/delete", response_model=WriteResponse, response_model_exclude_unset=True,
            responses=ERROR_RESPONSES)
    def delete(body: DeleteRequest, principal: ObjectWriter, request: Request) -> dict[str, Any]:
        """Delete objects, all or nothing, as one revision."""
        keys = [object_key(o.kind, o.namespace, o.name) for o in body.objects]
        return service.delete(keys, principal.name, body.message, principal=principal,
                              audit=write_audit(request, principal, "delete", message=body.message)).to_dict()

    @r.post(f"{API}/diff", response_model=DiffResponse, responses=ERROR_RESPONSES)
    def diff(body: DiffRequest, principal: Writer) -> dict[str, Any]:
        """What applying these objects would change (object by object, field by field) and which recently
        observed flows would change verdict. Refused exactly as the apply would be; stores nothing."""
        revision, objects, flows = service.diff(body.documents, body.namespace, principal=principal)
        return {"revision": revision, "objects": [o.to_dict() for o in objects],
                "flows": [f.to_dict() for f in flows]}

    @r.post(f"{API}/rollback", response_model=WriteResponse, response_model_exclude_unset=True,
            responses=ERROR_RESPONSES)
    def rollback(body: RollbackRequest, principal: Writer, request: Request) -> dict[str, Any]:
        """A new revision restoring every object as it was right after `revision`."""
        entry = write_audit(request, principal, "rollback", target=body.revision, message=body.message)
        return service.rollback(body.revision, principal.name, body.message, principal=principal,
                                audit=entry).to_dict()

    @r.get(f"{API}/objects/{{kind}}", response_model=ListResponse, responses=ERROR_RESPONSES)
    def list_objects(kind: str, principal: ObjectLister, namespace: str | None = None,
                     name: str | None = None) -> dict[str, Any]:
        """Objects of one kind (singular, plural or alias, any case); all namespaces unless one is given.
        A tenant sees only its own namespaces; naming an object it may not read is 403 whether or not
        the object exists."""
        revision, items = service.list_objects(kind, namespace, name, principal=principal)
        return {"items": items, "revision": revision}

    return r
