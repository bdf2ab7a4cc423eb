"""Await a condition with a deadline, instead of sleeping and hoping it holds by then.

Every test that needs something to happen elsewhere (a flow record reaching the controller, an
agent enforcing a revision, a process dying) polls for it here, and fails with a message that
says what it waited for and what it saw last, rather than with a StopIteration three lines on.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T | None], what: str, timeout: float = 10.0, interval: float = 0.05,
               describe: Callable[[], object] | None = None) -> T:
    """Call `check` until it returns something truthy, and return that. After `timeout` seconds,
    fail naming `what` was awaited and, when given, what `describe()` shows of the state."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            seen = f"; last seen: {describe()!r}" if describe is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{seen}")
        time.sleep(interval)


def process_gone(pid: int) -> bool:
    """Has process `pid` ended (gone, or a zombie that its parent has not reaped yet)?"""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return any(line.startswith("State:") and "Z" in line.split()[1] for line in status.splitlines())
