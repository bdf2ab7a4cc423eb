"""The replica follower keeps following whatever a read throws (a thread that died would leave its
replica blind to the other replicas' commits and agent reports for good)."""

from __future__ import annotations

import threading

from stockade.controller.replicas import ReplicaFollower
from stockade.errors import StockadeError


class Service:
    def __init__(self) -> None:
        self.taken: list[int] = []

    def revision(self) -> int:
        return 7

    def take_revision(self, revision: int) -> None:
        self.taken.append(revision)


class Reports:
    """Fails the first refreshes in every way a store or client library might, then works."""

    def __init__(self) -> None:
        self.failures: list[Exception] = [ValueError("bad JSON"), StockadeError("store away"), KeyError("host"),
                                          RuntimeError("a client library's own error")]
        self.refreshed = threading.Event()

    def refresh(self) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.refreshed.set()


def test_the_follower_survives_any_error_and_refreshes_again() -> None:
    service, reports = Service(), Reports()
    follower = ReplicaFollower(service, reports, interval=0.01, reports_interval=0.0)  # type: ignore[arg-type]
    follower.start()
    try:
        assert reports.refreshed.wait(5), f"the follower stopped; left: {reports.failures}"
        assert reports.failures == [] and service.taken and set(service.taken) == {7}
    finally:
        follower.stop()
    assert follower._thread is not None and not follower._thread.is_alive()
