"""Open connections handed from the host a workload left to the host it moved to (live migration).

When a write moves a workload (`spec.host` changes; `model.placement` records `status.movedFrom`),
the agent of the host it left exports the conntrack entries of its addresses and gives them
here (`give`); the agent of its new host takes them (`take`) and imports them before traffic
is switched, so an established connection finds its state on arrival (dataplane.conntrack_transfer).

Who may do what is the point of this module, because an entry imported into a host's conntrack
admits packets that no policy is asked about:
- only the agent of the host the workload moved *from* (`status.movedFrom`) may give, and only
  entries with one end on the workload's own addresses: a host cannot open a door on another
  host for addresses that are not the moving workload's;
- only the agent of the host the workload is on now may take (an admin may read, to inspect).

Handoffs are runtime state, kept in memory like agent reports: bounded in count and size and
forgotten after `ttl` seconds. With several controller replicas a handoff lives in the replica
the source agent gave it to (docs/operations.md: what a failover during a move costs).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from stockade.controller import rbac
from stockade.controller.auth import Principal
from stockade.errors import Forbidden, NotFoundError, PayloadTooLarge, ValidationError
from stockade.model.objects import Workload
from stockade.model.placement import moved_from
from stockade.model.state import DesiredState

MAX_ENTRIES = 65_536      # per handoff: a busy VM's connections, not a table dump
MAX_HANDOFFS = 1_024      # held at once; the oldest goes first
TTL = 600.0               # seconds a handoff waits for its taker


@dataclass(frozen=True)
class Handoff:
    workload: str           # "namespace/name"
    source: str             # the host it left
    revision: int           # the revision that moved it, as the source saw it
    entries: tuple[Mapping[str, object], ...]
    given_at: float         # monotonic

    def to_dict(self) -> dict[str, object]:
        return {"workload": self.workload, "from": self.source, "revision": self.revision,
                "entries": [dict(e) for e in self.entries]}


class HandoffBox:
    def __init__(self, state: Callable[[], DesiredState], ttl: float = TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._state = state
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._held: dict[str, Handoff] = {}

    def give(self, principal: Principal, namespace: str, name: str, revision: int,
             entries: Sequence[Mapping[str, object]]) -> int:
        """Keep the entries the agent of the host `namespace/name` left gives; how many were kept."""
        rbac.require(principal, rbac.Permission.HAND_OFF_CONNECTIONS)
        key = f"{namespace}/{name}"
        workload = self._workload(namespace, name)
        source = moved_from(workload)
        if principal.host is not None and principal.host != source:
            raise Forbidden(f"agent of {principal.host!r} may not hand off Workload {key}'s connections: "
                            f"it moved from {source or 'nowhere (it never moved)'}")
        if len(entries) > MAX_ENTRIES:
            raise PayloadTooLarge(f"Workload {key}: {len(entries)} connections in one handoff; at most {MAX_ENTRIES}")
        own = set(_state_ips(self._state(), workload))
        for i, entry in enumerate(entries):
            ends = {entry.get("src"), entry.get("dst"), entry.get("reply_src"), entry.get("reply_dst")}
            if not ends & own:
                raise ValidationError.single(f"handoff of Workload {key}", f"entries[{i}]",
                                             "has no end on the workload's addresses "
                                             f"({', '.join(sorted(own)) or 'none'})")
        with self._lock:
            self._expire()
            self._held.pop(key, None)
            while len(self._held) >= MAX_HANDOFFS:
                self._held.pop(next(iter(self._held)))
            self._held[key] = Handoff(key, str(source or principal.host or ""), revision,
                                      tuple(dict(e) for e in entries), self._clock())
        return len(entries)

    def take(self, principal: Principal, namespace: str, name: str) -> Handoff:
        """The handoff of `namespace/name`, for the agent of the host it is on now (it stays until
        it expires or the next move replaces it: a retried take gets the same answer). Admins too."""
        rbac.require(principal, rbac.Permission.HAND_OFF_CONNECTIONS)
        key = f"{namespace}/{name}"
        workload = self._workload(namespace, name)
        if principal.host is not None and principal.host != workload.spec.host:
            raise Forbidden(f"agent of {principal.host!r} may not take Workload {key}'s connections: "
                            f"it is on {workload.spec.host!r}")
        with self._lock:
            self._expire()
            found = self._held.get(key)
        if found is None:
            raise NotFoundError(f"Workload {key}: no connections were handed off (yet)")
        return found

    def _workload(self, namespace: str, name: str) -> Workload:
        workload = self._state().workloads.get((namespace, name))
        if workload is None:
            raise NotFoundError(f"Workload {namespace}/{name}: not found")
        return workload

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, h in self._held.items() if now - h.given_at > self._ttl]:
            del self._held[key]


def _state_ips(state: DesiredState, workload: Workload) -> list[str]:
    return state.workload_ips(workload)
