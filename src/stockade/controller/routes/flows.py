"""The flow query route: the bounded flow history, scoped to what the caller may read (service)."""

from typing import Annotated, Any

from fastapi import APIRouter, Query

from stockade.controller.flows import (DEFAULT_QUERY_LIMIT, MAX_QUERY_LIMIT, EndFilter, FlowQuery, parse_protocol,
                                      parse_verdicts)
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
        from_: Annotated[str | None, Query(alias="from", max_length=254, description=(
            "the source end: an IP address, a workload namespace/name, or a workload name"))] = None,
        to: Annotated[str | None, Query(max_length=254, description=(
            "the destination end: an IP address, a workload namespace/name, or a workload name"))] = None,
        verdict: Annotated[list[str] | None, Query(max_length=16, description=(
            "any of these verdicts (repeat the parameter; `denied` stands for all denied ones)"))] = None,
        port: Annotated[int | None, Query(ge=0, le=65535, description="either end's port")] = None,
        protocol: Annotated[str | None, Query(max_length=16, description="tcp, udp, icmp, ...")] = None,
        rule: Annotated[str | None, Query(max_length=512, description="the deciding rule's id (ns/policy/rule)")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_QUERY_LIMIT)] = DEFAULT_QUERY_LIMIT,
        follow_timeout: Annotated[float, Query(ge=0, le=MAX_WATCH_TIMEOUT,
                                               description="long-poll up to this many seconds for new records")] = 0.0,
    ) -> dict[str, Any]:
        """Flow records from the controller's bounded history. Without `since_seq`, the newest `limit`
        matching records; with it, the oldest `limit` after it. Follow by passing back `lastSeq`.
        A tenant must name one of its namespaces (or has only one, which is the default); the other
        end of its flows shows that end's namespace, not its workload name or rule id, and `from`, `to`
        and `rule` match only that view."""
        query = FlowQuery(since_seq, parse_since(since), namespace or None, workload or None, denied, limit,
                          src=EndFilter.parse("from", from_) if from_ else None,
                          dst=EndFilter.parse("to", to) if to else None,
                          verdicts=parse_verdicts(verdict or ()), port=port,
                          protocol=parse_protocol(protocol) if protocol else None, rule=rule or None)
        return await service.flow_page(query, follow_timeout, principal)

    return r
