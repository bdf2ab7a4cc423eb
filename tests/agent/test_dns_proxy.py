"""The agent's DNS proxy with a real resolver (dnsmasq) in a network namespace (issue 18): what it
answers, what it learns, and what it never learns."""

from __future__ import annotations

import secrets
import socket
import subprocess
import threading
from typing import Iterator

import dns.message
import dns.query
import dns.rdatatype
import dns.rrset
import pytest

from stockade.agent.dns_proxy import DnsProxy
from stockade.agent.fqdn_learning import Answer
from stockade.lab import netns
from tests.waiting import process_gone, wait_until

pytestmark = pytest.mark.kernel

PROXY, RESOLVER, FORGER = "198.18.200.1", "198.18.200.53", "198.18.200.54"
PORT = 1053


@pytest.fixture(scope="module")
def ns() -> Iterator[str]:
    name = f"dnsp-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    proc = None
    try:
        for ip in (PROXY, RESOLVER, FORGER):
            subprocess.run(["ip", "-n", name, "addr", "add", f"{ip}/32", "dev", "lo"], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        proc = subprocess.Popen(["ip", "netns", "exec", name, "dnsmasq", "--keep-in-foreground", "--no-resolv",
                                 "--no-hosts", "--bind-interfaces", f"--listen-address={RESOLVER}", "--conf-file=/dev/null",
                                 "--host-record=api.partner.example,198.19.1.7,2001:db8:e::1:7,30",
                                 "--cname=www.partner.example,api.partner.example,20", "--pid-file="],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(lambda: _asks(name, RESOLVER, 53, "api.partner.example") is not None, "dnsmasq to answer")
        yield name
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(5)
        subprocess.run(["ip", "netns", "del", name], check=False)


def _asks(name: str, server: str, port: int, qname: str, rdtype: str = "A", tcp: bool = False,
          timeout: float = 1.0) -> dns.message.Message | None:
    query = dns.message.make_query(qname, rdtype)
    ask = dns.query.tcp if tcp else dns.query.udp

    def go() -> dns.message.Message | None:
        try:
            return ask(query, server, port=port, timeout=timeout)
        except (OSError, dns.exception.Timeout):
            return None

    return netns.run_in(name, go)


@pytest.fixture
def proxy(ns: str) -> Iterator[tuple[DnsProxy, list[Answer]]]:
    learned: list[Answer] = []
    p = DnsProxy(PROXY, PORT, (RESOLVER,), learned.append, timeout=1.0)
    netns.run_in(ns, p.start)
    try:
        yield p, learned
    finally:
        p.close()


def test_an_answer_is_learned_then_passed_on_unchanged(ns: str, proxy: tuple[DnsProxy, list[Answer]]) -> None:
    p, learned = proxy
    direct = _asks(ns, RESOLVER, 53, "api.partner.example")
    via = _asks(ns, PROXY, PORT, "api.partner.example")
    assert via is not None and direct is not None and via.answer == direct.answer
    assert learned == [Answer(("api.partner.example",), (("198.19.1.7", 30),))]
    aaaa = _asks(ns, PROXY, PORT, "API.partner.example", "AAAA")
    assert aaaa is not None and learned[-1] == Answer(("API.partner.example",), (("2001:db8:e::1:7", 30),))


def test_a_cname_chain_is_followed_with_the_smallest_ttl(ns: str, proxy: tuple[DnsProxy, list[Answer]]) -> None:
    _, learned = proxy
    assert _asks(ns, PROXY, PORT, "www.partner.example") is not None
    assert learned == [Answer(("www.partner.example", "api.partner.example"), (("198.19.1.7", 20),))]


def test_dns_over_tcp_is_answered_and_learned(ns: str, proxy: tuple[DnsProxy, list[Answer]]) -> None:
    _, learned = proxy
    assert _asks(ns, PROXY, PORT, "api.partner.example", tcp=True) is not None
    assert learned == [Answer(("api.partner.example",), (("198.19.1.7", 30),))]


def test_a_name_that_does_not_exist_teaches_nothing(ns: str, proxy: tuple[DnsProxy, list[Answer]]) -> None:
    _, learned = proxy
    answer = _asks(ns, PROXY, PORT, "nothing.partner.example")
    assert answer is not None and answer.rcode() != 0
    assert all(a.addresses == () for a in learned)


def test_garbage_gets_no_answer_and_teaches_nothing(ns: str, proxy: tuple[DnsProxy, list[Answer]]) -> None:
    p, learned = proxy

    def send() -> bytes | None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(1.0)
            s.sendto(b"\x00\x01not dns at all", (PROXY, PORT))
            try:
                return s.recv(512)
            except TimeoutError:
                return None

    assert netns.run_in(ns, send) is None and learned == []


def test_an_answer_that_is_not_to_its_query_is_never_learned(ns: str) -> None:
    """A forger at the resolver's place answers first with another id, then with the right id but
    another question: the proxy passes neither on and learns nothing (the client times out)."""
    stop = threading.Event()
    sent: list[int] = []

    def forger() -> None:
        sock = netns.run_in(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        sock.bind((FORGER, 53))
        sock.settimeout(0.2)
        with sock:
            while not stop.is_set():
                try:
                    data, peer = sock.recvfrom(512)
                except TimeoutError:
                    continue
                query = dns.message.from_wire(data)
                for qid, name in ((query.id ^ 1, "api.partner.example"), (query.id, "evil.example")):
                    forged = dns.message.make_response(dns.message.make_query(name, "A"))
                    forged.id = qid
                    forged.answer.append(dns.rrset.from_text(name + ".", 300, "IN", "A", "198.19.6.6"))
                    sock.sendto(forged.to_wire(), peer)
                    sent.append(qid)

    thread = threading.Thread(target=forger, daemon=True)
    thread.start()
    learned: list[Answer] = []
    p = DnsProxy(PROXY, PORT + 1, (FORGER,), learned.append, timeout=0.5)
    netns.run_in(ns, p.start)
    try:
        assert _asks(ns, PROXY, PORT + 1, "api.partner.example", timeout=1.5) is None
        assert len(sent) == 2 and learned == [] and p.failures == 1
    finally:
        p.close()
        stop.set()
        thread.join(2)
