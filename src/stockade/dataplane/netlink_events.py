"""What the kernel-event readers share: a netfilter netlink socket read in a thread.

`EventReader` owns the socket's life (open in a namespace, close, context
manager), the bounded read (one datagram per call, `select` with a timeout,
ENOBUFS counted instead of raised) and the run loop; subclasses say how the
socket is set up and how a datagram decodes. Never touches nftables.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import socket
import struct
import threading
from typing import Callable, Generic, Iterator, TypeVar

SOL_NETLINK = 270
NLMSG_HDR = struct.Struct("=IHHII")
CLONE_NEWNET = 0x40000000



T = TypeVar("T")


def split_messages(data: bytes, with_offsets: bool = False) -> Iterator:
    """The netlink messages in one datagram: (type, flags, seq, body[, offset, length])."""
    offset = 0
    while offset + NLMSG_HDR.size <= len(data):
        length, mtype, flags, seq, _pid = NLMSG_HDR.unpack_from(data, offset)
        if length < NLMSG_HDR.size:
            break
        body = data[offset + NLMSG_HDR.size:offset + length]
        yield (mtype, flags, seq, body, offset, length) if with_offsets else (mtype, flags, seq, body)
        offset += (length + 3) & ~3


def in_netns(netns: str, fn: Callable[[], T]) -> T:
    """Run `fn` in a short-lived thread that entered `netns` (setns is per thread): a socket it
    makes stays in that namespace; the caller's thread never changes namespace."""
    result: dict[str, object] = {}

    def target() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {netns}")
            finally:
                os.close(fd)
            result["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the caller below
            result["error"] = e

    t = threading.Thread(target=target, name=f"netlink-setns-{netns}")
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["value"]  # type: ignore[return-value]


class EventReader(Generic[T]):
    """`open()`, then `read()` (or `run()` in a thread), then `close()`."""

    sock: socket.socket | None = None

    def open(self) -> "EventReader[T]":
        raise NotImplementedError

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def __enter__(self) -> "EventReader[T]":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _decode(self, data: bytes) -> Iterator[T]:
        raise NotImplementedError

    def _overrun(self) -> None:
        """The kernel could not queue more for us (ENOBUFS): count it, keep reading."""

    def read(self, timeout: float) -> list[T]:
        """What arrives within `timeout` seconds (at most one socket read's worth)."""
        assert self.sock is not None, "open() first"
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return []
        try:
            data = self.sock.recv(1 << 17)
        except OSError as e:
            if e.errno == errno.ENOBUFS:
                self._overrun()
                return []
            raise
        return list(self._decode(data))

    def run(self, stop: threading.Event, sink: Callable[[T], None], poll: float = 1.0) -> None:
        """Read until `stop` is set, handing each item to `sink` (which must not block). `poll`
        only bounds how late `stop` is seen: data wakes the read at once."""
        while not stop.is_set():
            for item in self.read(poll):
                sink(item)
