"""Topology routes: the picture of hosts, workloads, groups and policies, and one workload's
reachability (`controller.topology_views` decides and scopes)."""

from typing import Annotated, Any

from fastapi import APIRouter, Query

from stockade.controller.routes.deps import API, ERROR_RESPONSES, Reader
from stockade.controller.topology_schemas import ReachResponse, TopologyResponse
from stockade.controller.topology_views import TopologyViews


def router(views: TopologyViews) -> APIRouter:
    r = APIRouter(tags=["topology"])

    @r.get(f"{API}/topology", response_model=TopologyResponse, response_model_by_alias=True,
           responses=ERROR_RESPONSES)
    def topology(principal: Reader) -> dict[str, Any]:
        """Hosts (with their agents' sync state) → workloads (labels, addresses, endpoint), groups with
        their members, and every kind of policy with the workloads it applies to per direction, from
        the desired state with the compiler's own selection. A tenant sees its namespaces only."""
        return views.topology(principal)

    # A sync def: tracing every peer is CPU work, run in FastAPI's thread pool off the event loop.
    @r.get(f"{API}/topology/reach", response_model=ReachResponse, responses=ERROR_RESPONSES)
    def reach(principal: Reader,
              workload: Annotated[str, Query(max_length=253, description="NAMESPACE/NAME")]) -> dict[str, Any]:
        """What the workload may reach (`outgoing`) and what may reach it (`incoming`), per peer: for
        each port the policies in play name and any other port, the verdict and deciding rule of
        `stockade trace`. 413 above the documented number of workloads. A tenant: 403 for another
        namespace's workload; other namespaces' peers as `NS/(hidden)`, their rule ids redacted."""
        return views.reach(workload, principal)

    return r
