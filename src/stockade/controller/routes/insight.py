"""Routes that answer "what is going on" for people: the overview, trends, and trace.

The dashboard's pages call them; so may anything else with a token. Each parses, calls one use
case (`overview`, `trends`, `tracing`) with the caller, and returns its answer.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Query

from stockade.controller.metrics import ControllerMetrics
from stockade.controller.overview import overview
from stockade.controller.routes.deps import API, ERROR_RESPONSES, Reader, StatusReader
from stockade.controller.service import ControllerService
from stockade.controller.tracing import parse_flow, trace
from stockade.controller.trends import PrometheusTrends


def router(service: ControllerService, metrics: ControllerMetrics, trends: PrometheusTrends) -> APIRouter:
    r = APIRouter(tags=["insight"])

    @r.get(f"{API}/overview", responses=ERROR_RESPONSES)
    def get_overview(principal: StatusReader) -> dict[str, Any]:
        """Enforcement health at a glance: hosts and their revisions, drift repairs, evaluation errors,
        measured rollouts, flows per minute over the last 30 minutes and the most denied pairs."""
        return overview(service, principal, metrics.recent_rollouts)

    @r.get(f"{API}/trends", responses=ERROR_RESPONSES)
    def get_trends(principal: StatusReader) -> dict[str, Any]:
        """The SLIs over the last 30 minutes from Prometheus (`--prometheus`), or why not."""
        return trends.trends(principal)

    @r.get(f"{API}/trace", responses=ERROR_RESPONSES)
    def get_trace(
        principal: Reader,
        src: Annotated[str, Query(alias="from", description="the source workload, NAMESPACE/NAME")],
        dst: Annotated[str | None, Query(alias="to", description="the destination workload, NAMESPACE/NAME")] = None,
        protocol: Annotated[str, Query(description="tcp, udp, sctp or icmp")] = "tcp",
        port: Annotated[int | None, Query(ge=0, le=65535)] = None,
        family: Annotated[int, Query(description="4 or 6")] = 4,
        to_fqdn: Annotated[str | None, Query(alias="toFqdn", description="or a destination by domain name")] = None,
        to_ip: Annotated[str | None, Query(alias="toIp", description="with toFqdn: the address it resolved to")] = None,
    ) -> dict[str, Any]:
        """The verdict the stored policy gives a flow and the rules that decide it: the same
        interpreter as `stockade trace`, run by the controller."""
        return trace(service, principal, parse_flow(src, dst, protocol, port, family, to_fqdn, to_ip))

    return r
