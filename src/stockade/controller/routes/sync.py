"""Routes agents call: snapshot and watch (their desired state), status reports and flow batches.

Snapshot and watch: an agent token gets its host's view, anyone else the whole state; the
choice is the sync use case's (`controller.host_views`), not the route's. A report or a flow batch is accepted
only for the caller's own host (the service asks `rbac`).
"""

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from stockade.controller.host_views import HostViews
from stockade.controller.metrics import ControllerMetrics
from stockade.controller.records import WatchAnswers
from stockade.controller.routes.deps import API, ERROR_RESPONSES, MAX_WATCH_TIMEOUT, Reporter, StateReader
from stockade.controller.schemas import (
    AgentStatusRequest,
    ErrorBody,
    FlowBatchRequest,
    FlowIngestResponse,
    OkResponse,
    SnapshotResponse,
    WatchResponse,
    parse_utc,
)
from stockade.controller.service import ControllerService
from stockade.model.reports import AgentReport, Endpoint, FlowRecord, Handoff, NotProgrammed, RuleCount


def router(service: ControllerService, host_views: HostViews, watch_answers: WatchAnswers,
           metrics: ControllerMetrics) -> APIRouter:
    r = APIRouter()

    @r.get(f"{API}/snapshot", response_model=SnapshotResponse, response_model_exclude_unset=True,
           responses=ERROR_RESPONSES, tags=["sync"])
    def snapshot(principal: StateReader) -> dict[str, Any]:
        """Every object at one revision: where a watcher starts, and restarts after 410. An agent
        gets its host's view (what that host enforces) and the view's name to watch with."""
        revision, objects, view = host_views.snapshot_for(principal)
        answer: dict[str, Any] = {"revision": revision, "clusterId": service.cluster_id}
        if service.lineage:
            answer["lineage"] = list(service.lineage)
        if view is not None:
            answer["view"] = view
        answer["objects"] = objects
        return answer

    @r.get(f"{API}/watch", response_model=WatchResponse,
           responses={**ERROR_RESPONSES, 410: {"model": ErrorBody}}, tags=["sync"])
    async def watch(principal: StateReader, since: Annotated[int, Query(ge=0, le=2**53)],
                    timeout: Annotated[float, Query(ge=0, le=MAX_WATCH_TIMEOUT)] = 30.0,
                    view: Annotated[str | None, Query(max_length=64)] = None) -> Response:
        """Events after revision `since`; long-polls up to `timeout` seconds. 410: too old, relist.
        An agent sends the `view` its snapshot named; 410 too when its host's view changed."""
        revision, events, view = await host_views.watch_for(principal, since, timeout, view)
        # Rendered once per commit (and view) for all watchers (records.WatchAnswers); the schema
        # above is what it holds, for the OpenAPI document.
        return Response(watch_answers.render(since, revision, events, view), media_type="application/json")

    @r.put(f"{API}/agents/{{host}}/status", response_model=OkResponse, responses=ERROR_RESPONSES,
           tags=["agents"])
    async def report_status(host: str, body: AgentStatusRequest, principal: Reporter) -> dict[str, Any]:
        """An agent reports the revision it enforces and its endpoints; an agent token only for its host."""
        # On the event loop, not in a worker thread: nothing here waits (reports are kept in
        # memory, recent revisions' times too), and twenty agents report after every change.
        report = AgentReport(
            revision=body.revision, program_hash=body.programHash, applied_at=body.appliedAt,
            in_sync=body.inSync, error=body.error, drift_repairs=body.driftRepairs,
            last_drift_at=body.lastDriftAt,
            endpoints={k: Endpoint(e.netns, e.interface, e.mac) for k, e in body.endpoints.items()},
            not_programmed=tuple(NotProgrammed(n.object, n.reason) for n in body.notProgrammed),
            handoffs={k: Handoff(h.revision, h.connections, h.taken) for k, h in body.handoffs.items()},
            rule_counters={rule: {d: RuleCount(c.packets, c.bytes) for d, c in by_dir.items()}
                           for rule, by_dir in body.ruleCounters.items()},
            rule_counters_omitted=body.ruleCountersOmitted)
        rollout = service.report_agent(host, report, principal=principal)
        if rollout is not None:
            metrics.observe_rollout(host, body.revision, rollout)
        return {"ok": True}

    @r.put(f"{API}/agents/{{host}}/flows", response_model=FlowIngestResponse, responses=ERROR_RESPONSES,
           tags=["flows"])
    def report_flows(host: str, body: FlowBatchRequest, principal: Reporter) -> dict[str, Any]:
        """An agent sends flow records it enforced and how many it dropped or sampled since its last batch;
        an agent token only for its host, and every record must name that host."""
        records = [(parse_utc(r.time), FlowRecord.from_dict(r.model_dump())) for r in body.records]  # validated
        last = service.record_flows(host, records, body.dropped, principal=principal)
        return {"accepted": len(records), "lastSeq": last}

    return r
