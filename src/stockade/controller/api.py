"""The controller's REST API: `build_app(config)` wires store, service, auth and metrics into one FastAPI app.

Invariants:
- No business logic here: each route authorizes, calls one service method and
  returns its `to_dict()`. Authentication happens before the route, from the headers
  alone (`gate.AuthGate`), so no body of an unauthenticated request is read.
- Every error leaves as `{"error", "message"[, "problems"]}` with the status of
  its `StockadeError` class (one handler), including FastAPI's own request
  validation and routing errors, so the client can always rebuild the typed error.
- Refused requests (401/403/413/429) are logged with route and caller, never with a token,
  and audited through the audit log's queue (no disk I/O on the event loop).
- Blocking routes are sync `def` (FastAPI runs them in its thread pool, off the
  event loop); `watch` is async and waits on the loop without holding a thread.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures at
# runtime, and the Reader/Writer dependency aliases are local to build_app.

import logging
from contextlib import asynccontextmanager
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, AsyncIterator, Awaitable, Callable

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from stockade.compile.host import NotProgrammed
from stockade.controller import rbac
from stockade.controller.audit import AuditEntry, AuditLog, WriteAudit
from stockade.controller.auth import Principal, TokenAuthority, parse_ttl
from stockade.controller.gate import PUBLIC_PATHS, AuthGate
from stockade.controller.limits import BodyLimit
from stockade.controller.ratelimit import UNIX_PEER, FailureLimiter
from stockade.controller.rbac import Permission
from stockade.controller.config import ControllerConfig
from stockade.controller.flows import DEFAULT_QUERY_LIMIT, MAX_QUERY_LIMIT, FlowQuery
from stockade.controller.metrics import ControllerMetrics, RequestCounter
from stockade.controller.host_views import HostViews
from stockade.controller.records import AgentReport, Endpoint, WatchAnswers
from stockade.controller.schemas import (
    AgentStatusRequest,
    ApplyRequest,
    AuditResponse,
    DeleteRequest,
    DiffRequest,
    DiffResponse,
    RollbackRequest,
    TokenCreated,
    TokenCreateRequest,
    TokensResponse,
    ErrorBody,
    FlowBatchRequest,
    FlowIngestResponse,
    FlowsResponse,
    HealthResponse,
    ListResponse,
    OkResponse,
    RevisionsResponse,
    SnapshotResponse,
    StatusResponse,
    WatchResponse,
    WriteResponse,
    parse_utc,
)
from stockade.controller.service import object_key
from stockade.controller.wiring import open_backend, service_on
from stockade.redaction import install_log_redaction
from stockade.errors import (
    ERRORS_BY_CODE,
    FieldProblem,
    Forbidden,
    StockadeError,
    Unauthorized,
    ValidationError,
)

log = logging.getLogger(__name__)

API = "/api/v1"
MAX_WATCH_TIMEOUT = 300.0

_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (401, 403, 404, 409, 413, 422, 429)
}
_REFUSALS = (401, 403, 413, 429)

# Routes that change something: every outcome of these is audited (refusals of any route are too).
_WRITES: dict[tuple[str, str], str] = {
    ("POST", f"{API}/apply"): "apply",
    ("POST", f"{API}/delete"): "delete",
    ("POST", f"{API}/rollback"): "rollback",
    ("POST", f"{API}/tokens"): "token.create",
}


def _action_of(method: str, path: str) -> str | None:
    if method == "DELETE" and path.startswith(f"{API}/tokens/"):
        return "token.revoke"
    return _WRITES.get((method, path.rstrip("/")))


def _client_of(scope_client: Any) -> str:
    """The audit log's `client`: the peer's address, or `unix-socket pid N` (`unix-socket` when unknown)."""
    if not scope_client:
        return UNIX_PEER
    if scope_client[0] == UNIX_PEER:
        return f"{UNIX_PEER} pid {scope_client[1]}"
    return f"{scope_client[0]}"


def _audit_failure(request: Request, status: int, reason: str) -> None:
    """Audit a refused (401/403/413/429) request of any route, or a failed write; nothing else."""
    audit: AuditLog | None = getattr(request.app.state, "audit", None)
    action = _action_of(request.method, request.url.path)
    if audit is None or (action is None and status not in _REFUSALS):
        return
    principal: Principal | None = getattr(request.state, "principal", None)
    audit.record(AuditEntry(
        action=action or "request", outcome="refused" if status in _REFUSALS else "failed",
        status=status, method=request.method, path=request.url.path,
        client=_client_of(request.client), actor=principal.describe() if principal else None,
        reason=reason))


def _version() -> str:
    try:
        return version("stockade")
    except PackageNotFoundError:
        return "0+unknown"


def _error_response(exc: StockadeError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    return JSONResponse(exc.to_dict(), status_code=exc.http_status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    async def stockade_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StockadeError)
        if isinstance(exc, (Unauthorized, Forbidden)):
            client = request.client.host if request.client else "the unix socket"
            caller = getattr(request.state, "caller", None)
            log.warning("refused %s %s from %s (%s): %s", request.method, request.url.path, client,
                        caller or "no valid token", exc.message)
        _audit_failure(request, exc.http_status or 500, exc.message)
        return _error_response(exc)

    async def request_invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = [FieldProblem("request", ".".join(str(p) for p in err.get("loc", ())), str(err.get("msg", "")))
                    for err in exc.errors()]
        error = ValidationError(problems or [FieldProblem("request", "", "invalid request")])
        _audit_failure(request, 422, error.message[:2000])
        return _error_response(error)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        # Routing errors (unknown path, wrong method) in the same shape as every other error.
        cls = next((c for c in ERRORS_BY_CODE.values()
                    if c.http_status == exc.status_code and c is not ValidationError), None)
        body = cls(str(exc.detail)).to_dict() if cls is not None else {"error": "http", "message": str(exc.detail)}
        _audit_failure(request, exc.status_code, str(exc.detail))
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error_response(StockadeError("internal error; see the controller's log"))

    app.add_exception_handler(StockadeError, stockade_error)
    app.add_exception_handler(RequestValidationError, request_invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)


def build_app(config: ControllerConfig) -> FastAPI:
    """The controller's HTTP app: opens the store `config` names and wires every part to it."""
    install_log_redaction()  # no token reaches this process's logs, whatever logs it
    backend = open_backend(config)
    service = service_on(config, backend)  # owns the backend's parts from here on
    tokens = TokenAuthority(config.tokens_file, backend.tokens)
    metrics = ControllerMetrics(service)
    audit = service.audit

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()

    # FastAPI's own OpenTelemetry hooks are off: the controller's metrics are Prometheus
    # (/metrics), and asking for the global tracer, meter and logger providers on every request
    # was ~2% of its CPU in a rollout (docs/performance.md).
    app = FastAPI(title="Stockade controller", version=_version(), lifespan=lifespan,
                  description="Desired state of the Stockade firewall: objects, revisions, watch, agent status.",
                  telemetry={"tracing": False, "metrics": False, "logs": False})
    app.state.service = service
    watch_answers = WatchAnswers(service.cluster_id)
    host_views = HostViews(service)
    app.state.metrics = metrics
    app.state.audit = audit
    _install_error_handlers(app)

    def refuse(scope: Any, status: int, reason: str) -> None:
        # Queued, not written: a refusal costs the event loop no disk I/O (audit.AuditLog).
        principal: Principal | None = (scope.get("state") or {}).get("principal")
        audit.record(AuditEntry(action=_action_of(scope.get("method", ""), scope.get("path", "")) or "request",
                                outcome="refused", status=status, method=scope.get("method", ""),
                                path=scope.get("path", ""), client=_client_of(scope.get("client")),
                                actor=principal.describe() if principal else None, reason=reason))

    # Outermost first: count every request; authenticate from the headers; only then bound
    # (and let the route read) the body.
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes,
                       on_refusal=lambda scope, reason: refuse(scope, 413, reason))
    # With --metrics-auth, /metrics is no public path: the gate authenticates it like any route.
    public = PUBLIC_PATHS - {"/metrics"} if config.metrics_auth else PUBLIC_PATHS
    app.add_middleware(AuthGate, authenticate=tokens.authenticate, limiter=FailureLimiter(config.auth_failures),
                       public_paths=public,
                       on_refusal=refuse)
    app.add_middleware(RequestCounter, metrics=metrics)

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

    def allowed(permission: Permission) -> Callable[[Principal], Awaitable[Principal]]:
        async def check(principal: Annotated[Principal, Depends(caller)]) -> Principal:
            rbac.require(principal, permission)
            return principal
        return check

    Reader = Annotated[Principal, Depends(allowed(Permission.READ_OBJECTS))]
    StateReader = Annotated[Principal, Depends(allowed(Permission.READ_STATE))]
    StatusReader = Annotated[Principal, Depends(allowed(Permission.READ_STATUS))]
    FlowReader = Annotated[Principal, Depends(allowed(Permission.READ_FLOWS))]
    HistoryReader = Annotated[Principal, Depends(allowed(Permission.READ_HISTORY))]
    AuditReader = Annotated[Principal, Depends(allowed(Permission.READ_AUDIT))]
    Writer = Annotated[Principal, Depends(allowed(Permission.WRITE_OBJECTS))]
    TokenAdmin = Annotated[Principal, Depends(allowed(Permission.MANAGE_TOKENS))]
    Reporter = Annotated[Principal, Depends(allowed(Permission.REPORT))]

    def write_audit(request: Request, principal: Principal, action: str, **detail: Any) -> WriteAudit:
        """What the audit entry of this write's revision says besides the revision; the service
        stores it in the revision's own transaction."""
        return WriteAudit(action=action, method=request.method, path=request.url.path,
                          client=_client_of(request.client), actor=principal.describe(), detail=detail)

    @app.get("/healthz", response_model=HealthResponse, tags=["health"])
    def healthz() -> dict[str, Any]:
        """Liveness and the current revision; needs no token."""
        return {"ok": True, "revision": service.revision(), "clusterId": service.cluster_id}

    @app.post(f"{API}/apply", response_model=WriteResponse, responses=_ERROR_RESPONSES, tags=["objects"])
    def apply(body: ApplyRequest, principal: Writer, request: Request) -> dict[str, Any]:
        """Create or update objects, all or nothing, as one revision authored by the token's name.
        Each object must be within the caller's role; a stale metadata.resourceVersion gives 409."""
        return service.apply(body.documents, principal.name, body.message, body.namespace, principal=principal,
                             audit=write_audit(request, principal, "apply", message=body.message)).to_dict()

    @app.post(f"{API}/delete", response_model=WriteResponse, responses=_ERROR_RESPONSES, tags=["objects"])
    def delete(body: DeleteRequest, principal: Writer, request: Request) -> dict[str, Any]:
        """Delete objects, all or nothing, as one revision."""
        keys = [object_key(o.kind, o.namespace, o.name) for o in body.objects]
        return service.delete(keys, principal.name, body.message, principal=principal,
                              audit=write_audit(request, principal, "delete", message=body.message)).to_dict()

    @app.post(f"{API}/diff", response_model=DiffResponse, responses=_ERROR_RESPONSES, tags=["objects"])
    def diff(body: DiffRequest, principal: Writer) -> dict[str, Any]:
        """What applying these objects would change (object by object, field by field) and which recently
        observed flows would change verdict. Refused exactly as the apply would be; stores nothing."""
        revision, objects, flows = service.diff(body.documents, body.namespace, principal=principal)
        return {"revision": revision, "objects": [o.to_dict() for o in objects],
                "flows": [f.to_dict() for f in flows]}

    @app.post(f"{API}/rollback", response_model=WriteResponse, responses=_ERROR_RESPONSES, tags=["objects"])
    def rollback(body: RollbackRequest, principal: Writer, request: Request) -> dict[str, Any]:
        """A new revision restoring every object as it was right after `revision`."""
        entry = write_audit(request, principal, "rollback", target=body.revision, message=body.message)
        return service.rollback(body.revision, principal.name, body.message, principal=principal,
                                audit=entry).to_dict()

    @app.get(f"{API}/objects/{{kind}}", response_model=ListResponse, responses=_ERROR_RESPONSES,
             tags=["objects"])
    def list_objects(kind: str, principal: Reader, namespace: str | None = None,
                     name: str | None = None) -> dict[str, Any]:
        """Objects of one kind (singular, plural or alias, any case); all namespaces unless one is given.
        A tenant sees only its own namespaces; naming an object it may not read is 403 whether or not
        the object exists."""
        revision, items = service.list_objects(kind, namespace, name, principal=principal)
        return {"items": items, "revision": revision}

    @app.get(f"{API}/snapshot", response_model=SnapshotResponse, response_model_exclude_unset=True,
             responses=_ERROR_RESPONSES, tags=["sync"])
    def snapshot(principal: StateReader) -> dict[str, Any]:
        """Every object at one revision: where a watcher starts, and restarts after 410. An agent
        gets its host's view (what that host enforces) and the view's name to watch with."""
        if principal.host is not None:
            revision, objects, view = host_views.snapshot(principal.host)
            return {"revision": revision, "clusterId": service.cluster_id, "view": view, "objects": objects}
        revision, objects = service.snapshot()
        return {"revision": revision, "clusterId": service.cluster_id, "objects": objects}

    @app.get(f"{API}/watch", response_model=WatchResponse,
             responses={**_ERROR_RESPONSES, 410: {"model": ErrorBody}}, tags=["sync"])
    async def watch(principal: StateReader, since: Annotated[int, Query(ge=0, le=2**53)],
                    timeout: Annotated[float, Query(ge=0, le=MAX_WATCH_TIMEOUT)] = 30.0,
                    view: Annotated[str | None, Query(max_length=64)] = None) -> Response:
        """Events after revision `since`; long-polls up to `timeout` seconds. 410: too old, relist.
        An agent sends the `view` its snapshot named; 410 too when its host's view changed."""
        if principal.host is not None:
            revision, events, view = await host_views.watch(principal.host, since, timeout, view)
        else:
            revision, events = await service.watch(since, timeout)
            view = None
        # Rendered once per commit (and view) for all watchers (records.WatchAnswers); the schema
        # above is what it holds, for the OpenAPI document.
        return Response(watch_answers.render(since, revision, events, view), media_type="application/json")

    @app.put(f"{API}/agents/{{host}}/status", response_model=OkResponse, responses=_ERROR_RESPONSES,
             tags=["agents"])
    async def report_status(host: str, body: AgentStatusRequest, principal: Reporter) -> dict[str, Any]:
        """An agent reports the revision it enforces and its endpoints; an agent token only for its host."""
        # On the event loop, not in a worker thread: nothing here waits (reports are kept in
        # memory, recent revisions' times too), and twenty agents report after every change.
        rbac.require(principal, Permission.REPORT, host=host)
        report = AgentReport(
            revision=body.revision, program_hash=body.programHash, applied_at=body.appliedAt,
            in_sync=body.inSync, error=body.error, drift_repairs=body.driftRepairs,
            last_drift_at=body.lastDriftAt,
            endpoints={k: Endpoint(e.netns, e.interface, e.mac) for k, e in body.endpoints.items()},
            not_programmed=tuple(NotProgrammed(n.object, n.reason) for n in body.notProgrammed))
        rollout = service.report_agent(host, report)
        if rollout is not None:
            metrics.rollout.observe(rollout)
        return {"ok": True}

    @app.put(f"{API}/agents/{{host}}/flows", response_model=FlowIngestResponse, responses=_ERROR_RESPONSES,
             tags=["flows"])
    def report_flows(host: str, body: FlowBatchRequest, principal: Reporter) -> dict[str, Any]:
        """An agent sends flow records it enforced and how many it dropped or sampled since its last batch;
        an agent token only for its host, and every record must name that host."""
        rbac.require(principal, Permission.REPORT, host=host)
        records = [(parse_utc(r.time), r.model_dump()) for r in body.records]
        last = service.record_flows(host, records, body.dropped)
        return {"accepted": len(records), "lastSeq": last}

    @app.get(f"{API}/flows", response_model=FlowsResponse, responses=_ERROR_RESPONSES, tags=["flows"])
    async def flows(
        principal: FlowReader,
        since_seq: Annotated[int | None, Query(ge=0, le=2**53,
                                               description="only records after this seq, oldest first")] = None,
        since: Annotated[str | None, Query(description="only records at or after this ISO 8601 time")] = None,
        namespace: Annotated[str | None, Query(description="either end is in this namespace")] = None,
        workload: Annotated[str | None, Query(description="either end is this workload (namespace/name)")] = None,
        denied: Annotated[bool, Query(description="deny, reject, would-deny and would-reject only")] = False,
        limit: Annotated[int, Query(ge=1, le=MAX_QUERY_LIMIT)] = DEFAULT_QUERY_LIMIT,
        follow_timeout: Annotated[float, Query(ge=0, le=MAX_WATCH_TIMEOUT,
                                               description="long-poll up to this many seconds for new records")] = 0.0,
    ) -> dict[str, Any]:
        """Flow records from the controller's bounded history. Without `since_seq`, the newest `limit`
        matching records; with it, the oldest `limit` after it. Follow by passing back `lastSeq`.
        A tenant must name one of its namespaces (or has only one, which is the default); the other
        end of its flows shows that end's namespace, not its workload name or rule id."""
        when = _since(since)
        page = await service.flows(FlowQuery(since_seq, when, namespace or None, workload or None, denied, limit),
                                   follow_timeout, principal=principal)
        return service.scope_flow_page(page, principal)

    @app.get(f"{API}/status", response_model=StatusResponse, responses=_ERROR_RESPONSES, tags=["agents"])
    def status(principal: StatusReader) -> dict[str, Any]:
        """The controller's revision and what each agent enforces (a tenant: without error texts and
        other namespaces' workloads)."""
        return service.status(principal).to_dict()

    @app.get(f"{API}/revisions", response_model=RevisionsResponse, responses=_ERROR_RESPONSES,
             tags=["objects"])
    def revisions(principal: HistoryReader,
                  limit: Annotated[int | None, Query(ge=1, le=100_000)] = None) -> dict[str, Any]:
        """Revision history, newest first, with the objects each revision changed
        (a tenant sees the revisions that touched its namespaces)."""
        return {"revisions": service.history(limit, principal)}

    @app.get(f"{API}/audit", response_model=AuditResponse, responses=_ERROR_RESPONSES, tags=["audit"])
    def audit_log(_: AuditReader,
                  since: Annotated[str | None, Query(description="entries at or after this ISO 8601 time")] = None,
                  limit: Annotated[int, Query(ge=1, le=MAX_QUERY_LIMIT)] = DEFAULT_QUERY_LIMIT) -> dict[str, Any]:
        """Every write and every refusal: who, when, what, and the revision or the reason. Oldest first."""
        when = _since(since)
        return {"entries": audit.query(when, limit)}

    @app.post(f"{API}/tokens", response_model=TokenCreated, responses=_ERROR_RESPONSES, tags=["tokens"])
    def create_token(body: TokenCreateRequest, principal: TokenAdmin, request: Request) -> dict[str, Any]:
        """Make a token; the secret is in this answer only. Admins only."""
        ttl = parse_ttl(body.ttl) if body.ttl else None
        entry, secret = tokens.create(principal.name, body.role, body.namespaces, ttl, body.name, body.host)
        info = next(d for d in tokens.describe_all() if d["id"] == entry.id)
        audit.record_now(AuditEntry(action="token.create", outcome="ok", status=200, method="POST",
                                    path=request.url.path, client=_client_of(request.client),
                                    actor=principal.describe(),
                                    detail={k: v for k, v in info.items()
                                            if k in ("id", "name", "role", "namespaces", "host", "expires")}))
        return {"token": secret, "info": info}

    @app.get(f"{API}/tokens", response_model=TokensResponse, responses=_ERROR_RESPONSES, tags=["tokens"])
    def list_tokens(_: TokenAdmin) -> dict[str, Any]:
        """Every known token (file and API) without its secret or hash."""
        return {"tokens": tokens.describe_all()}

    @app.delete(f"{API}/tokens/{{ref}}", response_model=TokensResponse, responses=_ERROR_RESPONSES,
                tags=["tokens"])
    def revoke_token(ref: str, principal: TokenAdmin, request: Request) -> dict[str, Any]:
        """Revoke a token by id, unique name, or the token itself; it is refused from the next request
        on. (The CLI sends a token's id, never the token: a path ends up in access logs.)"""
        entry = tokens.revoke(ref)
        info = next(d for d in tokens.describe_all() if d["id"] == entry.id)
        audit.record_now(AuditEntry(action="token.revoke", outcome="ok", status=200, method="DELETE",
                                    path=request.url.path, client=_client_of(request.client),
                                    actor=principal.describe(), detail={"id": entry.id, "name": entry.name}))
        return {"tokens": [info]}

    MetricsReader = Annotated[Principal, Depends(allowed(Permission.READ_METRICS))]

    async def nobody() -> None:
        return None

    # /metrics names every host and its error state: `--metrics-auth` asks a viewer-or-better token
    # for it (a scraper then sends one); without it, it stays open as before, for a scraper on a
    # trusted network.
    metrics_guard = MetricsReader if config.metrics_auth else Annotated[None, Depends(nobody)]

    @app.get("/metrics", tags=["health"], response_class=Response,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
    def prometheus_metrics(_: metrics_guard) -> Response:  # type: ignore[valid-type]
        """Prometheus metrics; needs no token unless the controller runs with --metrics-auth
        (then admin, network-admin or viewer)."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


def _since(text: str | None) -> datetime | None:
    """The `since` query parameter as a UTC time (None when absent); 422 naming it when malformed."""
    if text is None:
        return None
    try:
        return parse_utc(text)
    except ValueError as e:
        raise ValidationError.single("request", "query.since", f"{text!r} is not an ISO 8601 time: {e}") from None

