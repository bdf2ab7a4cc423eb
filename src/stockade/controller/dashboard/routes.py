"""The dashboard's routes: log in and out, its pages, its shipped files.

The login form posts a token once; the answer is a session cookie (`sessions`), HttpOnly so no
script can read it, SameSite=Strict, and Secure when the controller speaks TLS. Failed logins
count against the client like failed bearer tokens (`ratelimit.FailureLimiter`) and are audited
as refusals; the token is never logged. Every other /ui/ route is behind the gate: a page asked
for without a session is redirected here.

No `from __future__ import annotations`: FastAPI reads the signatures at runtime.
"""

from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from stockade.controller.auth import Principal
from stockade.controller.dashboard.pages import PAGE_BY_NAME, page_context
from stockade.controller.dashboard.sessions import DashboardSessions, cookie_name
from stockade.controller.ratelimit import FailureLimiter, client_key
from stockade.errors import Forbidden, NotFoundError, Unauthorized

HERE = Path(__file__).parent
TEMPLATES = Jinja2Templates(directory=str(HERE / "templates"))
STATIC = StaticFiles(directory=str(HERE / "static"))
HOME = "/ui/overview"
MAX_LOGIN_FORM = 16 * 1024

OnLoginRefused = Callable[[Request, int, str], None]
OnLogin = Callable[[Request, Principal], None]  # a session opened: audited like a write


def _no_audit(request: Request, principal: Principal) -> None:
    return None


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a dashboard page of ours, never another site (open redirect)."""
    if not target or not target.startswith("/ui/") or target.startswith("//") or "\\" in target \
            or target.startswith("/ui/login"):
        return HOME
    return target


async def _read_form(request: Request) -> tuple[bytes, bool]:
    """The login form's first `MAX_LOGIN_FORM` bytes, and whether there were more. The rest is read
    and dropped as it arrives (so that the answer reaches the client), never held: the login is
    public, and an anonymous body must not cost the controller more memory than a form."""
    kept = bytearray()
    oversized = False
    async for chunk in request.stream():
        room = MAX_LOGIN_FORM - len(kept)
        if len(chunk) > room:
            oversized = True
        kept += chunk[:max(0, room)]
    return bytes(kept), oversized


def _login_page(request: Request, next_page: str, error: str | None = None, status: int = 200) -> HTMLResponse:
    return TEMPLATES.TemplateResponse(request, "login.html", {"next": next_page, "error": error}, status_code=status)


def router(sessions: DashboardSessions, limiter: FailureLimiter, on_refused: OnLoginRefused,
           on_login: OnLogin = _no_audit) -> APIRouter:
    r = APIRouter(include_in_schema=False)

    @r.get("/ui")
    @r.get("/ui/")
    async def home() -> RedirectResponse:
        return RedirectResponse(HOME, status_code=303)

    @r.get("/ui/login")
    async def login_form(request: Request, next: str | None = None) -> HTMLResponse:
        return _login_page(request, safe_next(next))

    @r.post("/ui/login")
    async def login(request: Request) -> Response:
        # Another site's page posting its own token here would log the victim's browser in as the
        # attacker (login CSRF): a browser names the posting page's origin, which must be ours.
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host', '')}":
            on_refused(request, 403, f"dashboard login posted from another origin ({origin[:100]})")
            return _login_page(request, HOME, "log in from the dashboard's own login page", status=403)
        body, oversized = await _read_form(request)
        try:
            form: dict[str, list[str]] | None = parse_qs(body.decode("utf-8", "replace"), max_num_fields=4)
        except ValueError:
            form = None  # more fields than the login form has: not our form
        token = ((form or {}).get("token") or [""])[0].strip()
        next_page = safe_next(((form or {}).get("next") or [""])[0])
        client = client_key(request.scope.get("client"))

        def refused(status: int, reason: str, shown: str, attempt: bool = True) -> HTMLResponse:
            """Audited; `attempt`: spends one of the client's tries, like a wrong bearer token."""
            if attempt:
                limiter.failed(client)
            on_refused(request, status, f"dashboard login: {reason}")
            return _login_page(request, next_page, shown, status=status)

        wait = limiter.retry_after(client)
        if wait is not None:
            message = f"too many failed logins from {client}; try again in {wait} s"
            response = refused(429, message, message, attempt=False)
            response.headers["Retry-After"] = str(wait)
            return response
        if oversized:
            return refused(413, f"a form of more than {MAX_LOGIN_FORM} bytes",
                           f"the login form is at most {MAX_LOGIN_FORM} bytes")
        if form is None:
            # Counted like a wrong token, so that posting it again and again ends in 429 (it used
            # to raise: a 500 and a traceback in the log for every post, never limited).
            return refused(400, "the form has more fields than the login form",
                           "the login form has only a token and where to go next")
        try:
            session, principal = sessions.open(token)
        except Unauthorized as e:
            return refused(401, e.message, e.message)
        except Forbidden as e:
            return refused(403, e.message, e.message, attempt=False)
        on_login(request, principal)
        home = RedirectResponse(next_page, status_code=303)
        home.set_cookie(cookie_name(request.url.scheme), session.id, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
        return home

    @r.post("/ui/logout")
    async def logout(request: Request) -> JSONResponse:
        # Behind the gate: a session and its CSRF header got this far.
        session = getattr(request.state, "session", None)
        sessions.close(session.id if session is not None else None)
        response = JSONResponse({"ok": True, "next": "/ui/login"})
        response.delete_cookie(cookie_name(request.url.scheme), path="/", httponly=True, samesite="strict",
                               secure=request.url.scheme == "https")
        return response

    @r.get("/ui/{name}")
    async def page(request: Request, name: str) -> HTMLResponse:
        found = PAGE_BY_NAME.get(name)
        if found is None:
            raise NotFoundError(f"the dashboard has no page {name!r}")
        principal: Principal = request.state.principal
        session = getattr(request.state, "session", None)
        # A bearer-token caller (curl, a test) sees the page too, but has no session: no CSRF.
        csrf = session.csrf if session is not None else ""
        return TEMPLATES.TemplateResponse(request, f"{found.name}.html", page_context(found, principal, csrf))

    return r


def api_docs(openapi_url: str, title: str) -> APIRouter:
    """The API's interactive documentation at /docs, from the Swagger UI shipped in static/vendor."""
    r = APIRouter(include_in_schema=False)

    @r.get("/docs")
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=openapi_url, title=f"{title} · API",
                                   swagger_js_url="/ui/static/vendor/swagger-ui-bundle.js",
                                   swagger_css_url="/ui/static/vendor/swagger-ui.css",
                                   swagger_favicon_url="/ui/static/favicon.svg",
                                   oauth2_redirect_url="/docs/oauth2-redirect")

    @r.get("/docs/oauth2-redirect")
    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    return r
