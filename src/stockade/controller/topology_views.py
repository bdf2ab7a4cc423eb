"""The topology use cases: the picture of the desired state and one workload's reachability,
each as the caller may see it. No HTTP here; the API and the dashboard's pages share them.

Invariants:
- Scoping is decided here and in the pure modules it calls (`topology`, `reach`), never in a
  route: the caller's readable namespaces come from `rbac.visible_namespaces`.
- A workload the caller may not read is refused (403) before it is looked up
  (`rbac.require_readable`), so the answer is the same whether it exists or not.
- Reads only: the desired state the service caches and the agents' reports; stores nothing.
- Bounded: a reach answer traces every peer on every port in play (seconds of CPU at a few
  hundred workloads) in the worker threads that every synchronous route shares, so at most
  `MAX_REACH_AT_ONCE` are computed at a time, and at most one per caller; another is refused at
  once (429, Retry-After) rather than queued, so that no caller can hold the workers.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator

from stockade.controller import rbac
from stockade.controller.auth import Principal
from stockade.controller.reach import reach
from stockade.controller.service import ControllerService
from stockade.controller.topology import build_topology
from stockade.errors import TooManyRequests, ValidationError
from stockade.model.kinds import ObjectKey

MAX_REACH_AT_ONCE = 2  # the controller's cores, roughly: more at once only shares them out
REACH_RETRY_SECONDS = 1


class ReachSlots:
    """How many reach answers are being computed, in all and per caller (thread-safe)."""

    def __init__(self, total: int = MAX_REACH_AT_ONCE) -> None:
        self._total = total
        self._lock = threading.Lock()
        self._callers: dict[str, int] = {}

    @contextmanager
    def slot(self, principal: Principal) -> Iterator[None]:
        """Holds one slot for `principal`'s token while the block runs; TooManyRequests when none is free."""
        caller = principal.token_id or principal.name
        with self._lock:
            if self._callers.get(caller) or sum(self._callers.values()) >= self._total:
                raise TooManyRequests(f"{principal.name!r} already has a reach answer being computed, or "
                                      f"{self._total} are: ask again in {REACH_RETRY_SECONDS} s",
                                      REACH_RETRY_SECONDS)
            self._callers[caller] = 1
        try:
            yield
        finally:
            with self._lock:
                del self._callers[caller]


def parse_workload_ref(text: str) -> tuple[str, str]:
    """`NS/NAME` → (NS, NAME); a clear 422 naming the parameter otherwise."""
    ns, sep, name = text.partition("/")
    if not sep or not ns or not name or "/" in name:
        raise ValidationError.single("reach", "query.workload", f"{text!r} is not NAMESPACE/NAME")
    return ns, name


class TopologyViews:
    def __init__(self, service: ControllerService, slots: ReachSlots | None = None) -> None:
        self._service = service
        self._slots = slots or ReachSlots()

    def topology(self, principal: Principal) -> dict[str, Any]:
        """Hosts, workloads, groups and policies that `principal` may see (see `controller.topology`)."""
        state = self._service.desired_state()
        agents = self._service.status().agents  # cut down per caller by build_topology
        return build_topology(state, agents, rbac.visible_namespaces(principal), rbac.is_scoped(principal))

    def reach(self, workload: str, principal: Principal) -> dict[str, Any]:
        """What `workload` (`NS/NAME`) may reach and what may reach it (see `controller.reach`)."""
        ns, name = parse_workload_ref(workload)
        rbac.require_readable(principal, ObjectKey("Workload", ns, name))
        with self._slots.slot(principal):
            return reach(self._service.desired_state(), (ns, name), rbac.visible_namespaces(principal))
