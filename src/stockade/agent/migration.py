"""A workload that moves between hosts, as one host's agent sees it: carry its open connections.

When a write changes a workload's `spec.host` (`model.placement` records where it came from),
two agents act on the same revision:

- the agent of the host it **left** (the workload was local, now it is a peer): once its program
  no longer holds the workload (its port is dropped as an unknown one from then on), it exports
  the conntrack entries of the workload's addresses, gives them to the controller
  (`controller.handoffs`) and deletes them here, so this host keeps nothing of the workload
  (entries whose other end is still a local workload stay: that workload's side needs them);
- the agent of the host it **arrived at** takes the entries and imports them, then says so in its
  report (`handoffs`), which is what a hypervisor (in the lab: `lab.migration`) waits for before
  it switches the traffic: the first packet on the new host finds its connection established.

`moves` is pure. `ConnectionCarrier` does the kernel and controller work; it is given its
export/import/remove functions and its clock, so the order of the steps is testable without a
kernel, and the kernel path is tested for real (tests/dataplane, tests/e2e/test_live_migration.py).

Invariants: an agent gives only for a workload that was local to it in the previous state and
takes only for one that was a peer then; a take waits at most `wait` seconds (the source may be
slower or gone: then the connections are decided by this host's policy as new ones, and the
report says the handoff is missing); nothing here raises into the agent's loop.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol

from stockade.dataplane.conntrack_transfer import (
    ConnectionState,
    export_connections,
    import_connections,
    remove_connections,
)
from stockade.errors import NotFoundError, StockadeError
from stockade.model.objects import Workload
from stockade.model.reports import Handoff
from stockade.model.state import DesiredState

log = logging.getLogger(__name__)

HANDOFF_WAIT = 10.0   # seconds the new host waits for the old one's connections
POLL = 0.02    # the source gives within tens of milliseconds of the revision; asking again costs one GET


@dataclass(frozen=True)
class Moves:
    left: tuple[str, ...]      # "namespace/name" of local workloads now on another host
    arrived: tuple[str, ...]   # "namespace/name" of workloads now local that were on another host


def moves(before: DesiredState | None, after: DesiredState, host: str) -> Moves:
    """Which workloads left `host` and which arrived at it between two states. Pure."""
    if before is None:
        return Moves((), ())
    left, arrived = [], []
    for key, now in after.workloads.items():
        was = before.workloads.get(key)
        if was is None or was.spec.host == now.spec.host:
            continue
        if was.spec.host == host:
            left.append(f"{key[0]}/{key[1]}")
        elif now.spec.host == host:
            arrived.append(f"{key[0]}/{key[1]}")
    return Moves(tuple(sorted(left)), tuple(sorted(arrived)))


class HandoffApi(Protocol):
    def give_connections(self, namespace: str, name: str, revision: int,
                         entries: list[dict[str, Any]]) -> Any: ...
    def take_connections(self, namespace: str, name: str) -> dict[str, Any]: ...


@dataclass
class ConnectionCarrier:
    client: HandoffApi
    export: Callable[[Iterable[str]], list[ConnectionState]] = export_connections
    import_: Callable[[Iterable[ConnectionState]], int] = import_connections
    remove: Callable[[Iterable[ConnectionState]], int] = remove_connections
    wait: float = HANDOFF_WAIT
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    # (direction "out"|"in", result "ok"|"missing"|"error", connections): the agent's metrics
    observe: Callable[[str, str, int], None] = lambda direction, result, connections: None

    def hand_off(self, state: DesiredState, key: str, staying: set[str]) -> int:
        """The host a workload left: export, give, forget here. `staying`: the addresses of the
        workloads still local (their entries are kept). How many connections were given."""
        workload = _workload(state, key)
        if workload is None:
            return 0
        namespace, name = key.split("/", 1)
        try:
            entries = self.export(state.workload_ips(workload))
            self.client.give_connections(namespace, name, state.revision, [e.to_dict() for e in entries])
            self.remove([e for e in entries if not e.touches(staying)])
        except StockadeError as e:
            log.error("revision %d: handing off the connections of Workload %s failed: %s",
                      state.revision, key, e.message)
            self.observe("out", "error", 0)
            return 0
        self.observe("out", "ok", len(entries))
        log.info("revision %d: Workload %s moved to %s; handed off %d connections",
                 state.revision, key, workload.spec.host, len(entries))
        return len(entries)

    def take_over(self, key: str, revision: int, seen_elsewhere_at: int) -> Handoff:
        """The host a workload arrived at (in `revision`): wait for its connections, import them.
        `seen_elsewhere_at`: the last revision in which this host saw it on another host; the move
        came after it, and so does any handoff of this move (an older one is of an earlier move)."""
        namespace, name = key.split("/", 1)
        deadline = self.clock() + self.wait
        while True:
            try:
                given = self.client.take_connections(namespace, name)
            except NotFoundError:
                given = None
            except StockadeError as e:
                log.warning("taking the connections of Workload %s: %s", key, e.message)
                given = None
            if given is not None and int(given.get("revision", 0)) > seen_elsewhere_at:
                break
            if self.clock() >= deadline:
                log.warning("revision %d: no connections of Workload %s came from the host it left within "
                            "%.0f s; its connections are new ones here", revision, key, self.wait)
                self.observe("in", "missing", 0)
                return Handoff(revision, 0, False)
            self.sleep(POLL)
        entries = [ConnectionState.from_dict(e) for e in given.get("entries") or []]
        try:
            made = self.import_(entries)
        except StockadeError as e:
            log.error("revision %d: importing the connections of Workload %s failed: %s", revision, key, e.message)
            self.observe("in", "error", 0)
            return Handoff(revision, 0, False)
        log.info("revision %d: Workload %s arrived from %s; took over %d connections",
                 revision, key, given.get("from"), made)
        self.observe("in", "ok", made)
        return Handoff(revision, made, True)


def _workload(state: DesiredState, key: str) -> Workload | None:
    namespace, name = key.split("/", 1)
    return state.workloads.get((namespace, name))
