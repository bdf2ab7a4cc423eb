"""The controller's REST API: `build_app(config)` wires store, service, auth and metrics into one FastAPI app.

Invariants:
- No business logic here: each route authenticates, authorizes, calls one
  service method and returns its `to_dict()`.
- Every error leaves as `{"error", "message"[, "problems"]}` with the status of
  its `StockadeError` class (one handler), including FastAPI's own request
  validation and routing errors, so the client can always rebuild the typed error.
- Refused requests (401/403) are logged with route and caller, never with a token.
- Blocking routes are sync `def` (FastAPI runs them in its thread pool, off the
  event loop); `watch` is async and waits on the loop without holding a thread.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures at
# runtime, and the Reader/Writer dependency aliases are local to build_app.

import logging
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, AsyncIterator, Callable

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from stockade.controller.auth import Permission, Principal, TokenAuthority
from stockade.controller.config import ControllerConfig
from stockade.controller.flows import DEFAULT_QUERY_LIMIT, MAX_QUERY_LIMIT, FlowQuery
from stockade.controller.metrics import ControllerMetrics, RequestCounter
from stockade.controller.records import AgentReport, Endpoint, event_to_dict
from stockade.controller.schemas import (
    AgentStatusRequest,
    ApplyRequest,
    DeleteRequest,
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
from stockade.controller.service import ControllerService, object_key
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
    status: {"model": ErrorBody} for status in (401, 403, 404, 409, 422)
}


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
        return _error_response(exc)

    async def request_invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = [FieldProblem("request", ".".join(str(p) for p in err.get("loc", ())), str(err.get("msg", "")))
                    for err in exc.errors()]
        return _error_response(ValidationError(problems or [FieldProblem("request", "", "invalid request")]))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        # Routing errors (unknown path, wrong method) in the same shape as every other error.
        cls = next((c for c in ERRORS_BY_CODE.values()
                    if c.http_status == exc.status_code and c is not ValidationError), None)
        body = cls(str(exc.detail)).to_dict() if cls is not None else {"error": "http", "message": str(exc.detail)}
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error_response(StockadeError("internal error; see the controller's log"))

    app.add_exception_handler(StockadeError, stockade_error)
    app.add_exception_handler(RequestValidationError, request_invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)


def build_app(config: ControllerConfig, *, service: ControllerService | None = None,
              tokens: TokenAuthority | None = None) -> FastAPI:
    """The controller's HTTP app. `service` and `tokens` may be given (tests); else built from `config`."""
    service = service if service is not None else ControllerService(config)
    tokens = tokens if tokens is not None else TokenAuthority(config.tokens_file)
    metrics = ControllerMetrics(service)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()

    app = FastAPI(title="Stockade controller", version=_version(), lifespan=lifespan,
                  description="Desired state of the Stockade firewall: objects, revisions, watch, agent status.")
    app.state.service = service
    app.state.metrics = metrics
    _install_error_handlers(app)
    app.add_middleware(RequestCounter, metrics=metrics)

    bearer = HTTPBearer(auto_error=False, description="a token from `stockade token create`")

    def caller(request: Request,
               credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
        principal = tokens.authenticate(credentials.credentials if credentials else None)
        request.state.caller = principal.name
        return principal

    def allowed(permission: Permission) -> Callable[[Principal], Principal]:
        def check(principal: Annotated[Principal, Depends(caller)]) -> Principal:
            principal.require(permission)
            return principal
        return check

    Reader = Annotated[Principal, Depends(allowed(Permission.READ))]
    Writer = Annotated[Principal, Depends(allowed(Permission.WRITE))]
    Reporter = Annotated[Principal, Depends(allowed(Permission.REPORT))]

    @app.get("/healthz", response_model=HealthResponse, tags=["health"])
    def healthz() -> dict[str, Any]:
        """Liveness and the current revision; needs no token."""
        return {"ok": True, "revision": service.revision()}

    @app.post(f"{API}/apply", response_model=WriteResponse, responses=_ERROR_RESPONSES, tags=["objects"])
    def apply(body: ApplyRequest, principal: Writer) -> dict[str, Any]:
        """Create or update objects, all or nothing, as one revision authored by the token's name."""
        return service.apply(body.documents, principal.name, body.message, body.namespace).to_dict()

    @app.post(f"{API}/delete", response_model=WriteResponse, responses=_ERROR_RESPONSES, tags=["objects"])
    def delete(body: DeleteRequest, principal: Writer) -> dict[str, Any]:
        """Delete objects, all or nothing, as one revision."""
        keys = [object_key(o.kind, o.namespace, o.name) for o in body.objects]
        return service.delete(keys, principal.name, body.message).to_dict()

    @app.get(f"{API}/objects/{{kind}}", response_model=ListResponse, responses=_ERROR_RESPONSES,
             tags=["objects"])
    def list_objects(kind: str, _: Reader, namespace: str | None = None,
                     name: str | None = None) -> dict[str, Any]:
        """Objects of one kind (singular, plural or alias, any case); all namespaces unless one is given."""
        revision, items = service.list_objects(kind, namespace, name)
        return {"items": items, "revision": revision}

    @app.get(f"{API}/snapshot", response_model=SnapshotResponse, responses=_ERROR_RESPONSES, tags=["sync"])
    def snapshot(_: Reader) -> dict[str, Any]:
        """Every object at one revision: where a watcher starts, and restarts after 410."""
        revision, objects = service.snapshot()
        return {"revision": revision, "objects": objects}

    @app.get(f"{API}/watch", response_model=WatchResponse,
             responses={**_ERROR_RESPONSES, 410: {"model": ErrorBody}}, tags=["sync"])
    async def watch(_: Reader, since: Annotated[int, Query(ge=0)],
                    timeout: Annotated[float, Query(ge=0, le=MAX_WATCH_TIMEOUT)] = 30.0) -> dict[str, Any]:
        """Events after revision `since`; long-polls up to `timeout` seconds. 410: too old, relist."""
        revision, events = await service.watch(since, timeout)
        return {"revision": revision, "events": [event_to_dict(e) for e in events]}

    @app.put(f"{API}/agents/{{host}}/status", response_model=OkResponse, responses=_ERROR_RESPONSES,
             tags=["agents"])
    def report_status(host: str, body: AgentStatusRequest, principal: Reporter) -> dict[str, Any]:
        """An agent reports the revision it enforces and its endpoints; an agent token only for its host."""
        principal.require(Permission.REPORT, host=host)
        report = AgentReport(
            revision=body.revision, program_hash=body.programHash, applied_at=body.appliedAt,
            in_sync=body.inSync, error=body.error, drift_repairs=body.driftRepairs,
            last_drift_at=body.lastDriftAt,
            endpoints={k: Endpoint(e.netns, e.interface, e.mac) for k, e in body.endpoints.items()})
        rollout = service.report_agent(host, report)
        if rollout is not None:
            metrics.rollout.observe(rollout)
        return {"ok": True}

    @app.put(f"{API}/agents/{{host}}/flows", response_model=FlowIngestResponse, responses=_ERROR_RESPONSES,
             tags=["flows"])
    def report_flows(host: str, body: FlowBatchRequest, principal: Reporter) -> dict[str, Any]:
        """An agent sends flow records it enforced and how many it dropped or sampled since its last batch;
        an agent token only for its host, and every record must name that host."""
        principal.require(Permission.REPORT, host=host)
        records = [(parse_utc(r.time), r.model_dump()) for r in body.records]
        last = service.record_flows(host, records, body.dropped)
        return {"accepted": len(records), "lastSeq": last}

    @app.get(f"{API}/flows", response_model=FlowsResponse, responses=_ERROR_RESPONSES, tags=["flows"])
    async def flows(
        _: Reader,
        since_seq: Annotated[int | None, Query(ge=0, description="only records after this seq, oldest first")] = None,
        since: Annotated[str | None, Query(description="only records at or after this ISO 8601 time")] = None,
        namespace: Annotated[str | None, Query(description="either end is in this namespace")] = None,
        workload: Annotated[str | None, Query(description="either end is this workload (namespace/name)")] = None,
        denied: Annotated[bool, Query(description="deny, reject, would-deny and would-reject only")] = False,
        limit: Annotated[int, Query(ge=1, le=MAX_QUERY_LIMIT)] = DEFAULT_QUERY_LIMIT,
        follow_timeout: Annotated[float, Query(ge=0, le=MAX_WATCH_TIMEOUT,
                                               description="long-poll up to this many seconds for new records")] = 0.0,
    ) -> dict[str, Any]:
        """Flow records from the controller's bounded history. Without `since_seq`, the newest `limit`
        matching records; with it, the oldest `limit` after it. Follow by passing back `lastSeq`."""
        when = None
        if since is not None:
            try:
                when = parse_utc(since)
            except ValueError as e:
                raise ValidationError.single("request", "query.since", f"{since!r} is not an ISO 8601 time: {e}")
        page = await service.flows(FlowQuery(since_seq, when, namespace or None, workload or None, denied, limit),
                                   follow_timeout)
        return page.to_dict()

    @app.get(f"{API}/status", response_model=StatusResponse, responses=_ERROR_RESPONSES, tags=["agents"])
    def status(_: Reader) -> dict[str, Any]:
        """The controller's revision and what each agent enforces."""
        return service.status().to_dict()

    @app.get(f"{API}/revisions", response_model=RevisionsResponse, responses=_ERROR_RESPONSES,
             tags=["objects"])
    def revisions(_: Reader, limit: Annotated[int | None, Query(ge=1)] = None) -> dict[str, Any]:
        """Revision history, newest first."""
        return {"revisions": [{"revision": r.number, "author": r.author, "message": r.message, "time": r.time}
                              for r in service.revisions(limit)]}

    @app.get("/metrics", tags=["health"], response_class=Response,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
    def prometheus_metrics() -> Response:
        """Prometheus metrics; needs no token."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app
