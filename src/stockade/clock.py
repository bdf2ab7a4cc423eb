"""The one clock seam: what time it is, in UTC. Components that read the wall clock take a
`Clock` (default `utc_now`) so that tests can give them another."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def unix_time() -> float:
    """Now in seconds since the epoch: for components that count time as kernel timestamps do
    (the agent's flow recorder) and for the CLI's `--since`."""
    return utc_now().timestamp()


def utc_now_iso() -> str:
    """Now as ISO 8601 with milliseconds, the form reports and records carry."""
    return utc_now().isoformat(timespec="milliseconds")
