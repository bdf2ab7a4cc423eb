"""Agent reports: newest per host, in memory, saved behind in a file of their own."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from stockade.controller.store import open_sqlite
from stockade.controller.store.agent_reports import AgentRecord, AgentReports

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def test_agent_reports_are_kept_per_host(tmp_path: Path) -> None:
    backend = open_sqlite(tmp_path / "s.db")
    backend.reports.put("hv1", {"revision": 1}, T0)
    backend.reports.put("hv1", {"revision": 2}, T0)
    [record] = backend.reports.all()
    assert (record.host, record.report, record.last_seen) == ("hv1", {"revision": 2}, T0)
    assert backend.state.revision() == 0  # reports are not revisions
    backend.close()


def test_agent_reports_are_saved_behind_and_survive_a_restart(tmp_path: Path) -> None:
    backend = open_sqlite(tmp_path / "s.db")
    backend.reports.put("hv1", {"revision": 3}, T0)
    backend.reports.put("hv2", {"revision": 4}, T0)
    backend.close()  # saves what was not written yet
    reopened = open_sqlite(tmp_path / "s.db")
    assert [(r.host, r.report) for r in reopened.reports.all()] == [("hv1", {"revision": 3}),
                                                                    ("hv2", {"revision": 4})]
    reopened.close()


def test_a_burst_of_reports_is_one_save_and_a_failed_save_is_retried() -> None:
    saves: list[list[str]] = []
    fail = [True]

    def save(batch: list[AgentRecord]) -> None:
        if fail[0]:
            fail[0] = False
            raise OSError("disk full")
        saves.append([r.host for r in batch])

    reports = AgentReports([], save, flush_delay=1.0)
    with pytest.raises(OSError):  # close() below must not be the first save: fail one now
        reports.put(AgentRecord("hv0", {"revision": 1}, T0))
        reports.flush()
    for i in range(1, 21):
        reports.put(AgentRecord(f"hv{i}", {"revision": 1}, T0))
    assert len(reports.all()) == 21  # readers see every report at once
    deadline = time.monotonic() + 10
    while not saves and time.monotonic() < deadline:
        time.sleep(0.05)
    reports.close()
    assert saves[0] == sorted(f"hv{i}" for i in range(21))  # one batch, with the failed one in it
    assert sum(len(batch) for batch in saves) == 21
