"""The client half of a probe: one TCP connection or one UDP exchange, and the verdict it saw.

    probe_tcp("198.18.10.12", 8080, timeout=1.0, src_ip=None) -> ("allowed", "connected, got 'ok'")

Called by `probe.probe` in a thread that has entered the source workload's
netns, so the socket is that workload's.

How what the kernel reports becomes a verdict:
    TCP   reply read after connect → allowed;  no answer in time → denied;
          RST / ICMP port unreachable (ECONNREFUSED) → rejected;
          ICMP host/net unreachable or prohibited (EHOSTUNREACH, ENETUNREACH) → unreachable
    UDP   echo received → allowed;  nothing in time → denied;
          ICMP port unreachable (ECONNREFUSED on the connected socket) → rejected;
          other ICMP errors → unreachable
    any   a local drop (EPERM) → denied;  anything else → error
Standard library only; the whole exchange is bounded by the timeout.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import time

# Sending from a source address the netns does not have (a spoofing test) needs
# IP_TRANSPARENT: freebind only allows the bind, and the output route lookup would
# still refuse a foreign source (ENETUNREACH). Python does not export these constants.
IP_TRANSPARENT = 19
IPV6_TRANSPARENT = 75

_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH}


def _classify(e: OSError) -> tuple[str, str]:
    if isinstance(e, (TimeoutError, socket.timeout)):
        return "denied", "no answer before the timeout"
    if e.errno == errno.ECONNREFUSED:
        return "rejected", "connection refused (RST or ICMP port unreachable)"
    if e.errno == errno.ECONNRESET:
        return "rejected", "connection reset"
    if e.errno in _UNREACHABLE:
        return "unreachable", os.strerror(e.errno)
    if e.errno in (errno.EPERM, errno.EACCES):
        return "denied", f"dropped locally: {os.strerror(e.errno)}"
    return "error", f"{type(e).__name__}: {e}"


def _open(family: int, kind: int, src_ip: str | None) -> socket.socket:
    sock = socket.socket(family, kind)
    if src_ip:
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, IP_TRANSPARENT, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
        sock.bind((src_ip, 0))
    return sock


def probe_tcp(ip: str, port: int, timeout: float, src_ip: str | None) -> tuple[str, str]:
    family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
    deadline = time.monotonic() + timeout
    with _open(family, socket.SOCK_STREAM, src_ip) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((ip, port))
        except OSError as e:
            return _classify(e)
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(64)
        except OSError as e:
            verdict, detail = _classify(e)
            return verdict, f"connected, then {detail}"
        if not data:
            return "rejected", "connected, closed without a reply"
        return "allowed", f"connected, got {data.strip().decode(errors='replace')!r}"


def probe_udp(ip: str, port: int, timeout: float, src_ip: str | None) -> tuple[str, str]:
    family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
    nonce = os.urandom(8).hex().encode()
    deadline = time.monotonic() + timeout
    with _open(family, socket.SOCK_DGRAM, src_ip) as sock:
        try:
            # Connected, so that ICMP errors come back to us as errno.
            sock.connect((ip, port))
            sock.send(nonce)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return "denied", "no echo before the timeout"
                sock.settimeout(left)
                data = sock.recv(2048)
                if data == nonce:
                    return "allowed", "echo received"
        except OSError as e:
            return _classify(e)
