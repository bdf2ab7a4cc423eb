"""The topology use cases: the picture of the desired state and one workload's reachability,
each as the caller may see it. No HTTP here; the API and the dashboard's pages share them.

Invariants:
- Scoping is decided here and in the pure modules it calls (`topology`, `reach`), never in a
  route: the caller's readable namespaces come from `rbac.visible_namespaces`.
- A workload the caller may not read is refused (403) before it is looked up
  (`rbac.require_readable`), so the answer is the same whether it exists or not.
- Reads only: the desired state the service caches and the agents' reports; stores nothing.
"""

from __future__ import annotations

from typing import Any

from stockade.controller import rbac
from stockade.controller.auth import Principal
from stockade.controller.reach import reach
from stockade.controller.service import ControllerService
from stockade.controller.topology import build_topology
from stockade.errors import ValidationError
from stockade.model.kinds import ObjectKey


def parse_workload_ref(text: str) -> tuple[str, str]:
    """`NS/NAME` → (NS, NAME); a clear 422 naming the parameter otherwise."""
    ns, sep, name = text.partition("/")
    if not sep or not ns or not name or "/" in name:
        raise ValidationError.single("reach", "query.workload", f"{text!r} is not NAMESPACE/NAME")
    return ns, name


class TopologyViews:
    def __init__(self, service: ControllerService) -> None:
        self._service = service

    def topology(self, principal: Principal) -> dict[str, Any]:
        """Hosts, workloads, groups and policies that `principal` may see (see `controller.topology`)."""
        state = self._service.desired_state()
        agents = self._service.status().agents  # cut down per caller by build_topology
        return build_topology(state, agents, rbac.visible_namespaces(principal), rbac.is_scoped(principal))

    def reach(self, workload: str, principal: Principal) -> dict[str, Any]:
        """What `workload` (`NS/NAME`) may reach and what may reach it (see `controller.reach`)."""
        ns, name = parse_workload_ref(workload)
        rbac.require_readable(principal, ObjectKey("Workload", ns, name))
        return reach(self._service.desired_state(), (ns, name), rbac.visible_namespaces(principal))
