"""Health and status routes: /healthz (no token), the agents' status, Prometheus /metrics."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from stockade.controller.metrics import ControllerMetrics
from stockade.controller.routes.deps import API, ERROR_RESPONSES, MetricsReader, StatusReader
from stockade.controller.schemas import HealthResponse, StatusResponse
from stockade.controller.service import ControllerService


async def _nobody() -> None:
    return None


def router(service: ControllerService, metrics: ControllerMetrics, metrics_auth: bool) -> APIRouter:
    r = APIRouter()

    @r.get("/healthz", response_model=HealthResponse, tags=["health"])
    def healthz() -> dict[str, Any]:
        """Liveness and the current revision; needs no token."""
        return {"ok": True, "revision": service.revision(), "clusterId": service.cluster_id}

    @r.get(f"{API}/status", response_model=StatusResponse, responses=ERROR_RESPONSES, tags=["agents"])
    def status(principal: StatusReader) -> dict[str, Any]:
        """The controller's revision and what each agent enforces (a tenant: without error texts and
        other namespaces' workloads)."""
        return service.status(principal).to_dict()

    # /metrics names every host and its error state: `--metrics-auth` asks a viewer-or-better token
    # for it (a scraper then sends one); without it, it stays open as before, for a scraper on a
    # trusted network.
    metrics_guard = MetricsReader if metrics_auth else Annotated[None, Depends(_nobody)]

    @r.get("/metrics", tags=["health"], response_class=Response,
           responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
    def prometheus_metrics(_: metrics_guard) -> Response:  # type: ignore[valid-type]
        """Prometheus metrics; needs no token unless the controller runs with --metrics-auth
        (then admin, network-admin or viewer)."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return r
