"""Interfaces appearing and going away: rtnetlink link events (RTMGRP_LINK), read in a thread.

A hypervisor creates a VM's tap, a container runtime a veth, whenever it likes; the agent must
plumb (routes, gateway address: `dataplane.attach`) and report a workload's interface the moment
it exists, not at the next timer. This reads the kernel's own announcement of every link added,
changed or removed in the agent's network namespace. It decodes only the header and the name
(no pyroute2: the agent's memory, see `dataplane.pyroute2_lean`), and never touches anything.

Invariants: an event is (kind, name) with kind "new" (added or changed: RTM_NEWLINK) or "gone"
(RTM_DELLINK); a burst the kernel could not queue (ENOBUFS) is reported as one ("overrun", "")
so the reader's user re-examines every interface rather than missing one.
"""

from __future__ import annotations

import socket
import struct
from typing import Iterator

from stockade.dataplane.netlink_events import EventReader, in_netns, split_messages

RTMGRP_LINK = 0x1
RTM_NEWLINK = 16
RTM_DELLINK = 17
IFLA_IFNAME = 3
_IFINFOMSG = struct.Struct("=BxHiII")  # family, pad, type, index, flags, change
_RTATTR = struct.Struct("=HH")

LinkEvent = tuple[str, str]  # ("new" | "gone" | "overrun", interface name)


def _name(body: bytes) -> str | None:
    """IFLA_IFNAME of one ifinfomsg body."""
    offset = _IFINFOMSG.size
    while offset + _RTATTR.size <= len(body):
        length, kind = _RTATTR.unpack_from(body, offset)
        if length < _RTATTR.size:
            return None
        if kind == IFLA_IFNAME:
            return body[offset + _RTATTR.size:offset + length].split(b"\0", 1)[0].decode(errors="replace")
        offset += (length + 3) & ~3
    return None


class LinkEventReader(EventReader[LinkEvent]):
    """Link events of the current network namespace, or of `netns` (a name under /run/netns)."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self.overruns = 0

    def open(self) -> "LinkEventReader":
        def make() -> socket.socket:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
            sock.bind((0, RTMGRP_LINK))
            return sock
        self.sock = in_netns(self.netns, make) if self.netns else make()
        return self

    def _overrun(self) -> None:
        self.overruns += 1

    def read(self, timeout: float) -> list[LinkEvent]:
        before = self.overruns
        events = super().read(timeout)
        return [("overrun", "")] + events if self.overruns != before else events

    def _decode(self, data: bytes) -> Iterator[LinkEvent]:
        for mtype, _flags, _seq, body in split_messages(data):
            if mtype in (RTM_NEWLINK, RTM_DELLINK):
                name = _name(body)
                if name:
                    yield ("new" if mtype == RTM_NEWLINK else "gone", name)
