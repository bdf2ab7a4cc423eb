"""ASGI middleware: the security headers of every dashboard response (/ui/...).

The Content-Security-Policy allows only this origin's scripts, styles, images and API: no inline
script, no inline event handler, no framing, no form posted elsewhere. Together with the
dashboard never building HTML from data (templates autoescape; scripts use DOM nodes and
textContent), a workload label or rule name that holds markup stays text.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    # Not no-referrer: under it a browser sends `Origin: null` with every POST, and the login's
    # cross-origin check (routes.py) could no longer tell our own form from another site's.
    # same-origin still sends nothing to other sites.
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


# The API's Swagger page (/docs) runs FastAPI's inline bootstrap script, so it cannot have the
# dashboard's CSP; it may not be framed either (clickjacking its "Authorize" and "Execute").
NO_FRAMING = [(b"content-security-policy", b"frame-ancestors 'none'"), (b"x-frame-options", b"DENY"),
              (b"x-content-type-options", b"nosniff")]
DOCS = ("/docs", "/docs/oauth2-redirect")


class DashboardHeaders:
    def __init__(self, app: ASGIApp, prefix: str = "/ui") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path in DOCS:
            async def unframed(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message.get("headers", []), *NO_FRAMING]}
                await send(message)

            await self.app(scope, receive, unframed)
            return
        if path != self.prefix and not path.startswith(self.prefix + "/"):
            await self.app(scope, receive, send)
            return
        static = path.startswith(self.prefix + "/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0] != b"cache-control" or static]
                headers += HEADERS
                if not static:  # pages carry the viewer's name and CSRF token: never cached
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
