"""`--wait`: block until every agent enforces a revision a write made (apply, delete, rollback).

The controller says how far the fleet is: `GET /v1/status` serves `enforcedRevision`, the
lowest revision over the agents that are reporting (None when none is). A revision is
enforced when that has reached it and every reporting agent's kernel matches its program
(`inSync`: a host whose table drifted, or whose last apply failed, does not count). The
agents' list is read only for that and to name the laggards when time runs out.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from stockade.cli.commanding import out
from stockade.errors import TimeoutError_

POLL_INTERVAL = 0.05  # seconds between two status requests


def print_revision(client: Any, revision: int, wait: bool, timeout: float) -> None:
    """Print the revision a write made; with `wait`, block until every agent enforces it."""
    out.print(f"revision {revision}", style="dim")
    if wait:
        started = time.monotonic()
        wait_for_revision(client, revision, timeout)
        out.print(f"revision {revision} enforced by every agent "
                  f"({(time.monotonic() - started) * 1000:.0f} ms)", style="green")


def wait_for_revision(client: Any, revision: int, timeout: float,
                      sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Block until every reporting agent enforces `revision` in sync; TimeoutError_ names the laggards."""
    deadline = time.monotonic() + timeout
    while True:
        status = client.status()
        enforced = status.get("enforcedRevision")
        agents = [a for a in status.get("agents", []) if a.get("reporting", True)]
        if enforced is not None and enforced >= revision and all(a.get("inSync") for a in agents):
            return status
        if time.monotonic() > deadline:
            if not agents:
                raise TimeoutError_(f"revision {revision} is stored, but no agent is reporting")
            behind = [a for a in agents if (a.get("revision") or 0) < revision or not a.get("inSync")]
            names = ", ".join(f"{a['host']} (at revision {a.get('revision')}"
                              f"{', error: ' + a['error'] if a.get('error') else ''})" for a in behind)
            raise TimeoutError_(f"revision {revision} is stored, but after {timeout:.0f}s these agents "
                                f"do not enforce it yet: {names}")
        sleep(POLL_INTERVAL)
