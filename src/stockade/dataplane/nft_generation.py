"""The nftables ruleset generation of the calling thread's network namespace.

The kernel counts committed nftables transactions per netns (to any table, by
anyone) and answers NFT_MSG_GETGEN with that count. Reading it is one small
netlink round trip, where listing our table and hashing it costs a dump of the
whole table: the agent's drift check (every second) and every reconcile asked
for that listing before and after its transaction (docs/performance.md). While
the generation is the one we saw right after our own transaction, nothing can
have changed our table, and no listing is needed.

The message is tiny (a 4-byte nfgenmsg and one u32 attribute), so it is packed
here with `struct`, next to the nfnetlink constants it uses.
"""

from __future__ import annotations

import os
import socket
import struct

from stockade.dataplane.close_later import close_later
from stockade.dataplane.netlink_events import NLMSG_HDR, split_messages

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWGEN = 15
NFT_MSG_GETGEN = 16
NFTA_GEN_ID = 1
NLM_F_REQUEST = 0x1
NLMSG_ERROR = 0x2
NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (big endian, unused here)
NLA_HDR = struct.Struct("=HH")
_TIMEOUT = 2.0


def ruleset_generation() -> int:
    """The current generation; OSError when the kernel does not answer as expected."""
    body = NFGENMSG.pack(socket.AF_UNSPEC, 0, 0)
    request = NLMSG_HDR.pack(NLMSG_HDR.size + len(body), (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN,
                             NLM_F_REQUEST, 1, 0) + body
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        sock.settimeout(_TIMEOUT)
        sock.bind((0, 0))
        sock.send(request)
        data = sock.recv(4096)
    finally:
        # Closing it waits for the netns's pending nf_tables destroy work (dataplane.close_later):
        # right after our own transaction that is an RCU grace period, so not on this path.
        close_later(sock.close)
    for mtype, _flags, _seq, payload in split_messages(data):
        if mtype == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", payload)
            raise OSError(-code, f"NFT_MSG_GETGEN: {os.strerror(-code)}")
        if mtype == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN:
            offset = NFGENMSG.size
            while offset + NLA_HDR.size <= len(payload):
                length, kind = NLA_HDR.unpack_from(payload, offset)
                if length < NLA_HDR.size:
                    break
                if kind & 0x3FFF == NFTA_GEN_ID:
                    return int(struct.unpack_from("!I", payload, offset + NLA_HDR.size)[0])
                offset += (length + 3) & ~3
    raise OSError("NFT_MSG_GETGEN: no generation in the kernel's answer")
