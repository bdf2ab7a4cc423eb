"""The controller's HTTP app: `build_app(config)` wires the whole process in one place.

It opens the store `config` names, hands each repository to the part that uses it (the
state store, agent reports and audit log to the service, the token repository to
`auth.TokenAuthority`), adds the middleware and the error handlers, and mounts the routers
of `controller.routes`, one module per resource.

Invariants:
- No business logic in routes: each parses, calls one use case and returns its wire form;
  who may do what is `controller.rbac` and the service. Authentication happens before the
  route, from the headers alone (`gate.AuthGate`), so no body of an unauthenticated request
  is read.
- Every error leaves as `{"error", "message"[, "problems"]}` with the status of
  its `StockadeError` class (one handler), including FastAPI's own request
  validation and routing errors, so the client can always rebuild the typed error.
- Refused requests (401/403/413/429) are logged with route and caller, never with a token,
  and audited through the audit log's queue (no disk I/O on the event loop).
- Blocking routes are sync `def` (FastAPI runs them in its thread pool, off the
  event loop); `watch` is async and waits on the loop without holding a thread.
"""

# No `from __future__ import annotations` in the route modules: FastAPI reads their
# signatures at runtime.

import logging
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from stockade.controller.audit import AuditEntry, AuditLog
from stockade.controller.auth import Principal, TokenAuthority
from stockade.controller.config import ControllerConfig
from stockade.controller.dashboard import routes as dashboard_routes
from stockade.controller.dashboard.headers import DashboardHeaders
from stockade.controller.dashboard.sessions import DashboardSessions
from stockade.controller.gate import PUBLIC_PATHS, AuthGate
from stockade.controller.host_views import HostViews
from stockade.controller.limits import BodyLimit
from stockade.controller.metrics import ControllerMetrics, RequestCounter
from stockade.controller.ratelimit import FailureLimiter
from stockade.controller.replicas import ReplicaFollower
from stockade.controller.records import WatchAnswers
from stockade.controller.routes import backup as backup_routes
from stockade.controller.routes import handoffs as handoff_routes
from stockade.controller.handoffs import HandoffBox
from stockade.controller.routes import flows as flow_routes
from stockade.controller.routes import history as history_routes
from stockade.controller.routes import insight as insight_routes
from stockade.controller.routes import objects as object_routes
from stockade.controller.routes import rules as rule_routes
from stockade.controller.routes import status as status_routes
from stockade.controller.routes import sync as sync_routes
from stockade.controller.routes import tokens as token_routes
from stockade.controller.routes import topology as topology_routes
from stockade.controller.routes.deps import API, client_of
from stockade.controller.rule_hits import RuleHitsView
from stockade.controller.service import ControllerService
from stockade.controller.token_admin import TokenUseCases
from stockade.controller.topology_views import TopologyViews
from stockade.controller.trends import PrometheusTrends
from stockade.controller.wiring import open_backend
from stockade.errors import ERRORS_BY_CODE, FieldProblem, Forbidden, StockadeError, TooManyRequests, Unauthorized, ValidationError
from stockade.redaction import install_log_redaction

log = logging.getLogger(__name__)

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
        client=client_of(request.client), actor=principal.describe() if principal else None,
        reason=reason))


def _version() -> str:
    try:
        return version("stockade")
    except PackageNotFoundError:
        return "0+unknown"


def _error_response(exc: StockadeError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    if isinstance(exc, TooManyRequests):
        headers = {"Retry-After": str(exc.retry_after)}
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
    """The controller's HTTP app, the whole process wired in one place: the store `config` names
    (`--db PATH`), its repositories, the service, auth, audit, metrics, and the routers."""
    install_log_redaction()  # no token reaches this process's logs, whatever logs it
    backend = open_backend(config)
    audit = AuditLog(backend.audit, config.audit_log)
    # The service owns the state store, the agent reports and the audit log from here on (close()).
    service = ControllerService(config, backend.state, backend.reports, audit)
    tokens = TokenAuthority(config.tokens_file, backend.tokens)
    metrics = ControllerMetrics(service)
    host_views = HostViews(service)
    watch_answers = WatchAnswers(service.cluster_id)

    # Several replicas on one store: take in the others' commits and agent reports.
    follower = ReplicaFollower(service, backend.reports) if backend.shared else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if follower is not None:
            follower.start()
        yield
        if follower is not None:
            follower.stop()
        service.close()

    # FastAPI's own OpenTelemetry hooks are off: the controller's metrics are Prometheus
    # (/metrics), and asking for the global tracer, meter and logger providers on every request
    # was ~2% of its CPU in a rollout (docs/performance.md).
    app = FastAPI(title="Stockade controller", version=_version(), lifespan=lifespan,
                  description="Desired state of the Stockade firewall: objects, revisions, watch, agent status.",
                  telemetry={"tracing": False, "metrics": False, "logs": False},
                  # Swagger UI from the package's own copy (dashboard_routes.api_docs), not a CDN:
                  # the page works offline. ReDoc, which only loads from a CDN, is not served.
                  docs_url=None, redoc_url=None)
    app.state.service = service
    app.state.metrics = metrics
    app.state.audit = audit
    _install_error_handlers(app)

    def refuse(scope: Any, status: int, reason: str) -> None:
        # Queued, not written: a refusal costs the event loop no disk I/O (audit.AuditLog).
        principal: Principal | None = (scope.get("state") or {}).get("principal")
        audit.record(AuditEntry(action=_action_of(scope.get("method", ""), scope.get("path", "")) or "request",
                                outcome="refused", status=status, method=scope.get("method", ""),
                                path=scope.get("path", ""), client=client_of(scope.get("client")),
                                actor=principal.describe() if principal else None, reason=reason))

    # Outermost first: count every request; authenticate from the headers; only then bound
    # (and let the route read) the body.
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes,
                       on_refusal=lambda scope, reason: refuse(scope, 413, reason))
    # With --metrics-auth, /metrics is no public path: the gate authenticates it like any route.
    public = PUBLIC_PATHS - {"/metrics"} if config.metrics_auth else PUBLIC_PATHS
    # One limiter for bearer tokens and dashboard logins: both are guesses at a token.
    limiter = FailureLimiter(config.auth_failures)
    sessions = DashboardSessions(tokens.authenticate)
    app.add_middleware(AuthGate, authenticate=tokens.authenticate, limiter=limiter,
                       public_paths=public, on_refusal=refuse, sessions=sessions)
    app.add_middleware(DashboardHeaders)
    app.add_middleware(RequestCounter, metrics=metrics)

    app.include_router(status_routes.router(service, metrics, config.metrics_auth))
    app.include_router(object_routes.router(service))
    app.include_router(sync_routes.router(service, host_views, watch_answers, metrics))
    app.include_router(flow_routes.router(service))
    app.include_router(topology_routes.router(TopologyViews(service)))
    app.include_router(history_routes.router(service, audit))
    app.include_router(token_routes.router(TokenUseCases(tokens, audit)))
    app.include_router(backup_routes.router(backend, audit))
    app.include_router(handoff_routes.router(HandoffBox(service.desired_state), audit))
    app.include_router(rule_routes.router(RuleHitsView(service.desired_state, service.reports.all,
                                                       service.flow_log.rule_counts)))
    app.include_router(insight_routes.router(service, metrics, PrometheusTrends(config.prometheus_url)))
    def logged_in(request: Request, principal: Principal) -> None:
        # Who opened a dashboard session, from where: an operator reading the audit log after a
        # token leak wants the logins as much as the refusals.
        audit.record(AuditEntry(action="dashboard.login", outcome="ok", status=303, method="POST",
                                path=request.url.path, client=client_of(request.client),
                                actor=principal.describe()))

    app.include_router(dashboard_routes.router(sessions, limiter,
                                               lambda request, status, reason: refuse(request.scope, status, reason),
                                               logged_in))
    app.include_router(dashboard_routes.api_docs(app.openapi_url or "/openapi.json", app.title))
    app.mount("/ui/static", dashboard_routes.STATIC, name="dashboard-static")
    return app
