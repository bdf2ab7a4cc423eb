"""ASGI middleware bounding request bodies, so that no request can make the controller buffer
more than `max_bytes` (a declared Content-Length over it is refused before reading; a chunked
body is cut off as soon as it passes the limit). Refusals are 413 in the API's error shape."""

from __future__ import annotations

import json
from typing import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stockade.errors import PayloadTooLarge

DRAIN_LIMIT = 64 * 1024 * 1024  # an over-limit body up to this size is read and dropped, so the 413 arrives


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, on_refusal: Callable[[Scope, str], None] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_refusal = on_refusal

    def _message(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes; split it into smaller requests"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        try:
            too_big = declared is not None and int(declared) > self.max_bytes
        except ValueError:
            too_big = False  # uvicorn refuses a malformed Content-Length itself
        if too_big:
            if self.on_refusal is not None:
                self.on_refusal(scope, self._message())
            # Read and discard the body (chunk by chunk: nothing is kept) before answering, up to a
            # bound: closing with unread request bytes makes the kernel reset the connection, and the
            # client then sees "connection reset" instead of this 413.
            if int(declared or 0) <= max(4 * self.max_bytes, DRAIN_LIMIT):
                while True:
                    message = await receive()
                    if message["type"] != "http.request" or not message.get("more_body", False):
                        break
            body = json.dumps(PayloadTooLarge(self._message()).to_dict()).encode()
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
            return
        seen = 0

        async def bounded_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # Raised inside the route's body read: FastAPI passes HTTPExceptions through,
                    # and the API's handler turns 413 into a PayloadTooLarge error body.
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, bounded_receive, send)
