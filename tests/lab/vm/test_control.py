"""The control channel's protocol over a real unix socket, with a scripted guest on the other end
(the real guest agent is exercised in tests/lab/test_vm.py)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from stockade.errors import LabError
from stockade.lab.vm.control import ControlChannel


@pytest.fixture
def guest(tmp_path: Path) -> Iterator[Callable[[Callable[[socket.socket], None]], ControlChannel]]:
    """Start a scripted guest on a unix socket; yields a function connecting a channel to it."""
    threads: list[threading.Thread] = []
    channels: list[ControlChannel] = []

    def start(script: Callable[[socket.socket], None]) -> ControlChannel:
        path = tmp_path / f"g{len(threads)}.sock"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        server.listen(1)

        def run() -> None:
            conn, _ = server.accept()
            with conn, server:
                script(conn)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        channel = ControlChannel.connect(path, "VM test", timeout=2.0)
        channels.append(channel)
        return channel

    yield start
    for channel in channels:
        channel.close()
    for thread in threads:
        thread.join(timeout=5)


def _lines(conn: socket.socket) -> Iterator[str]:
    buffer = b""
    while True:
        while b"\n" not in buffer:
            chunk = conn.recv(1024)
            if not chunk:
                return
            buffer += chunk
        line, _, buffer = buffer.partition(b"\n")
        yield line.decode()


def test_ready_then_replies_matched_by_id_skipping_a_late_one(guest) -> None:  # type: ignore[no-untyped-def]
    def script(conn: socket.socket) -> None:
        conn.sendall(b"boot noise\nready\n")
        lines = _lines(conn)
        first = next(lines)          # "1 slow": answered only after the second request came
        second = next(lines)
        conn.sendall(f"{first.split()[0]} ok late\n{second.split()[0]} ok fresh\n".encode())
        third = next(lines)
        conn.sendall(f"{third.split()[0]} err no such thing\n".encode())

    channel = guest(script)
    channel.wait_ready(timeout=2.0)
    with pytest.raises(LabError, match="no reply to 'slow'"):
        channel.request("slow", timeout=0.2)
    assert channel.request("hello", timeout=2.0) == "fresh"
    with pytest.raises(LabError, match="failed in the guest: no such thing"):
        channel.request("thing", timeout=2.0)


def test_a_guest_that_never_says_ready_times_out(guest) -> None:  # type: ignore[no-untyped-def]
    channel = guest(lambda conn: time.sleep(0.5))
    with pytest.raises(LabError, match="did not say ready within"):
        channel.wait_ready(timeout=0.2)


def test_a_word_with_a_space_or_newline_is_never_sent(guest) -> None:  # type: ignore[no-untyped-def]
    channel = guest(lambda conn: None)
    for word in ("a b", "x\n2 addr", ""):
        with pytest.raises(LabError, match="not allowed"):
            channel.request("connect", word)


def test_a_closed_channel_fails_the_request(guest) -> None:  # type: ignore[no-untyped-def]
    channel = guest(lambda conn: conn.sendall(b"ready\n"))
    channel.wait_ready(timeout=2.0)
    with pytest.raises(LabError, match="control channel closed"):
        channel.request("hello", timeout=2.0)
    channel.close()
    with pytest.raises(LabError, match="the VM was stopped"):
        channel.request("hello")
