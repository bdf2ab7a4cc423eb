"""The latest policy rollouts the controller measured, kept as they are for the dashboard.

A rollout is a revision committed → one host's agent reporting it enforces it in sync; the
controller measures each (host, revision) once (`ControllerService.report_agent`) and exports the
histogram `stockade_policy_rollout_seconds`. The dashboard's overview also shows the latest ones
one by one, and their quantiles without Prometheus. Bounded; thread-safe.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime

from stockade.clock import Clock, utc_now

ROLLOUTS_KEPT = 200


@dataclass(frozen=True)
class Rollout:
    host: str
    revision: int
    seconds: float
    at: datetime


class RecentRollouts:
    """The latest measured rollouts (revision committed → a host enforcing it in sync), bounded."""

    def __init__(self, keep: int = ROLLOUTS_KEPT, clock: Clock = utc_now) -> None:
        self._kept: deque[Rollout] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._clock = clock

    def add(self, host: str, revision: int, seconds: float) -> None:
        with self._lock:
            self._kept.append(Rollout(host, revision, seconds, self._clock()))

    def all(self) -> list[Rollout]:
        with self._lock:
            return list(self._kept)
