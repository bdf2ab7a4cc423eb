"""Read the packets our rules log to an NFLOG group, straight from the kernel (nfnetlink_log).

The messages are encoded and decoded with pyroute2's netlink message classes
(`nfgen_msg` + NLAs, declared below for NFNL_SUBSYS_ULOG, which pyroute2 does
not ship); the transport is a plain blocking AF_NETLINK socket that we own, so
that a reader thread can poll it with a timeout, stop cleanly, and see ENOBUFS.
No tool output is parsed.

Setup (one socket per group, in the network namespace whose rules log):
bind the group (NFULNL_CFG_CMD_BIND), copy mode NFULNL_COPY_PACKET with a small
copy range (headers only: IP + L4 ports or ICMP type), and per-instance sequence
numbers (NFULNL_CFG_F_SEQ), so that records the kernel could not deliver are
counted exactly: a gap in NFULA_SEQ is that many lost records; an ENOBUFS on
receive says the socket buffer overflowed (the gap is counted when the next
message arrives).

Bounded: the socket buffer is finite (`rcvbuf`), each message is at most
`copy_range` bytes of packet, and `read` returns at most one buffer's worth.
Never programs anything: reading is all this module does.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from typing import Iterator

import stockade.dataplane.pyroute2_lean  # noqa: F401,I001 - first: pyroute2 without its __init__
from pyroute2.netlink import NETLINK_NETFILTER, NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR, nla
from pyroute2.netlink.nfnetlink import NFNL_SUBSYS_ULOG, nfgen_msg

from stockade.dataplane.netlink_events import EventReader, in_netns, split_messages
from stockade.errors import DataplaneError

NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NFULNL_CFG_CMD_BIND = 1
NFULNL_CFG_CMD_UNBIND = 2
NFULNL_COPY_PACKET = 2
NFULNL_CFG_F_SEQ = 0x0001
NETLINK_NO_ENOBUFS = 5

L4_NAMES = {6: "tcp", 17: "udp", 132: "sctp", 1: "icmp", 58: "ipv6-icmp"}
PORTED = (6, 17, 132)
IPV6_EXT = (0, 43, 60)  # hop-by-hop, routing, destination options: skipped to reach L4
IPV6_FRAGMENT = 44


class nfulnl_cfg_msg(nfgen_msg):
    """NFULNL_MSG_CONFIG; `res_id` is the group number."""

    nla_map = (
        ("NFULA_CFG_UNSPEC", "none"),
        ("NFULA_CFG_CMD", "cfg_cmd"),
        ("NFULA_CFG_MODE", "cfg_mode"),
        ("NFULA_CFG_NLBUFSIZ", "be32"),
        ("NFULA_CFG_TIMEOUT", "be32"),
        ("NFULA_CFG_QTHRESH", "be32"),
        ("NFULA_CFG_FLAGS", "be16"),
    )

    class cfg_cmd(nla):
        fields = (("command", "B"),)

    class cfg_mode(nla):
        fields = (("copy_range", ">I"), ("copy_mode", "B"), ("_pad", "B"))


class nfulnl_msg(nfgen_msg):
    """NFULNL_MSG_PACKET: one logged packet."""

    nla_map = (
        ("NFULA_UNSPEC", "none"),
        ("NFULA_PACKET_HDR", "packet_hdr"),
        ("NFULA_MARK", "be32"),
        ("NFULA_TIMESTAMP", "timestamp"),
        ("NFULA_IFINDEX_INDEV", "be32"),
        ("NFULA_IFINDEX_OUTDEV", "be32"),
        ("NFULA_IFINDEX_PHYSINDEV", "be32"),
        ("NFULA_IFINDEX_PHYSOUTDEV", "be32"),
        ("NFULA_HWADDR", "hex"),
        ("NFULA_PAYLOAD", "cdata"),
        ("NFULA_PREFIX", "asciiz"),
        ("NFULA_UID", "be32"),
        ("NFULA_SEQ", "be32"),
        ("NFULA_SEQ_GLOBAL", "be32"),
        ("NFULA_GID", "be32"),
        ("NFULA_HWTYPE", "be16"),
        ("NFULA_HWHEADER", "hex"),
        ("NFULA_HWLEN", "be16"),
    )

    class packet_hdr(nla):
        fields = (("hw_protocol", ">H"), ("hook", "B"), ("_pad", "B"))

    class timestamp(nla):
        fields = (("sec", ">Q"), ("usec", ">Q"))


@dataclass(frozen=True)
class LoggedPacket:
    """One packet as a rule logged it: the prefix names the verdict and the rule."""

    prefix: str
    family: int                 # 4 or 6
    protocol: str               # tcp, udp, sctp, icmp, ipv6-icmp, or the number as a string
    src: str
    dst: str
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None
    indev: int | None = None
    outdev: int | None = None
    timestamp: float | None = None   # seconds since the epoch, when the kernel stamped it
    seq: int | None = None


def parse_headers(payload: bytes) -> tuple[int, str, str, int, bytes | None] | None:
    """(family, src, dst, l4 protocol number, L4 header or None if not reachable) of an IP packet."""
    if len(payload) < 1:
        return None
    version = payload[0] >> 4
    if version == 4 and len(payload) >= 20:
        ihl = (payload[0] & 0x0F) * 4
        proto = payload[9]
        frag_offset = struct.unpack("!H", payload[6:8])[0] & 0x1FFF
        src = str(ipaddress.IPv4Address(payload[12:16]))
        dst = str(ipaddress.IPv4Address(payload[16:20]))
        return 4, src, dst, proto, (payload[ihl:] if frag_offset == 0 else None)
    if version == 6 and len(payload) >= 40:
        src = str(ipaddress.IPv6Address(payload[8:24]))
        dst = str(ipaddress.IPv6Address(payload[24:40]))
        nxt, off = payload[6], 40
        l4: bytes | None = None
        for _ in range(8):  # a bounded walk over extension headers
            if nxt in IPV6_EXT and len(payload) >= off + 8:
                nxt, off = payload[off], off + (payload[off + 1] + 1) * 8
                continue
            if nxt == IPV6_FRAGMENT and len(payload) >= off + 8:
                first = struct.unpack("!H", payload[off + 2:off + 4])[0] >> 3 == 0
                nxt, off = payload[off], off + 8
                if not first:
                    return 6, src, dst, nxt, None
                continue
            l4 = payload[off:]
            break
        return 6, src, dst, nxt, l4
    return None


def decode_packet(msg: nfulnl_msg) -> LoggedPacket | None:
    """A decoded NFULNL_MSG_PACKET as a LoggedPacket (None when it is not an IP packet)."""
    payload = msg.get_attr("NFULA_PAYLOAD")
    if payload is None:
        return None
    if isinstance(payload, str):  # cdata decodes to bytes; be defensive about pyroute2 versions
        payload = payload.encode("latin-1")
    parsed = parse_headers(bytes(payload))
    if parsed is None:
        return None
    family, src, dst, proto, l4 = parsed
    sport = dport = icmp_type = None
    if l4 is not None:
        if proto in PORTED and len(l4) >= 4:
            sport, dport = struct.unpack("!HH", l4[:4])
        elif proto in (1, 58) and len(l4) >= 1:
            icmp_type = l4[0]
    ts = msg.get_attr("NFULA_TIMESTAMP")
    stamp = ts["sec"] + ts["usec"] / 1e6 if ts is not None else None
    return LoggedPacket(
        prefix=msg.get_attr("NFULA_PREFIX") or "",
        family=family, protocol=L4_NAMES.get(proto, str(proto)), src=src, dst=dst,
        sport=sport, dport=dport, icmp_type=icmp_type,
        indev=msg.get_attr("NFULA_IFINDEX_INDEV"), outdev=msg.get_attr("NFULA_IFINDEX_OUTDEV"),
        timestamp=stamp, seq=msg.get_attr("NFULA_SEQ"))


class NflogReader(EventReader[LoggedPacket]):
    """One NFLOG group. `open()`, then `read()` (or `run()` in a thread), then `close()`."""

    def __init__(self, group: int, copy_range: int = 128, rcvbuf: int = 1 << 20,
                 netns: str | None = None) -> None:
        self.group = group
        self.copy_range = copy_range
        self.rcvbuf = rcvbuf
        self.netns = netns
        self.sock: socket.socket | None = None
        self.lost = 0            # records the kernel could not deliver (sequence gaps)
        self.overruns = 0        # ENOBUFS seen on receive
        self.received = 0
        self._next_seq: int | None = None
        self._seq = 0

    # ------------------------------------------------------------ setup

    def open(self) -> "NflogReader":
        def make() -> socket.socket:
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            s.bind((0, 0))
            return s

        self.sock = in_netns(self.netns, make) if self.netns else make()
        try:
            # Unbind first: a group left bound by a dead process of ours would refuse BIND.
            self._config([("NFULA_CFG_CMD", {"command": NFULNL_CFG_CMD_UNBIND})], check=False)
            self._config([("NFULA_CFG_CMD", {"command": NFULNL_CFG_CMD_BIND})])
            self._config([("NFULA_CFG_MODE", {"copy_range": self.copy_range, "copy_mode": NFULNL_COPY_PACKET})])
            self._config([("NFULA_CFG_FLAGS", NFULNL_CFG_F_SEQ)])
        except BaseException:
            self.close()
            raise
        return self

    def _config(self, attrs: list, check: bool = True) -> None:
        assert self.sock is not None
        self._seq += 1
        msg = nfulnl_cfg_msg()
        msg["nfgen_family"] = socket.AF_UNSPEC
        msg["version"] = 0
        msg["res_id"] = self.group
        msg["attrs"] = attrs
        msg["header"]["type"] = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK
        msg["header"]["sequence_number"] = self._seq
        msg.encode()
        self.sock.send(bytes(msg.data))
        # The ack (an NLMSG_ERROR with error 0) or the error itself.
        while True:
            data = self.sock.recv(65536)
            for mtype, _flags, seq, body in split_messages(data):
                if mtype == NLMSG_ERROR and seq == self._seq:
                    code = -struct.unpack("=i", body[:4])[0]
                    if code and check:
                        raise DataplaneError(["nfnetlink_log", "config", str(self.group)], code,
                                             f"NFLOG group {self.group}: {os.strerror(code)}")
                    return

    # ------------------------------------------------------------ reading

    def _overrun(self) -> None:
        self.overruns += 1  # the lost messages show as a sequence gap on the next one

    def _decode(self, data: bytes) -> Iterator[LoggedPacket]:
        packet_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET
        for mtype, _flags, _seq, _body, offset, length in split_messages(data, with_offsets=True):
            if mtype != packet_type:
                continue
            msg = nfulnl_msg(data, offset=offset, length=length)
            msg.decode()
            pkt = decode_packet(msg)
            seq = msg.get_attr("NFULA_SEQ")
            if seq is not None:
                if self._next_seq is not None and seq != self._next_seq:
                    self.lost += (seq - self._next_seq) % (1 << 32)
                self._next_seq = (seq + 1) % (1 << 32)
            if pkt is not None:
                self.received += 1
                yield pkt

