"""What every benchmark shares: the result record, statistics, commands in namespaces, cleanup.

Invariants: every network namespace a benchmark makes is named `<prefix>-...`
with a prefix unique to the run ('b' + 4 hex digits), and `remove_netns`
deletes exactly those; every subprocess runs with a timeout.
"""

from __future__ import annotations

import math
import os
import secrets
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from stockade.dataplane.nft_driver import NftDriver

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Figure:
    """One line of the results: a ratio of two measurements of the same run, and its target."""

    name: str
    title: str
    values: dict[str, Any]          # absolute numbers; keys carry their unit (`_s`, `_ms`, `_mib`, ...)
    ratio: float | None
    target: str                     # e.g. ">= 0.95", "< 1 s"
    met: bool
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def new_prefix() -> str:
    """A short, unique prefix for this run's namespaces, processes and tables."""
    return "b" + secrets.token_hex(2)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank: with few samples, p99 is the worst one."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[max(0, min(len(ordered), rank) - 1)]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def run(cmd: list[str], timeout: float = 60, check: bool = True, stdin: str | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {res.returncode}: {res.stderr.strip()[:2000]}")
    return res


def in_netns(netns: str, cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return run(["ip", "netns", "exec", netns, *cmd], **kw)


def netns_driver(netns: str, table: str = "stockade") -> NftDriver:
    """The project's own nft driver, running its `nft` inside `netns`."""
    def runner(cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", netns, *cmd], input=stdin, capture_output=True,
                              text=True, timeout=120, check=False)
    return NftDriver(table=table, runner=runner)


def list_netns(prefix: str) -> list[str]:
    res = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in res.stdout.splitlines() if line.startswith(prefix + "-")]


def remove_netns(prefix: str) -> list[str]:
    """Delete every namespace of this run (and so its interfaces); kill what still runs in them."""
    gone = []
    for ns in list_netns(prefix):
        pids = run(["ip", "netns", "pids", ns], check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass
        run(["ip", "netns", "del", ns], check=False)
        gone.append(ns)
    return gone


def stop(proc: subprocess.Popen[Any] | None, timeout: float = 5) -> None:
    """Terminate one process we started, then kill it if it does not go."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05, what: str = "") -> float:
    """Seconds until `predicate()` held; TimeoutError after `timeout`."""
    started = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what or predicate}")
        time.sleep(interval)


def cli_client(timeout: float = 60.0) -> Any:
    """A controller client resolved the way the CLI resolves it (flags aside: config file,
    environment, CA), through the client's own contexts (`stockade.client_config`)."""
    from stockade.client_config import load_config

    return load_config().client(timeout)


def stockade_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "stockade", *args], env=env, timeout=timeout)


def rss_mib(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MiB, from /proc."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", float("nan")), values.get("VmHWM", float("nan"))
