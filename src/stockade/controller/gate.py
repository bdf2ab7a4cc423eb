"""ASGI middleware deciding who is calling from the request's headers, before any of its body is read.

FastAPI reads and parses a request's body before it runs the route's dependencies, so with
authentication as a dependency an anonymous 16 MiB body cost ~1.8 s of the event loop and
~360 MB before its 401. Here the bearer token is checked first: a request without a valid one
is answered 401 without a byte of its body being read (uvicorn discards the rest as it
arrives, buffering none of it, and closes an idle connection after its keep-alive timeout).

Invariants:
- Every route but `PUBLIC_PATHS` needs a valid token; the caller (`Principal`) is left in the
  scope's state (`principal`) for the routes' dependencies, which do not authenticate again.
- A request without a valid token from a client that failed authentication too often
  (`ratelimit`) gets 429 with Retry-After instead of 401. A valid token is always let
  through: one client's failures never lock out another behind the same address (a NAT,
  the agents' shared unix socket), and at 256 random bits a token cannot be guessed, so the
  limit is about what refusals cost (log lines, audit entries), not about guessing.
- Every refusal goes to `on_refusal` (the audit log's queue: no disk I/O on the loop); a
  token never appears in a log line or a refusal.
- A request without an Authorization header may instead name a dashboard session in its cookie
  (`dashboard.sessions`): the session's token is authenticated again, exactly as a bearer one.
  A write (any method but GET, HEAD, OPTIONS) made that way also needs the session's CSRF token
  in `X-Stockade-CSRF`, or it is refused 403 before its body is read. A dashboard page asked for
  without a valid session is redirected to the login page instead of answered 401.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable
from urllib.parse import quote

from starlette.types import ASGIApp, Receive, Scope, Send

from stockade.controller.auth import Principal
from stockade.controller.dashboard.sessions import CSRF_HEADER, DashboardSessions, cookie_name, cookie_value
from stockade.controller.ratelimit import FailureLimiter, client_key
from stockade.errors import Forbidden, StockadeError, TooManyRequests, Unauthorized

log = logging.getLogger(__name__)

# Paths that need no token: liveness, metrics, and the OpenAPI document with its viewers.
PUBLIC_PATHS = frozenset({"/healthz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/ui/login"})
# The dashboard's shipped scripts, styles and libraries: nothing secret, needed by the login page.
PUBLIC_PREFIXES = ("/ui/static/",)
DASHBOARD = "/ui"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Authenticate = Callable[[str | None], Principal]
OnRefusal = Callable[[Scope, int, str], None]


def header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers") or []:
        if name == wanted:
            return str(value.decode("latin-1"))
    return None


def bearer_token(scope: Scope) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header; None without one (as FastAPI's HTTPBearer)."""
    for name, value in scope.get("headers") or []:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer":
                return None
            return token.strip() or None
    return None


async def send_error(send: Send, error: StockadeError, headers: dict[str, str] | None = None) -> None:
    """The API's error shape (`{"error", "message"}`) as a complete response."""
    body = json.dumps(error.to_dict()).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": error.http_status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class AuthGate:
    def __init__(self, app: ASGIApp, authenticate: Authenticate, limiter: FailureLimiter,
                 on_refusal: OnRefusal, public_paths: frozenset[str] = PUBLIC_PATHS,
                 sessions: DashboardSessions | None = None) -> None:
        self.app = app
        self.public_paths = public_paths
        self.authenticate = authenticate
        self.limiter = limiter
        self.on_refusal = on_refusal
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in self.public_paths or path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        # Only the cookie name of this connection's scheme: over HTTPS a plain `stockade_session`
        # (which a sibling host could have set) is not a session.
        session_id = (cookie_value(header(scope, b"cookie") or "", cookie_name(scope.get("scheme", "http")))
                      if self.sessions is not None else None)
        try:
            if session_id is not None and header(scope, b"authorization") is None:
                assert self.sessions is not None
                session, principal = self.sessions.resolve(session_id)
                if scope.get("method", "GET") not in SAFE_METHODS and not session.csrf_matches(
                        header(scope, CSRF_HEADER.encode())):
                    refused = Forbidden("a write from a dashboard session needs its CSRF token "
                                        "(the X-Stockade-CSRF header)")
                    self.on_refusal(scope, refused.http_status, refused.message)
                    await send_error(send, refused)
                    return
                state["session"] = session
            else:
                principal = self.authenticate(bearer_token(scope))
        except Unauthorized as e:
            if _is_page(scope):
                await _to_login(scope, send, clear_cookie=session_id is not None)
                return
            await self._refuse(scope, send, e)  # the body is never read
            return
        state["principal"] = principal
        state["caller"] = principal.name
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, send: Send, unauthorized: Unauthorized) -> None:
        """401, or 429 with Retry-After once the client has no failed attempts left."""
        client = client_key(scope.get("client"))
        wait = self.limiter.retry_after(client)
        if wait is not None:
            limited = TooManyRequests(f"too many failed authentications from {client}; retry after {wait} s",
                                      wait)
            self.on_refusal(scope, limited.http_status, limited.message)
            await send_error(send, limited, {"Retry-After": str(wait)})
            return
        if self.limiter.failed(client):
            # Once per lockout, not per refused request: a flood must not become a log flood.
            log.warning("%s failed authentication too often: refused (429) until it may try again", client)
        else:
            log.warning("refused %s %s from %s (no valid token): %s", scope.get("method"), scope["path"],
                        client, unauthorized.message)
        self.on_refusal(scope, unauthorized.http_status, unauthorized.message)
        await send_error(send, unauthorized, {"WWW-Authenticate": "Bearer"})


def _is_page(scope: Scope) -> bool:
    """A dashboard page a browser navigates to (not a script's API call)."""
    path = scope.get("path", "")
    return scope.get("method") in ("GET", "HEAD") and (path == DASHBOARD or path.startswith(DASHBOARD + "/"))


async def _to_login(scope: Scope, send: Send, clear_cookie: bool) -> None:
    """303 to the login page, remembering where the browser was going (a path of ours only)."""
    target = scope.get("path", "")
    query = scope.get("query_string", b"").decode("latin-1")
    if query:
        target += "?" + query
    headers = [(b"location", f"{DASHBOARD}/login?next={quote(target, safe='')}".encode()),
               (b"content-length", b"0"), (b"cache-control", b"no-store")]
    if clear_cookie:
        name = cookie_name(scope.get("scheme", "http"))
        secure = "; Secure" if name.startswith("__Host-") else ""
        headers.append((b"set-cookie", f"{name}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure}".encode()))
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
