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
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from stockade.controller.auth import Principal
from stockade.controller.ratelimit import FailureLimiter, client_key
from stockade.errors import StockadeError, TooManyRequests, Unauthorized

log = logging.getLogger(__name__)

# Paths that need no token: liveness, metrics, and the OpenAPI document with its viewers.
PUBLIC_PATHS = frozenset({"/healthz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})

Authenticate = Callable[[str | None], Principal]
OnRefusal = Callable[[Scope, int, str], None]


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
                 on_refusal: OnRefusal, public_paths: frozenset[str] = PUBLIC_PATHS) -> None:
        self.app = app
        self.public_paths = public_paths
        self.authenticate = authenticate
        self.limiter = limiter
        self.on_refusal = on_refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.public_paths:
            await self.app(scope, receive, send)
            return
        try:
            principal = self.authenticate(bearer_token(scope))
        except Unauthorized as e:
            await self._refuse(scope, send, e)  # the body is never read
            return
        state: dict[str, Any] = scope.setdefault("state", {})
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
