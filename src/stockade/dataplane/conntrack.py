"""Read conntrack DESTROY events, with their packet and byte counters, straight from the kernel.

ctnetlink (NFNL_SUBSYS_CTNETLINK) multicasts an IPCTNL_MSG_CT_DELETE message to
the NFNLGRP_CONNTRACK_DESTROY group whenever a connection's conntrack entry goes
away (timed out, closed and past TIME_WAIT, or deleted). The messages are
decoded with pyroute2's message class (`nfct_msg` from
`pyroute2.netlink.nfnetlink.nfctsocket`); the transport is a plain blocking
AF_NETLINK socket that we own, as in `dataplane.nflog`, so that a reader thread
can poll it with a timeout, stop cleanly, and see ENOBUFS.

Counters: an entry carries CTA_COUNTERS_ORIG/REPLY only if it was created
while `net.netfilter.nf_conntrack_acct` was 1 in its network namespace, so
`open()` sets it (in the namespace it reads, before anything is recorded).
Entries older than that end without counts (`packets` None).

Bounded: the socket buffer is finite (`rcvbuf`) and `read` returns at most one
buffer's worth. A full buffer loses events; each ENOBUFS on receive is counted
in `lost` (at least one event each; ctnetlink events carry no sequence number,
so the exact number cannot be known). Never programs anything beyond that sysctl.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import Iterator

import stockade.dataplane.pyroute2_lean  # noqa: F401,I001 - first: pyroute2 without its __init__
from pyroute2.netlink import NETLINK_NETFILTER
from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_CTNETLINK, NFNLGRP_CONNTRACK_DESTROY
from pyroute2.netlink.nfnetlink.nfctsocket import IPCTNL_MSG_CT_DELETE, nfct_msg

from stockade.dataplane.netlink_events import SOL_NETLINK, EventReader, in_netns, split_messages
from stockade.dataplane.nflog import L4_NAMES
from stockade.errors import DataplaneError

NETLINK_ADD_MEMBERSHIP = 1
ACCT_SYSCTL = "/proc/sys/net/netfilter/nf_conntrack_acct"
DESTROY_TYPE = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE


@dataclass(frozen=True)
class ConntrackEnd:
    """A connection that ended, named by its original-direction tuple, with its counters."""

    family: int                 # 4 or 6
    protocol: str               # tcp, udp, sctp, icmp, ipv6-icmp, or the number as a string
    src: str
    dst: str
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None
    packets: int | None = None          # original direction (initiator → responder)
    bytes: int | None = None
    reply_packets: int | None = None    # reply direction
    reply_bytes: int | None = None
    timestamp: float | None = None      # when it ended (CTA_TIMESTAMP_STOP, if the kernel stamps), else None


def _counters(attr: object) -> tuple[int | None, int | None]:
    if attr is None:
        return None, None
    get = attr.get_attr  # type: ignore[attr-defined]
    packets = get("CTA_COUNTERS_PACKETS")
    octets = get("CTA_COUNTERS_BYTES")
    if packets is None:
        packets = get("CTA_COUNTERS32_PACKETS")
    if octets is None:
        octets = get("CTA_COUNTERS32_BYTES")
    return packets, octets


def decode_destroy(msg: nfct_msg) -> ConntrackEnd | None:
    """A decoded IPCTNL_MSG_CT_DELETE as a ConntrackEnd (None when it has no usable original tuple)."""
    orig = msg.get_attr("CTA_TUPLE_ORIG")
    if orig is None:
        return None
    ip, proto = orig.get_attr("CTA_TUPLE_IP"), orig.get_attr("CTA_TUPLE_PROTO")
    if ip is None or proto is None:
        return None
    if ip.get_attr("CTA_IP_V4_SRC") is not None:
        family, src, dst = 4, ip.get_attr("CTA_IP_V4_SRC"), ip.get_attr("CTA_IP_V4_DST")
    elif ip.get_attr("CTA_IP_V6_SRC") is not None:
        family, src, dst = 6, ip.get_attr("CTA_IP_V6_SRC"), ip.get_attr("CTA_IP_V6_DST")
    else:
        return None
    if src is None or dst is None:
        return None
    num = proto.get_attr("CTA_PROTO_NUM")
    icmp_type = proto.get_attr("CTA_PROTO_ICMP_TYPE")
    if icmp_type is None:
        icmp_type = proto.get_attr("CTA_PROTO_ICMPV6_TYPE")
    packets, octets = _counters(msg.get_attr("CTA_COUNTERS_ORIG"))
    rpackets, roctets = _counters(msg.get_attr("CTA_COUNTERS_REPLY"))
    stamp = None
    ts = msg.get_attr("CTA_TIMESTAMP")
    if ts is not None and ts.get_attr("CTA_TIMESTAMP_STOP"):
        stamp = ts.get_attr("CTA_TIMESTAMP_STOP") / 1e9
    return ConntrackEnd(
        family=family, protocol=L4_NAMES.get(num, str(num)),
        src=str(ipaddress.ip_address(src)), dst=str(ipaddress.ip_address(dst)),
        sport=proto.get_attr("CTA_PROTO_SRC_PORT"), dport=proto.get_attr("CTA_PROTO_DST_PORT"),
        icmp_type=icmp_type if num in (1, 58) else None,
        packets=packets, bytes=octets, reply_packets=rpackets, reply_bytes=roctets, timestamp=stamp)


class ConntrackReader(EventReader[ConntrackEnd]):
    """Conntrack DESTROY events of one network namespace. `open()`, `read()` (or `run()` in a thread), `close()`."""

    def __init__(self, rcvbuf: int = 1 << 20, netns: str | None = None, enable_acct: bool = True) -> None:
        self.rcvbuf = rcvbuf
        self.netns = netns
        self.enable_acct = enable_acct
        self.sock: socket.socket | None = None
        self.acct: bool | None = None   # accounting on in that namespace (None: not checked)
        self.lost = 0                   # ENOBUFS seen on receive: at least one event lost each
        self.received = 0

    def open(self) -> "ConntrackReader":
        def make() -> socket.socket:
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
                s.bind((0, 0))
                # Joining the group loads nf_conntrack_netlink (and nf_conntrack), so the
                # sysctl below exists afterwards.
                s.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_CONNTRACK_DESTROY)
                # Runs in the namespace being read (this thread entered it): /proc/sys/net is
                # the namespace of the thread that opens it.
                self.acct = _set_acct() if self.enable_acct else _get_acct()
            except BaseException:
                s.close()
                raise
            return s

        self.sock = in_netns(self.netns, make) if self.netns else make()
        return self

    def _overrun(self) -> None:
        self.lost += 1

    def _decode(self, data: bytes) -> Iterator[ConntrackEnd]:
        for mtype, _flags, _seq, _body, offset, length in split_messages(data, with_offsets=True):
            if mtype != DESTROY_TYPE:
                continue
            msg = nfct_msg(data, offset=offset, length=length)
            msg.decode()
            end = decode_destroy(msg)
            if end is not None:
                self.received += 1
                yield end


def _get_acct() -> bool | None:
    try:
        with open(ACCT_SYSCTL) as f:
            return f.read().strip() == "1"
    except OSError:
        return None


def _set_acct() -> bool:
    """net.netfilter.nf_conntrack_acct=1 in the calling thread's namespace; True when it is on."""
    for _ in range(20):  # the sysctl appears once nf_conntrack has registered in this namespace
        try:
            with open(ACCT_SYSCTL, "w") as f:
                f.write("1\n")
            return True
        except FileNotFoundError:
            time.sleep(0.05)
    return False


def forget_connections(addresses: set[str] | list[str]) -> int:
    """Delete this netns's conntrack entries from or to each address (a workload deleted, an
    address released, or a policy with enforceEstablished rolled out); returns how many went.

    Through the `conntrack` tool: deletions are rare (a change that ends connections), and
    one command per address and direction is simpler than building ctnetlink filters here.
    """
    deleted = 0
    for address in sorted(addresses):
        family = "ipv6" if ":" in address else "ipv4"
        for direction in ("--orig-src", "--orig-dst"):
            res = subprocess.run(["conntrack", "-D", "-f", family, direction, address],
                                 capture_output=True, text=True, timeout=10, check=False)
            # exit 1 with "0 flow entries have been deleted" is not an error: nothing was open
            found = re.search(r"(\d+) flow entries have been deleted", res.stderr + res.stdout)
            if res.returncode not in (0, 1) or found is None:
                raise DataplaneError(["conntrack", "-D", "-f", family, direction, address], res.returncode,
                                     res.stderr)
            deleted += int(found.group(1))
    return deleted
