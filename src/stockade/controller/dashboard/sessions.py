"""The dashboard's browser sessions: a login with an API token opens one; a cookie names it.

A browser cannot send `Authorization: Bearer` on a page load, so the dashboard's login form
takes a token once and answers with a session cookie. The session is only a handle: every
request made with it authenticates the same token again (`TokenAuthority.authenticate`), so
revoking or expiring a token ends its sessions at once, and the session's role and namespaces
are always the token's.

Invariants:
- The token stays in this process's memory; the cookie carries only a random session id
  (256 bits), never the token or anything derived from it. Nothing here logs either.
- A session ends after `idle` without use, after `absolute` in any case, on logout, and with its
  token. At most `capacity` sessions are open: the least recently used one is closed to make room
  (a flood of logins cannot grow memory without bound); and at most `per_token` per token, so one
  token's holder logging in again and again closes only its own older sessions, not others'.
- Agent tokens cannot log in: a host credential is not a person (rbac: agents do not browse).
- Writes made with a session need its CSRF token in the `X-Stockade-CSRF` header (checked by the
  gate): the cookie is SameSite=Strict as well, but the header does not depend on the browser.
- Sessions live in one controller process: behind several replicas a browser logs in to each
  (docs/dashboard.md).
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from stockade.controller.auth import Principal
from stockade.errors import Forbidden, Unauthorized

COOKIE = "stockade_session"
# Over HTTPS the cookie carries the `__Host-` prefix: a browser then accepts it only from this very
# host, Secure, for path / and without a Domain, so a sibling host under the same parent domain
# cannot plant a session of its choosing in the user's browser (cookie tossing).
SECURE_COOKIE = "__Host-" + COOKIE


def cookie_name(scheme: str) -> str:
    """The session cookie's name on a connection of `scheme` (http, https)."""
    return SECURE_COOKIE if scheme == "https" else COOKIE
CSRF_HEADER = "x-stockade-csrf"
DEFAULT_IDLE_SECONDS = 30 * 60
DEFAULT_ABSOLUTE_SECONDS = 12 * 60 * 60
DEFAULT_CAPACITY = 10_000
DEFAULT_PER_TOKEN = 20

Authenticate = Callable[[str | None], Principal]


@dataclass
class Session:
    id: str
    csrf: str
    token: str = field(repr=False)  # never printed, never sent to the browser
    opened: float = 0.0
    last_used: float = 0.0

    def csrf_matches(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.csrf.encode())


class DashboardSessions:
    """Open sessions by id; thread-safe (the gate runs on the loop, routes in the thread pool)."""

    def __init__(self, authenticate: Authenticate, idle: float = DEFAULT_IDLE_SECONDS,
                 absolute: float = DEFAULT_ABSOLUTE_SECONDS, capacity: int = DEFAULT_CAPACITY,
                 per_token: int = DEFAULT_PER_TOKEN, clock: Callable[[], float] = time.monotonic) -> None:
        self._authenticate = authenticate
        self._idle = idle
        self._absolute = absolute
        self._capacity = capacity
        self._per_token = per_token
        self._clock = clock
        self._lock = threading.Lock()
        self._open: OrderedDict[str, Session] = OrderedDict()  # least recently used first

    def open(self, token: str) -> tuple[Session, Principal]:
        """A new session for `token`, or Unauthorized (the token is checked first)."""
        principal = self._authenticate(token)
        if principal.role == "agent":
            raise Forbidden(f"{principal.name!r} is an agent token: a host's credential cannot log in to the dashboard")
        now = self._clock()
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), token, now, now)
        with self._lock:
            same_token = [s.id for s in self._open.values() if hmac.compare_digest(s.token, token)]
            for old in same_token[:max(0, len(same_token) - self._per_token + 1)]:
                del self._open[old]  # the least recently used first
            self._open[session.id] = session
            while len(self._open) > self._capacity:
                self._open.popitem(last=False)
        return session, principal

    def resolve(self, session_id: str | None) -> tuple[Session, Principal]:
        """The session and its token's caller now, or Unauthorized (unknown, timed out, or its
        token no longer valid: then the session is closed too)."""
        now = self._clock()
        with self._lock:
            session = self._open.get(session_id or "")
            if session is not None and (now - session.last_used > self._idle or now - session.opened > self._absolute):
                del self._open[session.id]
                session = None
            if session is None:
                raise Unauthorized("the dashboard session has ended: log in again")
            session.last_used = now
            self._open.move_to_end(session.id)
        try:
            return session, self._authenticate(session.token)
        except Unauthorized:
            self.close(session.id)
            raise

    def close(self, session_id: str | None) -> None:
        with self._lock:
            self._open.pop(session_id or "", None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)


def cookie_value(raw_cookie_header: str, name: str) -> str | None:
    """The value of cookie `name` in a `Cookie:` header; None when absent."""
    for part in raw_cookie_header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value or None
    return None
