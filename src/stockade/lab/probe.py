"""Real packets between lab netns: start a server in one, a client in another, report the verdict.

    with serve(dst_netns, "tcp", 8080):                    # a server for several probes
        probe(src_netns, None, ip, "tcp", 8080, reuse_server=True)
    probe(src_netns, dst_netns, ip, "udp", 53)              # starts and stops its own server
    probe(src_netns, None, ip, "icmp", None)                # ping; the kernel answers

Verdicts: allowed, denied (no answer in time), rejected (actively refused: TCP
RST, ICMP port unreachable, for ping also ICMP administratively prohibited),
unreachable (ICMP host/net unreachable; for TCP and UDP the kernel reports
"prohibited" with the same errno, so it lands here too), error (the probe
itself failed, e.g. a bad source address).

Servers are separate processes (`python -m stockade.lab.probe_server`, or the
kernel itself for ping) entered into their netns with nsenter. A TCP or UDP
client is one socket exchange (`probe_client`), run in a throwaway thread that
enters the source netns (`netns.run_in`): a process per probe cost ~40 ms of CPU
to start Python, which was most of what the truth-table tests spent. Either
way, this module never changes the caller's namespace. Invariants: every wait
is bounded, and every process started here is killed and reaped before the
function or context manager that started it returns, whatever happens.
"""

from __future__ import annotations

import ipaddress
import math
import selectors
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Literal

from stockade.errors import LabError, ValidationError
from stockade.lab import naming
from stockade.lab import netns as ns
from stockade.lab import probe_client

Verdict = Literal["allowed", "denied", "rejected", "unreachable", "error"]
Protocol = Literal["tcp", "udp", "icmp"]
SERVER_READY_TIMEOUT = 5.0
_GRACE = 2.0  # process start-up and exit, on top of the network timeout


@dataclass(frozen=True)
class ProbeResult:
    verdict: Verdict
    detail: str
    elapsed: float  # seconds the exchange took, without process start-up


@dataclass(frozen=True)
class ProbeServer:
    netns: str
    protocol: str
    port: int
    pid: int


def check_workload_netns(reported: str, prefix: str, host: str, namespace: str, name: str) -> str:
    """`reported` if it is the netns this lab (`prefix`) gives that workload, else ValidationError.

    A workload's `status.netns` comes from its host's agent. Probing enters it as root
    (nsenter), so an agent — or anyone holding its token — that reported `/proc/1/ns/net`, a
    path with `..`, or another lab's or another workload's namespace would have `probe` run its
    client or server there: the probe must enter only this lab's namespace for that workload.
    """
    expected = naming.workload_netns(prefix, host, namespace, name)
    if reported != expected:
        raise ValidationError.single(f"Workload {namespace}/{name}", "status.netns",
                                     f"{reported!r} is not this lab's network namespace for the workload "
                                     f"(expected {expected!r} for lab prefix {prefix!r}); not entering it")
    return reported


def _nsenter(netns: str, argv: list[str]) -> list[str]:
    # A name, never a path: /run/netns/<name> joined with "/proc/1/ns/net" would be that path.
    if not netns or "/" in netns or netns.startswith("."):
        raise LabError(f"{netns!r} is not a network namespace name")
    if not ns.exists(netns):
        raise LabError(f"network namespace {netns} does not exist")
    return ["nsenter", f"--net={ns.netns_path(netns)}", *argv]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5.0)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _normalise(protocol: str) -> str:
    proto = protocol.lower()
    if proto not in ("tcp", "udp", "icmp", "icmpv6"):
        raise LabError(f"probe protocol must be tcp, udp or icmp, not {protocol!r}")
    return "icmp" if proto == "icmpv6" else proto


@contextmanager
def serve(netns: str, protocol: str, port: int, lifetime: float = 300.0) -> Iterator[ProbeServer]:
    """Run a TCP (accept-and-reply) or UDP (echo) server on `port`, IPv4 and IPv6, in `netns`.

    Yields once the server listens. For ICMP there is nothing to run (the
    kernel answers echo requests) and this yields a server with pid 0.
    """
    proto = _normalise(protocol)
    if proto == "icmp":
        yield ProbeServer(netns, proto, 0, 0)
        return
    argv = _nsenter(netns, [sys.executable, "-m", "stockade.lab.probe_server",
                            "--protocol", proto, "--port", str(port), "--lifetime", str(lifetime)])
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_ready(proc, f"{proto}/{port} in {netns}")
        yield ProbeServer(netns, proto, port, proc.pid)
    finally:
        _stop(proc)


def _wait_ready(proc: subprocess.Popen[bytes], what: str) -> None:
    assert proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + SERVER_READY_TIMEOUT
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if sel.select(timeout=left):
                line = proc.stdout.readline()
                if line.startswith(b"READY"):
                    return
                break  # EOF: the server exited
    proc.poll()
    err = b""
    if proc.returncode is not None:
        err = proc.stderr.read()
    raise LabError(f"probe server {what} did not start: "
                   + (err.decode(errors="replace").strip() or "no READY line within "
                      f"{SERVER_READY_TIMEOUT:.0f} s"))


def probe(src_netns: str, dst_netns: str | None, dst_ip: str, protocol: str, port: int | None,
          timeout: float = 1.0, src_ip: str | None = None, reuse_server: bool = False) -> ProbeResult:
    """Send one real probe from `src_netns` to `dst_ip` and report what happened.

    For TCP and UDP, a server is started in `dst_netns` for the probe unless
    `reuse_server` (one is running already, or the test wants none: then a
    closed port answers "rejected"). `src_ip` binds the client to that source
    address, even one the netns does not have (for ICMP, ping needs it assigned).
    """
    proto = _normalise(protocol)
    try:
        ipaddress.ip_address(dst_ip)
    except ValueError:
        raise LabError(f"{dst_ip!r} is not an IP address") from None
    if proto == "icmp":
        return _ping(src_netns, dst_ip, timeout, src_ip)
    if port is None or not 1 <= port <= 65535:
        raise LabError(f"a {proto} probe needs a port in 1-65535, not {port}")
    if reuse_server:
        return _client(src_netns, dst_ip, proto, port, timeout, src_ip)
    if dst_netns is None:
        raise LabError("dst_netns is needed to start the probe server (or pass reuse_server=True)")
    with serve(dst_netns, proto, port):
        return _client(src_netns, dst_ip, proto, port, timeout, src_ip)


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(argv)} did not finish within {timeout:.1f} s") from None
    finally:
        _stop(proc)


def _client(src_netns: str, dst_ip: str, proto: str, port: int, timeout: float,
            src_ip: str | None) -> ProbeResult:
    if not ns.exists(src_netns):
        raise LabError(f"network namespace {src_netns} does not exist")
    exchange = probe_client.probe_tcp if proto == "tcp" else probe_client.probe_udp

    def inside() -> tuple[str, str]:
        try:
            return exchange(dst_ip, port, timeout, src_ip)
        except OSError as e:  # e.g. binding the source address failed
            return "error", f"{type(e).__name__}: {e}"

    start = time.monotonic()
    verdict, detail = ns.run_in(src_netns, inside)
    return ProbeResult(verdict, detail, round(time.monotonic() - start, 4))  # type: ignore[arg-type]


# What iputils ping prints for the ICMP errors it receives, most specific first.
_PING_ERRORS: tuple[tuple[str, Verdict], ...] = (
    ("port unreachable", "rejected"),
    ("packet filtered", "rejected"),          # IPv4 code 13, communication administratively prohibited
    ("administratively prohibited", "rejected"),
    ("prohibited", "rejected"),
    ("unreachable", "unreachable"),
    ("no route", "unreachable"),
)


def _ping(src_netns: str, dst_ip: str, timeout: float, src_ip: str | None) -> ProbeResult:
    argv = ["ping", "-n", "-c1", "-W", str(max(timeout, 0.2))]
    if ipaddress.ip_address(dst_ip).version == 6:
        argv.insert(1, "-6")
    if src_ip:
        argv += ["-I", src_ip]
    start = time.monotonic()
    done = _run(_nsenter(src_netns, [*argv, dst_ip]), math.ceil(timeout) + _GRACE)
    elapsed = round(time.monotonic() - start, 4)
    text = (done.stdout + done.stderr).decode(errors="replace")
    if done.returncode == 0:
        return ProbeResult("allowed", "echo reply received", elapsed)
    lowered = text.lower()
    for needle, verdict in _PING_ERRORS:
        if needle in lowered:
            line = next((ln for ln in text.splitlines() if needle in ln.lower()), needle)
            return ProbeResult(verdict, f"ICMP error: {line.strip()}", elapsed)
    if done.returncode == 1:
        return ProbeResult("denied", "no echo reply before the timeout", elapsed)
    return ProbeResult("error", f"ping exited {done.returncode}: {text.strip()[-300:]}", elapsed)
