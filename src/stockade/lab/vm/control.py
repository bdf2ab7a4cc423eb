"""The host side of a lab VM's control channel: line requests to the guest agent (guest/agent.sh).

    channel = ControlChannel.connect(socket_path, timeout=5.0)   # QEMU's unix-socket chardev
    channel.wait_ready(timeout=60.0)                              # the agent said "ready"
    channel.request("serve", "tcp", "8080")                       # -> "1234" (the reply after "ok")

Protocol (one line each way, ASCII): the host sends "ID COMMAND ARGS...", the guest answers
"ID ok RESULT" or "ID err REASON"; the guest says "ready" when its agent (re)starts. Words
never contain spaces; each is checked here before it is sent, and again by the agent.

Invariants: one request at a time (a lock), every wait bounded by a deadline; a reply whose ID
is not the request's (a late one after a time-out) is skipped, never taken for this one. A
guest that restarts its agent mid-request makes the request fail (LabError), not hang.
"""

from __future__ import annotations

import re
import select
import socket
import threading
import time
from pathlib import Path

from stockade.errors import LabError

_WORD = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class ControlChannel:
    def __init__(self, sock: socket.socket, what: str) -> None:
        self._sock = sock
        self._what = what
        self._buffer = b""
        self._lock = threading.Lock()
        self._next_id = 1
        self._closed = False

    @classmethod
    def connect(cls, path: Path, what: str, timeout: float) -> "ControlChannel":
        """Connect to QEMU's chardev socket at `path`, retrying until QEMU listens or `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(path))
                return cls(sock, what)
            except (FileNotFoundError, ConnectionRefusedError) as e:
                sock.close()
                if time.monotonic() >= deadline:
                    raise LabError(f"{what}: control socket {path} not accepting within {timeout:.0f} s: {e}") from e
                time.sleep(0.02)  # QEMU creates the socket during its own start-up; no event to await

    def close(self) -> None:
        self._closed = True
        self._sock.close()

    def _read_line(self, deadline: float) -> str:
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self._sock], [], [], left)
            if not ready:
                raise TimeoutError
            try:
                chunk = self._sock.recv(4096)
            except OSError as e:  # reset by a QEMU that died
                raise LabError(f"{self._what}: control channel closed: {e}") from e
            if not chunk:
                raise LabError(f"{self._what}: control channel closed (did the VM stop?)")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode(errors="replace").strip()

    def wait_ready(self, timeout: float) -> None:
        """Until the guest agent says "ready"; LabError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                try:
                    if self._read_line(deadline) == "ready":
                        return
                except TimeoutError:
                    raise LabError(f"{self._what}: the guest agent did not say ready within {timeout:.0f} s") from None

    def request(self, *words: str, timeout: float = 10.0) -> str:
        """Send one request; the result after "ok". LabError on "err", a time-out or a closed channel."""
        for word in words:
            if not _WORD.fullmatch(word):
                raise LabError(f"{self._what}: control request word {word!r} is not allowed "
                               f"(letters, digits, '_.:-', at most 64)")
        with self._lock:
            if self._closed:
                raise LabError(f"{self._what}: control channel closed (the VM was stopped)")
            rid = str(self._next_id)
            self._next_id += 1
            try:
                self._sock.sendall((" ".join((rid, *words)) + "\n").encode())
            except OSError as e:
                raise LabError(f"{self._what}: control channel closed: {e}") from e
            deadline = time.monotonic() + timeout
            while True:
                try:
                    line = self._read_line(deadline)
                except TimeoutError:
                    raise LabError(f"{self._what}: no reply to {' '.join(words)!r} within {timeout:.1f} s") from None
                if line == "ready":
                    raise LabError(f"{self._what}: the guest agent restarted during {' '.join(words)!r}")
                got_id, _, rest = line.partition(" ")
                if got_id != rid:
                    continue  # a late reply to an earlier request that timed out
                status, _, result = rest.partition(" ")
                if status == "ok":
                    return result
                raise LabError(f"{self._what}: {' '.join(words)!r} failed in the guest: {result or status}")
