"""The host's DNS proxy: workloads' queries to the trusted resolvers, answered only once learned (issue 18).

    proxy = DnsProxy("198.18.255.1", 1053, ("198.19.0.53",), on_answer=learn)
    proxy.start(); ...; proxy.close()

The program sends a workload's DNS for a trusted resolver here (compile.dns). For each query the
proxy asks the trusted resolvers itself (in order, the next on a timeout), over the transport the
workload used (UDP, or TCP with its 2-byte length prefix), checks that what came back answers
that very query (id, flags and question: dnspython's `is_response`), hands the answer to
`on_answer` — which puts the addresses in the kernel — and only then sends it on, unchanged.
So the first connection after a lookup already meets the learned address.

Invariants: nothing a workload sends is learned, only answers the proxy received from a trusted
resolver for a query it sent; a query that is not DNS, or that no resolver answers, gets no
answer (the workload's resolver times out, as with a dead server: fail closed). Every socket
wait is bounded; `close` stops both servers. The UDP socket is bound to the address the nat rule
sends to, so that its answers leave from it and conntrack turns them back into the resolver's.
"""

from __future__ import annotations

import logging
import selectors
import socket
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype

from stockade.agent.fqdn_learning import Answer

log = logging.getLogger(__name__)

UPSTREAM_TIMEOUT = 2.0   # seconds per resolver
MAX_CNAME_CHAIN = 16
MAX_UDP_ANSWER = 65_535
WORKERS = 16


class DnsProxy:
    def __init__(self, listen: str, port: int, resolvers: tuple[str, ...], on_answer: Callable[[Answer], None],
                 upstream_port: int = 53, timeout: float = UPSTREAM_TIMEOUT) -> None:
        self.listen, self.port, self.resolvers = listen, port, resolvers
        self.on_answer, self.upstream_port, self.timeout = on_answer, upstream_port, timeout
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="dns-proxy")
        self._threads: list[threading.Thread] = []
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self.queries = 0
        self.failures = 0  # queries no trusted resolver answered

    def start(self) -> None:
        """Bind both servers (OSError if the address or port cannot be had) and serve in threads."""
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            udp.bind((self.listen, self.port))
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((self.listen, self.port))
            tcp.listen(128)
        except OSError:
            udp.close()
            tcp.close()
            raise
        self._udp, self._tcp = udp, tcp
        for target, name in ((self._serve_udp, "dns-proxy-udp"), (self._serve_tcp, "dns-proxy-tcp")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)
        for sock in (self._udp, self._tcp):
            if sock is not None:
                sock.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ servers

    def _serve_udp(self) -> None:
        assert self._udp is not None
        udp = self._udp
        self._serve(udp, lambda: (self._answer_udp, *udp.recvfrom(MAX_UDP_ANSWER)))

    def _answer_udp(self, query: bytes, client: tuple[str, int]) -> None:
        answer = self.resolve(query, tcp=False)
        if answer is not None and self._udp is not None:
            try:
                self._udp.sendto(answer, client)
            except OSError as e:
                log.debug("DNS answer to %s not sent: %s", client[0], e)

    def _serve_tcp(self) -> None:
        assert self._tcp is not None
        tcp = self._tcp
        self._serve(tcp, lambda: (self._answer_tcp, tcp.accept()[0]))

    def _serve(self, sock: socket.socket, receive: Callable[[], tuple[Any, ...]]) -> None:
        """Until closed: wait for `sock`, take what came (`receive`: the handler and its arguments)
        and hand it to the worker pool."""
        with selectors.DefaultSelector() as sel:
            sel.register(sock, selectors.EVENT_READ)
            while not self._stop.is_set():
                if not sel.select(timeout=0.5):
                    continue
                try:
                    handler, *args = receive()
                except OSError:
                    continue
                self._pool.submit(handler, *args)

    def _answer_tcp(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(self.timeout * (len(self.resolvers) + 1))
            try:
                while not self._stop.is_set():  # a client may send several queries on one connection
                    query = _read_framed(conn)
                    if query is None:
                        return
                    answer = self.resolve(query, tcp=True)
                    if answer is None:
                        return
                    conn.sendall(struct.pack("!H", len(answer)) + answer)
            except OSError:
                return

    # ------------------------------------------------------------------ one query

    def resolve(self, query: bytes, tcp: bool) -> bytes | None:
        """Ask the trusted resolvers; learn from the first real answer; return it (None: no answer)."""
        self.queries += 1
        try:
            parsed = dns.message.from_wire(query)
        except dns.exception.DNSException:
            return None  # not DNS: nothing to ask, nothing to learn
        for resolver in self.resolvers:
            try:
                raw = _ask_tcp(resolver, self.upstream_port, query, self.timeout) if tcp else \
                    _ask_udp(resolver, self.upstream_port, query, self.timeout, parsed.id)
                response = dns.message.from_wire(raw)
            except (OSError, dns.exception.DNSException) as e:
                log.debug("resolver %s did not answer: %s", resolver, e)
                continue
            if not parsed.is_response(response):
                continue  # not the answer to this query: never learned, never passed on
            try:
                self.on_answer(read_answer(response))
            except Exception:  # noqa: BLE001 - a failed kernel write must not leave the workload hanging
                log.exception("DNS answer for %s not learned", parsed.question[0].name if parsed.question else "?")
            return raw
        self.failures += 1
        return None


def read_answer(response: dns.message.Message) -> Answer:
    """The CNAME chain from the question's name, and the A/AAAA addresses at its end, each with
    the smallest TTL along the chain (the mapping holds only while every link does)."""
    if response.rcode() != dns.rcode.NOERROR or not response.question:
        return Answer((), ())
    chain = [response.question[0].name]
    cnames = {rrset.name: (rrset[0].target, rrset.ttl) for rrset in response.answer
              if rrset.rdtype == dns.rdatatype.CNAME and len(rrset)}
    ttl = 2 ** 31
    while chain[-1] in cnames and len(chain) < MAX_CNAME_CHAIN:
        target, link_ttl = cnames[chain[-1]]
        if target in chain:
            break  # a loop: stop where it closes
        chain.append(target)
        ttl = min(ttl, link_ttl)
    addresses = sorted({(rd.address, min(ttl, rrset.ttl)) for rrset in response.answer
                        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) and rrset.name in chain
                        for rd in rrset})
    return Answer(tuple(n.to_text(omit_final_dot=True) for n in chain), tuple(addresses))


def _ask_udp(resolver: str, port: int, query: bytes, timeout: float, query_id: int) -> bytes:
    with socket.socket(socket.AF_INET6 if ":" in resolver else socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((resolver, port))  # connected: only the resolver's datagrams are read
        sock.send(query)
        while True:
            raw = sock.recv(MAX_UDP_ANSWER)
            if len(raw) >= 2 and struct.unpack("!H", raw[:2])[0] == query_id:
                return raw


def _ask_tcp(resolver: str, port: int, query: bytes, timeout: float) -> bytes:
    with socket.create_connection((resolver, port), timeout=timeout) as sock:
        sock.sendall(struct.pack("!H", len(query)) + query)
        raw = _read_framed(sock)
        if raw is None:
            raise OSError("the resolver closed the connection without an answer")
        return raw


def _read_framed(sock: socket.socket) -> bytes | None:
    """One length-prefixed DNS message from a TCP stream; None at a clean end."""
    head = _read_exactly(sock, 2)
    if head is None:
        return None
    body = _read_exactly(sock, struct.unpack("!H", head)[0])
    if body is None:
        raise OSError("the stream ended inside a DNS message")
    return body


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None if not data else data
        data += chunk
    return data
