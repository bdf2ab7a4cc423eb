"""What other controller replicas did, taken in: their commits wake this replica's watches, and
the agent reports they received show in this replica's status.

Several replicas serve one shared store (etcd) at once. A commit through replica A must end
the long-polls of agents watching on replica B at once, not when their timeout runs out; and
`apply --wait` asked of B must see the reports agents sent to A. A follower thread reads the
store's revision every `interval` (one small read) and publishes a newer one to the service's
notifier (the watch then reads the events from the store: the in-memory tail holds only
this replica's commits), and takes the stored agent reports every `reports_interval`.

Only for a shared backend (`Backend.shared`): a SQLite file has one controller. Never writes.
The thread survives any error and tries again at its next tick.
"""

from __future__ import annotations

import logging
import threading
import time

from stockade.controller.service import ControllerService
from stockade.controller.store import AgentReportRepository
from stockade.errors import StockadeError

log = logging.getLogger(__name__)


class ReplicaFollower:
    def __init__(self, service: ControllerService, reports: AgentReportRepository, interval: float = 0.1,
                 reports_interval: float = 0.5) -> None:
        self._service = service
        self._reports = reports
        self._interval = interval
        self._reports_interval = reports_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="replica-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        next_reports = 0.0
        failing = False
        while not self._stop.wait(self._interval):
            try:
                self._service.take_revision(self._service.revision())
                if time.monotonic() >= next_reports:
                    self._reports.refresh()
                    next_reports = time.monotonic() + self._reports_interval
                if failing:
                    log.info("the store answers again: following the other replicas")
                failing = False
            except (StockadeError, OSError) as e:  # the store is away: requests say so themselves
                if not failing:
                    log.warning("cannot follow the other replicas: %s", getattr(e, "message", e))
                failing = True
            except Exception:  # noqa: BLE001 - anything else (a client library's own error, a bad
                # record) must not end the thread: without it this replica would stop seeing the
                # others' commits and reports for good, and `apply --wait` through it would wait
                # for agents it can no longer see.
                if not failing:
                    log.exception("following the other replicas failed; trying again")
                failing = True
