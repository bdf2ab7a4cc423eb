"""HTTP/1.1 to the controller on the standard library's `http.client`: TCP, TLS or a unix socket.

What `stockade.client` needs and no more: one request at a time per connection,
a small pool of kept-alive connections shared by threads, a timeout per request,
the whole body read into memory. It replaced httpx in the client, which every
agent process loads: httpx and its dependencies were ~8 MB of each host's
resident memory (docs/performance.md); `http.client` is in the standard library.

Errors are left as they come (`OSError`, among them `ssl.SSLError` and
`TimeoutError`, and `http.client.HTTPException`): the client maps them to its own.
Nothing here puts a header, and so a token, into an error message.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any, Mapping

MAX_IDLE = 8  # kept-alive connections per client; the agent uses at most ~4 at once
# Only a request that cannot change anything is sent again when a kept-alive connection turns
# out to have been closed by the server (its idle timeout) just as we reused it.
RETRY_SAFE = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    body: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not (json.JSONDecodeError and
        UnicodeDecodeError are ValueErrors)."""
        return json.loads(self.body)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("stockade", timeout=timeout)  # the Host header; unused on a unix socket
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class Transport:
    """Kept-alive connections to one server; `request` is safe to call from several threads."""

    def __init__(self, *, host: str | None = None, port: int | None = None, unix_path: str | None = None,
                 tls: ssl.SSLContext | None = None, headers: Mapping[str, str] | None = None,
                 timeout: float = 10.0) -> None:
        self._host, self._port, self._unix_path, self._tls = host, port, unix_path, tls
        self._headers = dict(headers or {})
        self._timeout = timeout
        self._idle: list[http.client.HTTPConnection] = []
        self._busy: set[http.client.HTTPConnection] = set()  # in an exchange now (see close)
        self._lock = threading.Lock()
        self._closed = False

    @property
    def closed(self) -> bool:
        """close() was called: no request will be sent any more."""
        return self._closed

    def _connect(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self._unix_path is not None:
            conn = _UnixConnection(self._unix_path, self._timeout)
        elif self._tls is not None:
            conn = http.client.HTTPSConnection(self._host or "", self._port, timeout=self._timeout,
                                               context=self._tls)
        else:
            conn = http.client.HTTPConnection(self._host or "", self._port, timeout=self._timeout)
        conn.connect()  # here, so that connecting has the connect timeout and its own errors
        return conn

    def _take(self) -> http.client.HTTPConnection | None:
        """An idle connection the server has not closed, or None."""
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                sock = conn.sock
                # An idle connection is readable only when the server closed it (or broke the protocol).
                if sock is not None and not select.select([sock], [], [], 0)[0]:
                    return conn
                conn.close()
        return None

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < MAX_IDLE:
                self._idle.append(conn)
                return
        conn.close()

    def request(self, method: str, target: str, body: bytes | None = None, timeout: float | None = None,
                headers: Mapping[str, str] | None = None) -> Response:
        """Send one request (`target`: path and query) and read the whole answer."""
        all_headers = {**self._headers, **(headers or {})}
        if body is not None:
            all_headers.setdefault("Content-Type", "application/json")
        conn = self._take()
        if conn is not None:
            try:
                return self._exchange(conn, method, target, body, all_headers, timeout)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                if method not in RETRY_SAFE or self._closed:  # closed by close(), not the server
                    raise
                # closed by the server as we reused it: once more on a new connection
        return self._exchange(self._connect(), method, target, body, all_headers, timeout)

    def _exchange(self, conn: http.client.HTTPConnection, method: str, target: str, body: bytes | None,
                  headers: dict[str, str], timeout: float | None) -> Response:
        with self._lock:
            self._busy.add(conn)
        try:
            if conn.sock is not None:
                conn.sock.settimeout(self._timeout if timeout is None else timeout)
            conn.request(method, target, body=body, headers=headers)
            answer = conn.getresponse()
            data = answer.read()
        except BaseException:
            conn.close()
            raise
        finally:
            with self._lock:
                self._busy.discard(conn)
        if answer.will_close:
            conn.close()
        else:
            self._give_back(conn)
        return Response(answer.status, answer.reason, data)

    def close(self) -> None:
        """Close every connection. Exchanges in flight (a long-poll, say) end at once with an
        error, not retried: their sockets are shut down, so the threads blocked on them return,
        and a process that is stopping does not wait for the server's answer."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            busy = list(self._busy)
        for conn in idle:
            conn.close()
        for conn in busy:
            sock = conn.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed or never connected: nothing is waiting on it
