"""A long-lived flow between two lab workloads that measures itself: for live-migration tests and
the migration benchmark.

    with echo_server(netns, "udp", port):            # in the destination's netns (moves with it)
        with Stream(src_netns, "udp", ip, port) as s:  # one connection, a numbered message every interval
            s.wait_answers(10)
            ...                                       # move the destination
        s.result                                      # sent, answered, lost, longest gap, broken

Both ends are small Python processes in the workloads' netns, on one socket each for the whole
run: a TCP connection (does its conntrack state survive?) or a UDP flow (how many datagrams are
lost, and for how long is the destination unreachable?). The client sends a sequence number
every `interval` seconds and reads the echoes; `answers` counts echoes as they come (read
from its stderr, one line each), `result` is its own summary when it ends.

Invariants: every process started here ends with its `with` block, also on error; a client
runs at most `limit` seconds and stops by itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from stockade.errors import LabError

SERVER = r"""
import socket, sys, threading
proto, port = sys.argv[1], int(sys.argv[2])
kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
s = socket.socket(socket.AF_INET6, kind)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", port))
print("ready", flush=True)
if proto == "udp":
    while True:
        data, peer = s.recvfrom(64)
        s.sendto(data, peer)
s.listen()
def echo(c):
    while (d := c.recv(4096)):
        c.sendall(d)
while True:
    c, _ = s.accept()
    threading.Thread(target=echo, args=(c,), daemon=True).start()
"""

CLIENT = r"""
import json, select, socket, sys, time
proto, host, port, interval, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
if proto == "udp":
    s = socket.socket(family, socket.SOCK_DGRAM); s.connect((host, port))
else:
    s = socket.create_connection((host, port), timeout=3)
s.setblocking(False)
print("ready", flush=True)
start = time.monotonic(); sent = answered = 0; last_answer = start; longest = 0.0; longest_at = 0.0
broken = None; pending = b""; next_send = start
while time.monotonic() - start < limit:
    now = time.monotonic()
    if now >= next_send and broken is None:
        try:
            s.send(sent.to_bytes(8, "big")); sent += 1
        except BlockingIOError:
            pass
        except OSError as e:
            broken = repr(e)
        next_send += interval
    ready = select.select([s, sys.stdin], [], [], max(0.0, next_send - time.monotonic()))[0]
    if sys.stdin in ready and not sys.stdin.readline():
        break
    if s in ready:
        try:
            data = s.recv(65536)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError as e:
            broken = broken or repr(e); data = b""
        if not data and proto == "tcp":
            broken = broken or "closed by the peer"
            continue
        if proto == "udp":
            got = 1
        else:
            pending += data; got = len(pending) // 8; pending = pending[got * 8:]
        if got:
            now = time.monotonic()
            if now - last_answer > longest:
                longest, longest_at = now - last_answer, last_answer - start
            last_answer = now; answered += got
            print(answered, file=sys.stderr, flush=True)
if time.monotonic() - last_answer > longest:
    longest, longest_at = time.monotonic() - last_answer, last_answer - start
print(json.dumps({"sent": sent, "answered": answered, "lost": max(0, sent - answered),
                  "longest_gap_ms": round(longest * 1000, 1), "longest_gap_at_s": round(longest_at, 3),
                  "broken": broken, "seconds": round(time.monotonic() - start, 3)}), flush=True)
"""


def _in_netns(netns: str, code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-u", "-c", code, *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _await_ready(proc: subprocess.Popen[str], what: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        err = proc.stderr.read() if proc.stderr else ""
        raise LabError(f"{what} did not start: {line.strip()} {err.strip()}")


def _end(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


@contextmanager
def echo_server(netns: str, protocol: str, port: int) -> Iterator[None]:
    """An echo service on `port` (IPv4 and IPv6) inside `netns`, for the `with` block."""
    proc = _in_netns(netns, SERVER, protocol, str(port))
    try:
        _await_ready(proc, f"echo server {protocol}/{port} in {netns}")
        yield
    finally:
        _end(proc)


@dataclass
class StreamResult:
    sent: int
    answered: int
    lost: int
    longest_gap_ms: float
    longest_gap_at_s: float
    broken: str | None
    seconds: float


class Stream:
    """One flow from `netns` to `host`:`port`, a message every `interval` s, for at most `limit` s."""

    def __init__(self, netns: str, protocol: str, host: str, port: int, interval: float = 0.01,
                 limit: float = 120.0) -> None:
        self._args = (netns, protocol, host, port, interval, limit)
        self._proc: subprocess.Popen[str] | None = None
        self._answers = 0
        self._changed = threading.Condition()
        self.result: StreamResult | None = None

    def __enter__(self) -> "Stream":
        netns, protocol, host, port, interval, limit = self._args
        self._proc = _in_netns(netns, CLIENT, protocol, host, str(port), str(interval), str(limit))
        try:
            _await_ready(self._proc, f"{protocol} stream from {netns} to {host}:{port}")
        except BaseException:
            _end(self._proc)
            raise
        threading.Thread(target=self._count, daemon=True).start()
        return self

    def _count(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            if line.strip().isdigit():
                with self._changed:
                    self._answers = int(line)
                    self._changed.notify_all()

    @property
    def answers(self) -> int:
        with self._changed:
            return self._answers

    def wait_answers(self, count: int, timeout: float = 10.0) -> bool:
        """Whether `count` answers (in all) came within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._answers < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def stop(self) -> StreamResult:
        """End the stream and read its summary."""
        if self.result is not None:
            return self.result
        assert self._proc is not None and self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.close()  # the client ends at EOF on its stdin and prints its summary
        timer = threading.Timer(10.0, self._proc.kill)  # a client that does not end is not waited for
        timer.start()
        try:
            out = self._proc.stdout.read()
            self._proc.wait(10)
        finally:
            timer.cancel()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if not lines:
            raise LabError(f"the stream client ended without a summary (exit {self._proc.returncode})")
        self.result = StreamResult(**json.loads(lines[-1]))
        return self.result

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self.result is None:
            try:
                self.stop()
            except LabError:
                pass
            finally:
                _end(self._proc)
