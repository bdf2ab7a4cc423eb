"""A tiny probe server: TCP accept-and-reply, or UDP echo, on one port, IPv4 and IPv6 at once.

    python -m stockade.lab.probe_server --protocol tcp --port 8080 [--lifetime 300]

Runs inside a workload's netns (started through nsenter by `probe.serve`).
Prints exactly one line, `READY <protocol> <port>`, on stdout once it listens,
and nothing else there (the parent stops reading after that line). One
dual-stack socket (`::`, IPV6_V6ONLY off) serves both families. It exits after
`--lifetime` seconds even if nobody stops it, so a crashed test cannot leave
it running for long. Standard library only: starts in milliseconds.
"""

from __future__ import annotations

import argparse
import select
import socket
import sys
import time

REPLY = b"stockade-probe ok\n"


def _socket(kind: int, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    return sock


def serve_tcp(port: int, deadline: float) -> None:
    listener = _socket(socket.SOCK_STREAM, port)
    listener.listen(64)
    print(f"READY tcp {port}", flush=True)
    while time.monotonic() < deadline:
        ready, _, _ = select.select([listener], [], [], 0.5)
        if not ready:
            continue
        try:
            conn, _ = listener.accept()
        except OSError:
            continue
        with conn:
            conn.settimeout(1.0)
            try:
                conn.sendall(REPLY)
            except OSError:
                pass  # the client gave up; the next one may not


def serve_udp(port: int, deadline: float) -> None:
    sock = _socket(socket.SOCK_DGRAM, port)
    print(f"READY udp {port}", flush=True)
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], 0.5)
        if not ready:
            continue
        try:
            data, peer = sock.recvfrom(2048)
            sock.sendto(data, peer)
        except OSError:
            continue  # e.g. an ICMP error for an earlier reply


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stockade.lab.probe_server")
    parser.add_argument("--protocol", choices=("tcp", "udp"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--lifetime", type=float, default=300.0, help="seconds before exiting on its own")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.lifetime
    try:
        if args.protocol == "tcp":
            serve_tcp(args.port, deadline)
        else:
            serve_udp(args.port, deadline)
    except OSError as e:
        print(f"probe server: cannot serve {args.protocol}/{args.port}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
