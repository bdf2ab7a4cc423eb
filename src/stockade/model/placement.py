"""Where a workload was before: `status.movedFrom` and `status.movedAt`, kept by every write. Pure.

A workload moves when a write changes its `spec.host` (a live migration, or a re-placement).
The controller records the move in the stored status at that write, so `get workload` shows
where it is (`status.host`), where it came from and when, across restarts and replicas; and
the controller lets the agent of `movedFrom` hand the workload's open connections to the new
host (`controller.handoffs`), and no other agent.

Invariants: a write that leaves `spec.host` as it was keeps the recorded move as it was, so
re-applying an unchanged workload changes nothing; the addresses in `status.ips` are IPAM's
(`model.ipam`) and are not touched here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Sequence

from stockade.model.kinds import StockadeObject
from stockade.model.objects import Workload
from stockade.model.state import DesiredState

MOVE_FIELDS = ("movedFrom", "movedAt")


def record_moves(current: DesiredState, incoming: Sequence[StockadeObject], now: datetime) -> list[StockadeObject]:
    """`incoming` with each Workload's move recorded: a new one when its host changes, else the
    stored one carried over."""
    out: list[StockadeObject] = []
    for obj in incoming:
        if not isinstance(obj, Workload):
            out.append(obj)
            continue
        old = current.workloads.get((obj.metadata.namespace or "", obj.metadata.name))
        if old is None:
            out.append(obj)
            continue
        status = dict(obj.status or {})
        if old.spec.host != obj.spec.host:
            status.update(movedFrom=old.spec.host, movedAt=now.isoformat(timespec="milliseconds"))
        else:
            status.update({f: (old.status or {})[f] for f in MOVE_FIELDS if f in (old.status or {})})
        out.append(obj.model_copy(update={"status": status or None}))
    return out


def moved_from(workload: Workload) -> str | None:
    """The host the workload left at its last move, if it ever moved."""
    value = (workload.status or {}).get("movedFrom")
    return str(value) if value else None
