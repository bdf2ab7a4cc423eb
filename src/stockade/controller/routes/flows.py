"""The flow query route: the bounded flow history, scoped to what the caller may read (service)."""

from typing import Annotated, Any

from fastapi import APIRouter, Query

from stockade.controller.flows import DEFAULT_QUERY_LIMIT, MAX_QUERY_LIMIT, FlowQuery
from stockade.controller.routes.deps import API, ERROR_RESPONSES, MAX_WATCH_TIMEOUT, FlowReader, parse_since
from stockade.controller.schemas import FlowsResponse
from stockade.controller.service import ControllerService


def router(service: ControllerService) -> APIRouter:
    r = APIRouter(tags=["flows"])

    @r.get(f"{API}/flows", response_model=FlowsResponse, responses=ERROR_RESPONSES)
    async def flows(
        principal: FlowReader,
        since_seq: Annotated[int | None, Query(ge=0, le=2**53,
                                               description="only records after this seq, oldest first")] = None,
        since: Annotated[str | None, Query(description="only records at or after this ISO 8601 time")] = None,
        namespace: Annotated[str | None, Query(description="either end is in this namespace")] = None,
        workload: Annotated[str | None, Query(description="either end is this workload (namespace/name)")] = None,
        denied: Annotated[bool, Query(description="deny, reject, would-deny and would-reject only")] = False,
        limit: Annotated[int, Query(ge=1, le=MAX_QUERY_LIMIT)] = DEFAULT_QUERY_LIMIT,
        follow_timeout: Annotated[float, Query(ge=0, le=MAX_WATCH_TIMEOUT,
                                               description="long-poll up to this many seconds for new records")] = 0.0,
    ) -> dict[str, Any]:
        """Flow records from the controller's bounded history. Without `since_seq`, the newest `limit`
        matching records; with it, the oldest `limit` after it. Follow by passing back `lastSeq`.
        A tenant must name one of its namespaces (or has only one, which is the default); the other
        end of its flows shows that end's namespace, not its workload name or rule id."""
        query = FlowQuery(since_seq, parse_since(since), namespace or None, workload or None, denied, limit)
        return await service.flow_page(query, follow_timeout, principal)

    return r
