"""The conntrack DESTROY reader against the real kernel: a real TCP connection, its real counters.

Two scratch network namespaces joined by a veth pair (A 198.18.252.1, B .2). In A, a
tiny nft table makes conntrack track A's traffic (a `ct state` rule, as the agent's
program has). A TCP client in A sends a known number of bytes to a server in B, which
answers with a known number; the connection's entry is then deleted with `conntrack -D`
(as TIME_WAIT would otherwise keep it for two minutes), and the reader, opened in A
before the connection (it turns accounting on), sees its DESTROY with the original
5-tuple and counts of at least the payload in each direction. Namespaces are uniquely
named and deleted in the fixture's teardown; every wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from typing import Iterator

import pytest

from stockade.dataplane.conntrack import ConntrackEnd, ConntrackReader

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "nft", "conntrack")),
                       reason="needs root, ip, nft and conntrack"),
]

A4, B4 = "198.18.252.1", "198.18.252.2"
PORT = 9000
PAYLOAD, REPLY = 100_000, 30_000

SERVER = f"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("{B4}", {PORT})); s.listen(1)
print("ready", flush=True)
s.settimeout(20)
c, _ = s.accept(); c.settimeout(20)
n = 0
while True:
    b = c.recv(65536)
    if not b:
        break
    n += len(b)
c.sendall(b"r" * {REPLY}); c.close()
print(n, flush=True)
"""

CLIENT = f"""
import socket
c = socket.create_connection(("{B4}", {PORT}), timeout=20)
print(c.getsockname()[1], flush=True)
c.sendall(b"p" * {PAYLOAD}); c.shutdown(socket.SHUT_WR)
n = 0
while True:
    b = c.recv(65536)
    if not b:
        break
    n += len(b)
c.close()
print(n, flush=True)
"""

TRACK = """
table inet cttest {
  chain out { type filter hook output priority 0; policy accept; ct state established,related accept; }
}
"""


def sh(*cmd: str, stdin: str | None = None) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, input=stdin, timeout=30)
    assert res.returncode == 0, f"{' '.join(cmd)}: {res.stderr}"
    return res.stdout


class Pair:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.a, self.b = f"stk-ct-a-{tag}", f"stk-ct-b-{tag}"

    def up(self) -> None:
        for ns in (self.a, self.b):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", self.b)
        for ns, dev, v4 in ((self.a, "va", A4), (self.b, "vb", B4)):
            sh("ip", "-n", ns, "addr", "add", f"{v4}/30", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "netns", "exec", self.a, "nft", "-f", "-", stdin=TRACK)

    def down(self) -> None:
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def pair() -> Iterator[Pair]:
    p = Pair()
    try:
        p.up()
        yield p
    finally:
        p.down()


@pytest.fixture
def reader(pair: Pair) -> Iterator[ConntrackReader]:
    r = ConntrackReader(netns=pair.a)
    try:
        yield r.open()
    finally:
        r.close()


def connect(pair: Pair) -> tuple[int, int, int]:
    """One TCP connection A → B carrying PAYLOAD bytes and REPLY back: (client port, bytes B got, bytes A got)."""
    server = subprocess.Popen(["ip", "netns", "exec", pair.b, sys.executable, "-c", SERVER],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "ready", server.stderr.read() if server.stderr else ""
        out = sh("ip", "netns", "exec", pair.a, sys.executable, "-c", CLIENT).split()
        got, _ = server.communicate(timeout=20)
        return int(out[0]), int(got.strip()), int(out[1])
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(5)


def wait_for(reader: ConntrackReader, match, within: float = 5.0) -> list[ConntrackEnd]:
    seen: list[ConntrackEnd] = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and not any(match(e) for e in seen):
        seen += reader.read(0.1)
    return seen


def test_destroy_event_names_the_original_tuple_and_counts_both_directions(pair: Pair,
                                                                          reader: ConntrackReader) -> None:
    assert reader.acct is True
    sport, server_got, client_got = connect(pair)
    assert (server_got, client_got) == (PAYLOAD, REPLY)
    assert reader.read(0.2) == []   # still in TIME_WAIT: no DESTROY yet
    sh("ip", "netns", "exec", pair.a, "conntrack", "-D", "-p", "tcp", "--orig-src", A4, "--orig-dst", B4,
       "--dport", str(PORT))

    def ours(e: ConntrackEnd) -> bool:
        return (e.protocol, e.src, e.sport, e.dst, e.dport) == ("tcp", A4, sport, B4, PORT)

    seen = wait_for(reader, ours)
    ends = [e for e in seen if ours(e)]
    assert len(ends) == 1, seen
    end = ends[0]
    assert end.family == 4 and end.icmp_type is None
    assert end.bytes is not None and end.bytes >= PAYLOAD
    assert end.reply_bytes is not None and end.reply_bytes >= REPLY
    assert end.packets and end.packets >= 3 and end.reply_packets and end.reply_packets >= 2
    assert reader.lost == 0 and reader.received >= 1


def test_the_reader_sees_only_its_own_namespace(pair: Pair, reader: ConntrackReader) -> None:
    # Traffic tracked in B (not in A) must not show up in A's reader.
    sh("ip", "netns", "exec", pair.b, "nft", "-f", "-", stdin=TRACK)
    sh("ip", "netns", "exec", pair.b, "ping", "-c", "1", "-W", "2", A4)
    sh("ip", "netns", "exec", pair.b, "conntrack", "-D", "-p", "icmp")
    assert wait_for(reader, lambda e: True, within=1.0) == []
