"""What every route module shares: the API prefix, error responses, the caller and its
permission dependencies, and the small translations from a request (client, `since`).

The caller was authenticated by `gate.AuthGate` from the headers, before any body was
read; the dependencies here only hand the principal on and ask `rbac` for a permission.
No FastAPI `from __future__ import annotations` here: FastAPI reads signatures at runtime.
"""

from datetime import datetime
from typing import Annotated, Any, Awaitable, Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from stockade.controller import rbac
from stockade.controller.audit import WriteAudit
from stockade.controller.auth import Principal
from stockade.controller.rbac import Permission
from stockade.controller.ratelimit import UNIX_PEER
from stockade.controller.schemas import ErrorBody, parse_utc
from stockade.errors import Unauthorized, ValidationError

API = "/api/v1"
MAX_WATCH_TIMEOUT = 300.0

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (401, 403, 404, 409, 413, 422, 429)
}

bearer = HTTPBearer(auto_error=False, description="a token from `stockade token create`")


# The two dependencies every request runs are coroutines on purpose: a plain `def` is run
# in the thread pool, two thread hand-offs per request. The token was checked by AuthGate
# before the body was read; `bearer` stays here so the OpenAPI document shows the scheme.
async def caller(request: Request,
                 _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:  # only if the app is mounted without its gate
        raise Unauthorized("a bearer token is required (Authorization: Bearer TOKEN)")
    return principal


def allowed(*permissions: Permission) -> Callable[[Principal], Awaitable[Principal]]:
    """The caller, if it holds one of `permissions` (each object is checked again: rbac.check_write)."""
    async def check(principal: Annotated[Principal, Depends(caller)]) -> Principal:
        rbac.require_any(principal, *permissions)
        return principal
    return check


Reader = Annotated[Principal, Depends(allowed(Permission.READ_OBJECTS))]
# The object listing: people, and host credentials reading back their own host's Workloads.
ObjectLister = Annotated[Principal, Depends(allowed(Permission.READ_OBJECTS, Permission.REGISTER_WORKLOADS))]
StateReader = Annotated[Principal, Depends(allowed(Permission.READ_STATE))]
StatusReader = Annotated[Principal, Depends(allowed(Permission.READ_STATUS))]
FlowReader = Annotated[Principal, Depends(allowed(Permission.READ_FLOWS))]
HistoryReader = Annotated[Principal, Depends(allowed(Permission.READ_HISTORY))]
AuditReader = Annotated[Principal, Depends(allowed(Permission.READ_AUDIT))]
Writer = Annotated[Principal, Depends(allowed(Permission.WRITE_OBJECTS))]
# apply and delete: people who write objects, and host credentials registering their workloads.
ObjectWriter = Annotated[Principal, Depends(allowed(Permission.WRITE_OBJECTS, Permission.REGISTER_WORKLOADS))]
TokenAdmin = Annotated[Principal, Depends(allowed(Permission.MANAGE_TOKENS))]
Reporter = Annotated[Principal, Depends(allowed(Permission.REPORT))]
MetricsReader = Annotated[Principal, Depends(allowed(Permission.READ_METRICS))]
BackupTaker = Annotated[Principal, Depends(allowed(Permission.TAKE_BACKUP))]


def client_of(scope_client: Any) -> str:
    """The audit log's `client`: the peer's address, or `unix-socket pid N` (`unix-socket` when unknown)."""
    if not scope_client:
        return UNIX_PEER
    if scope_client[0] == UNIX_PEER:
        return f"{UNIX_PEER} pid {scope_client[1]}"
    return f"{scope_client[0]}"


def write_audit(request: Request, principal: Principal, action: str, **detail: Any) -> WriteAudit:
    """Who asked for a write and how (the audit entry of the revision it makes, but the revision):
    the service stores it in the revision's own transaction, or on its own for token writes."""
    return WriteAudit(action=action, method=request.method, path=request.url.path,
                      client=client_of(request.client), actor=principal.describe(), detail=detail)


def parse_since(text: str | None) -> datetime | None:
    """The `since` query parameter as a UTC time (None when absent); 422 naming it when malformed."""
    if text is None:
        return None
    try:
        return parse_utc(text)
    except ValueError as e:
        raise ValidationError.single("request", "query.since", f"{text!r} is not an ISO 8601 time: {e}") from None
