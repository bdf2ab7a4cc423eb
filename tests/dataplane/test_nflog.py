"""The NFLOG reader against the real kernel: real packets, logged by rules we render.

Two scratch network namespaces joined by a veth pair (A 198.18.251.1 / 2001:db8:251::1,
B .2 / ::2). In A, an nft table rendered from the Ruleset IR logs what A sends on
its output hook to a fresh NFLOG group, the way the compiled program does: a
logging rule behind its rate-limited twin that counts into `flowlog_suppressed`.
Senders are Python sockets run inside A. Every namespace is uniquely named and
deleted in the fixture's teardown.
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

from stockade.dataplane.nflog import LoggedPacket, NflogReader
from stockade.dataplane.nft_driver import NftDriver, run_command
from stockade.nft import render
from stockade.nft.ir import (
    Accept,
    BaseHook,
    Chain,
    Cmp,
    Log,
    NamedCounter,
    RateLimit,
    Rule,
    Ruleset,
)

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ip"),
                       reason="needs root, nft and ip"),
]

A4, B4, A6, B6 = "198.18.251.1", "198.18.251.2", "2001:db8:251::1", "2001:db8:251::2"
RATE, BURST = 20, 10


def sh(*cmd: str) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)}: {res.stderr}"


class Pair:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.a, self.b = f"stk-nfl-a-{tag}", f"stk-nfl-b-{tag}"
        self.group = 1000 + int(tag[:3], 16)  # unique enough; groups are per netns anyway

    def up(self) -> None:
        for ns in (self.a, self.b):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", self.b)
        for ns, dev, v4, v6 in ((self.a, "va", A4, A6), (self.b, "vb", B4, B6)):
            sh("ip", "-n", ns, "addr", "add", f"{v4}/30", "dev", dev)
            sh("ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad")
            sh("ip", "-n", ns, "link", "set", dev, "up")

    def down(self) -> None:
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def driver(self) -> NftDriver:
        return NftDriver(table="nfltest",
                         runner=lambda cmd, stdin=None: run_command(["ip", "netns", "exec", self.a, *cmd], stdin))

    def send(self, code: str) -> None:
        res = subprocess.run(["ip", "netns", "exec", self.a, sys.executable, "-c", code],
                             capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stderr


@pytest.fixture
def pair() -> Iterator[Pair]:
    p = Pair()
    try:
        p.up()
        yield p
    finally:
        p.down()


def program(group: int) -> Ruleset:
    """Log what A sends to B on UDP 7000 (rate-limited) and on TCP 8000 (both families)."""
    logged = []
    for matches, ref in (((Cmp(("meta", "l4proto"), "udp"), Cmp(("th", "dport"), 7000)), "t/flood/udp"),
                         ((Cmp(("meta", "l4proto"), "tcp"), Cmp(("th", "dport"), 8000)), "t/web/tcp"),
                         ((Cmp(("meta", "l4proto"), "icmp"),), "t/ping/v4")):
        logged += [Rule(matches, Accept(), ref, True, limit="flowlog_limit", count_into="flowlog_suppressed"),
                   Rule(matches, Accept(), ref, True, Log(f"stk allow {ref} ", group))]
    chain = Chain("out", tuple(logged), BaseHook("output", 0))
    return Ruleset("nfltest", chains=(chain,), limits=(RateLimit("flowlog_limit", RATE, "second", BURST, True),),
                   counters=(NamedCounter("flowlog_suppressed"),))


def collect(reader: NflogReader, want: int, within: float) -> list[LoggedPacket]:
    out: list[LoggedPacket] = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and len(out) < want:
        out += reader.read(0.1)
    # and a little longer, to see that no more arrive than expected
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        out += reader.read(0.05)
    return out


def test_reader_decodes_prefix_addresses_ports_protocol_and_interfaces(pair: Pair) -> None:
    driver = pair.driver()
    driver.apply(render.full_replace(program(pair.group)))
    with NflogReader(pair.group, netns=pair.a) as reader:
        pair.send(f"""
import socket
for fam, dst, src in ((socket.AF_INET, "{B4}", "{A4}"), (socket.AF_INET6, "{B6}", "{A6}")):
    s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(1); s.bind((src, 41000))
    try: s.connect((dst, 8000))
    except OSError: pass
    s.close()
""")
        pair.send("import subprocess; subprocess.run(['ping', '-c1', '-W1', '198.18.251.2'])"
                  if shutil.which("ping") else
                  f"import socket; s=socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP);"
                  f"s.sendto(bytes([8,0,0xf7,0xff,0,0,0,0]), ('{B4}', 0))")
        got = collect(reader, 3, 5.0)
    tcp = sorted((p for p in got if p.protocol == "tcp"), key=lambda p: p.family)
    assert [(p.family, p.src, p.dst, p.sport, p.dport, p.prefix) for p in tcp[:2]] == [
        (4, A4, B4, 41000, 8000, "stk allow t/web/tcp "),
        (6, A6, B6, 41000, 8000, "stk allow t/web/tcp "),
    ]
    icmp = [p for p in got if p.protocol == "icmp"]
    assert icmp and icmp[0].icmp_type == 8 and icmp[0].sport is None and icmp[0].prefix == "stk allow t/ping/v4 "
    assert all(p.outdev is not None and p.outdev != 1 for p in tcp)  # left through the veth, not lo (1)
    assert reader.lost == 0


def test_a_flood_is_bounded_by_the_kernel_rate_limit_and_every_packet_is_accounted(pair: Pair) -> None:
    driver = pair.driver()
    driver.apply(render.full_replace(program(pair.group)))
    flood = 2000
    with NflogReader(pair.group, netns=pair.a) as reader:
        started = time.monotonic()
        pair.send(f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range({flood}):
    s.sendto(b"x", ("{B4}", 7000))
""")
        sent_in = time.monotonic() - started
        got = [p for p in collect(reader, flood, 3.0) if p.dport == 7000]
        elapsed = time.monotonic() - started
    suppressed = driver.counter("flowlog_suppressed")
    assert suppressed is not None
    # Bounded: at most the burst plus the rate over the time it took (and a margin for timing).
    assert len(got) <= BURST + RATE * (sent_in + 1) + 5, (len(got), sent_in)
    assert len(got) >= 1
    # Honest: each packet took exactly one of the twins; what did not log was counted,
    # and what the kernel logged but could not deliver shows as a sequence gap.
    assert len(got) + reader.lost + suppressed == flood, (len(got), reader.lost, suppressed)
    assert suppressed >= flood - (BURST + RATE * (sent_in + 1) + 5)
    assert elapsed < 20


def test_a_small_socket_buffer_loses_records_but_counts_them(pair: Pair) -> None:
    rs = program(pair.group)
    # No rate limit that bites: the socket buffer is the only bound.
    rs = Ruleset(rs.table, chains=rs.chains, limits=(RateLimit("flowlog_limit", 1_000_000, "second", 1_000_000, True),),
                 counters=rs.counters)
    driver = pair.driver()
    driver.apply(render.full_replace(rs))
    flood = 3000
    with NflogReader(pair.group, rcvbuf=4096, netns=pair.a) as reader:
        pair.send(f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range({flood}):
    s.sendto(b"x", ("{B4}", 7000))
# one last packet after a pause, so the reader sees the final sequence gap
import time; time.sleep(0.3); s.sendto(b"x", ("{B4}", 7000))
""")
        got = [p for p in collect(reader, flood + 1, 3.0) if p.dport == 7000]
    assert driver.counter("flowlog_suppressed") == 0
    assert reader.lost > 0 and reader.overruns > 0
    assert len(got) + reader.lost == flood + 1, (len(got), reader.lost)


def test_binding_a_group_twice_is_refused(pair: Pair) -> None:
    from stockade.errors import DataplaneError

    with NflogReader(pair.group, netns=pair.a):
        with pytest.raises(DataplaneError):
            NflogReader(pair.group, netns=pair.a).open()
