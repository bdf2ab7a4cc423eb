"""What `stockade probe` asks of a lab VM, over its control channel, from any process.

    with GuestClient.open(run_dir, "web-1") as guest:      # a process other than the VM's starter
        guest.connect("198.18.2.20", "tcp", 8080)           # -> ProbeResult
        with guest.serving("udp", 53): ...

`RunningVm` (qemu.py) is a GuestClient too, for the process that started the VM; that process
calls `release_control()` first when another one is to probe, because QEMU's socket serves one
client at a time.

Verdicts are the namespace probe's (`stockade.lab.probe`): the guest's probe_net maps errno and
ICMP errors as probe_client.py and probe.py's ping do. Every argument is checked here before it
becomes a word of a request.
"""

from __future__ import annotations

import ipaddress
import time
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Iterator

from stockade.errors import LabError
from stockade.lab.probe import ProbeResult, Verdict
from stockade.lab.vm.control import ControlChannel

_VERDICTS: tuple[Verdict, ...] = ("allowed", "denied", "rejected", "unreachable", "error")


class GuestClient:
    def __init__(self, control: ControlChannel, name: str) -> None:
        self._control = control
        self.name = name

    @classmethod
    def open(cls, run_dir: Path, name: str, timeout: float = 10.0) -> "GuestClient":
        """Connect to the control socket of the VM whose run directory is `run_dir`, and wait
        until its agent answers (it restarts, and says "ready" again, when a client leaves)."""
        deadline = time.monotonic() + timeout
        control = ControlChannel.connect(run_dir / "control.sock", f"VM {name}", timeout)
        while True:
            try:
                control.request("hello", timeout=max(0.5, min(2.0, deadline - time.monotonic())))
                return cls(control, name)
            except LabError:
                if time.monotonic() >= deadline:
                    control.close()
                    raise

    def close(self) -> None:
        self._control.close()

    def __enter__(self) -> "GuestClient":
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def serve(self, protocol: str, port: int) -> None:
        """Start a TCP (accept-and-reply) or UDP (echo) server on `port` in the guest, IPv4 and
        IPv6; returns once it listens. Nothing to start for ICMP (the guest kernel answers)."""
        proto = _protocol(protocol)
        if proto != "icmp":
            self._control.request("serve", proto, str(_port(port)))

    def unserve(self, protocol: str, port: int) -> None:
        proto = _protocol(protocol)
        if proto != "icmp":
            self._control.request("unserve", proto, str(_port(port)))

    @contextmanager
    def serving(self, protocol: str, port: int) -> Iterator[None]:
        self.serve(protocol, port)
        try:
            yield
        finally:
            self.unserve(protocol, port)

    def connect(self, dst_ip: str, protocol: str, port: int | None = None, timeout: float = 1.0,
                src_ip: str | None = None) -> ProbeResult:
        """One probe from the guest, with the verdicts of `stockade.lab.probe.probe`. `src_ip`
        is bound even if the guest does not have it (a spoofed source, for TCP and UDP)."""
        proto = _protocol(protocol)
        for ip in (dst_ip, src_ip):
            if ip is not None:
                _ip(ip)
        if proto != "icmp":
            _port(port)
        ms = max(100, min(60000, int(timeout * 1000)))
        words = ["connect", proto, dst_ip, str(port or 0), str(ms)] + ([src_ip] if src_ip else [])
        start = time.monotonic()
        result = self._control.request(*words, timeout=timeout + 5.0)
        elapsed = round(time.monotonic() - start, 4)
        verdict, _, detail = result.partition(" ")
        for known in _VERDICTS:
            if verdict == known:
                return ProbeResult(known, detail, elapsed)
        return ProbeResult("error", f"guest probe said {result!r}", elapsed)

    def add_address(self, ip: str) -> None:
        """An extra /32 or /128 on the guest's eth0 (to send ICMP from a spoofed source)."""
        self._control.request("addr", "add", _ip(ip))

    def remove_address(self, ip: str) -> None:
        self._control.request("addr", "del", _ip(ip))

    def addresses(self) -> list[str]:
        """The guest's global addresses on eth0, as `ip/len`."""
        return self._control.request("addrs").split()


def _ip(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        raise LabError(f"{ip!r} is not an IP address") from None


def _protocol(protocol: str) -> str:
    proto = protocol.lower()
    if proto == "icmpv6":
        proto = "icmp"
    if proto not in ("tcp", "udp", "icmp"):
        raise LabError(f"probe protocol must be tcp, udp or icmp, not {protocol!r}")
    return proto


def _port(port: int | None) -> int:
    if port is None or not 1 <= port <= 65535:
        raise LabError(f"a port in 1-65535 is needed, not {port}")
    return port
