"""A connection's conntrack state carried to a fresh kernel (issue 16, item 4's mechanism).

Pure: the XML of `conntrack -L -o xml` read into values, and the `conntrack -I` command built
back from them. Kernel: a router namespace between a peer and a workload with a long-lived TCP
connection; the router "becomes another host" (its conntrack table flushed, its policy now
denying new connections to the workload). With the entries exported before and imported after,
the connection carries on; without, the same connection is cut (so the test can fail).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from typing import Iterator

import pytest

from stockade.dataplane.conntrack_transfer import (MIN_TIMEOUT, ConnectionState, export_connections,
                                                   import_argv, import_connections, parse_xml)
from stockade.dataplane.netlink_events import in_netns
from tests.dataplane.test_attach import namespaces, sh

XML = """<?xml version="1.0" encoding="utf-8"?><conntrack>
<flow><meta direction="original"><layer3 protonum="2" protoname="ipv4"><src>198.18.1.1</src><dst>198.18.1.2</dst></layer3><layer4 protonum="6" protoname="tcp"><sport>1234</sport><dport>80</dport></layer4></meta><meta direction="reply"><layer3 protonum="2" protoname="ipv4"><src>198.18.1.2</src><dst>198.18.1.1</dst></layer3><layer4 protonum="6" protoname="tcp"><sport>80</sport><dport>1234</dport></layer4></meta><meta direction="independent"><state>ESTABLISHED</state><timeout>99</timeout><mark>0</mark><use>1</use><id>1</id><assured/></meta></flow>
<flow><meta direction="original"><layer3 protonum="10" protoname="ipv6"><src>2001:db8::1</src><dst>2001:db8::2</dst></layer3><layer4 protonum="17" protoname="udp"><sport>53</sport><dport>5353</dport></layer4></meta><meta direction="reply"><layer3 protonum="10" protoname="ipv6"><src>2001:db8::2</src><dst>2001:db8::1</dst></layer3><layer4 protonum="17" protoname="udp"><sport>5353</sport><dport>53</dport></layer4></meta><meta direction="independent"><timeout>29</timeout><mark>7</mark><use>1</use><id>2</id><unreplied/></meta></flow>
<flow><meta direction="original"><layer3 protonum="2" protoname="ipv4"><src>198.18.1.1</src><dst>198.18.1.2</dst></layer3><layer4 protonum="1" protoname="icmp"><type>8</type></layer4></meta><meta direction="reply"><layer3 protonum="2" protoname="ipv4"><src>198.18.1.2</src><dst>198.18.1.1</dst></layer3><layer4 protonum="1" protoname="icmp"></layer4></meta><meta direction="independent"><timeout>29</timeout></meta></flow>
</conntrack>"""


def test_the_xml_listing_reads_into_values_and_back_into_commands() -> None:
    tcp, udp = parse_xml(XML)  # the ICMP entry is not carried
    assert (tcp.family, tcp.protocol, tcp.src, tcp.sport, tcp.reply_sport, tcp.state, tcp.assured, tcp.replied) == \
        ("ipv4", "tcp", "198.18.1.1", 1234, 80, "ESTABLISHED", True, True)
    assert (udp.family, udp.state, udp.replied, udp.mark) == ("ipv6", None, False, 7)
    assert ConnectionState.from_dict(tcp.to_dict()) == tcp
    assert import_argv(tcp) == ["conntrack", "-I", "-p", "tcp", "-s", "198.18.1.1", "-d", "198.18.1.2",
                                "-r", "198.18.1.2", "-q", "198.18.1.1", "-t", str(MIN_TIMEOUT), "--sport", "1234",
                                "--dport", "80", "--reply-port-src", "80", "--reply-port-dst", "1234",
                                "--state", "ESTABLISHED", "-u", "ASSURED,SEEN_REPLY"]
    assert import_argv(udp)[-2:] == ["-m", "7"]
    assert tcp.touches({"198.18.1.2"}) and not tcp.touches({"198.18.9.9"})


PEER, WORKLOAD = "198.18.79.2", "198.18.79.6"
ECHO = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(); c, _ = s.accept()
while (d := c.recv(100)):
    c.sendall(d)
"""
CLIENT = """
import socket, sys
s = socket.create_connection(("%s", 8080), timeout=2)
for line in sys.stdin:
    s.sendall(line.encode())
    try:
        print("echo", s.recv(100).decode().strip(), flush=True)
    except OSError:
        print("lost", line.strip(), flush=True)
""" % WORKLOAD


def policy(router: str, new_connections: str) -> None:
    rules = ("flush ruleset\ntable inet t {\n chain fw {\n  type filter hook forward priority 0; policy drop;\n"
             "  ct state established,related accept\n  ct state invalid counter drop\n"
             f"  tcp dport 8080 ip daddr {WORKLOAD} {new_connections}\n }}\n}}\n")
    res = subprocess.run(["ip", "netns", "exec", router, "nft", "-f", "-"], input=rules, capture_output=True,
                         text=True, timeout=10)
    assert res.returncode == 0, res.stderr


@contextlib.contextmanager
def routed_connection() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A router between a peer and a workload, and a long-lived TCP client on the peer."""
    tag = uuid.uuid4().hex[:6]
    r, p, w = f"ctt-r-{tag}", f"ctt-p-{tag}", f"ctt-w-{tag}"
    procs: list[subprocess.Popen[str]] = []
    with namespaces(r, p, w):
        try:
            for ns, iface, mine, theirs, net in ((p, "vp", PEER, "198.18.79.1", 30), (w, "vw", WORKLOAD, "198.18.79.5", 30)):
                sh("ip", "-n", r, "link", "add", iface, "type", "veth", "peer", "name", "eth0", "netns", ns)
                sh("ip", "-n", r, "addr", "add", f"{theirs}/{net}", "dev", iface)
                sh("ip", "-n", r, "link", "set", iface, "up")
                sh("ip", "-n", ns, "addr", "add", f"{mine}/{net}", "dev", "eth0")
                sh("ip", "-n", ns, "link", "set", "eth0", "up")
                sh("ip", "-n", ns, "route", "add", "default", "via", theirs)
            sh("ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            policy(r, "accept")
            procs.append(subprocess.Popen(["ip", "netns", "exec", w, sys.executable, "-c", ECHO], text=True))
            time.sleep(0.3)  # the server's listen(): nothing to await from outside but a connect
            client = subprocess.Popen(["ip", "netns", "exec", p, sys.executable, "-u", "-c", CLIENT], text=True,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            procs.append(client)
            yield r, client
        finally:
            for proc in procs:
                proc.kill()
                proc.wait(5)


def say(client: subprocess.Popen[str], word: str) -> str:
    assert client.stdin is not None and client.stdout is not None
    client.stdin.write(word + "\n")
    client.stdin.flush()
    return client.stdout.readline().strip()


@pytest.mark.kernel
@pytest.mark.parametrize("carried", [True, False], ids=["state carried", "state not carried"])
def test_an_established_connection_survives_a_new_kernel_only_with_its_state(carried: bool) -> None:
    with routed_connection() as (router, client):
        assert say(client, "before") == "echo before"
        state = in_netns(router, lambda: export_connections({WORKLOAD}))
        assert [(e.protocol, e.dst, e.dport, e.state) for e in state] == [("tcp", WORKLOAD, 8080, "ESTABLISHED")]
        # The workload arrives at a host that never saw the connection, whose policy admits no new one.
        sh("ip", "netns", "exec", router, "conntrack", "-F", check=False)
        policy(router, "drop")
        if carried:
            assert in_netns(router, lambda: import_connections(state)) == 1
            assert in_netns(router, lambda: import_connections(state)) == 1  # there already: fine
            assert say(client, "after") == "echo after"
        else:
            assert say(client, "after") == "lost after"
