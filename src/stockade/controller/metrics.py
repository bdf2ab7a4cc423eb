"""The controller's Prometheus metrics, in a registry of its own (one per app, so tests and
several apps in one process never share or clash).

Every name starts with `stockade_controller_` (or is the controller's own, `stockade_api_*`,
`stockade_policy_rollout_seconds`): what the controller knows of hosts is named for the controller,
never like the agents' own metrics, so that no two components export one name with two meanings.

- `stockade_controller_revision`: the store's revision.
- `stockade_controller_host_revision{host}`: the revision each host's agent last reported enforcing.
- `stockade_controller_host_reporting{host}`: 1 when that agent reported within the staleness window.
- `stockade_controller_host_lag_revisions{host}`: controller revision minus the host's.
- `stockade_controller_host_in_sync{host}`: 1 if the host's agent last reported its kernel equal to its program.
- `stockade_controller_long_polls{kind}`: long-polls waiting right now: `watch` (about one per
  connected agent) and `flows` (followers such as `stockade flows --follow`).
- `stockade_api_requests_total{route,status}`: requests by route template (never the raw
  path, so object names cannot blow up the label set) and HTTP status.
- `stockade_controller_flow_records_received_total{host}`: flow records accepted from each agent.
- `stockade_controller_flow_records_lost_total{host}`: flow records lost on the way: those the agent
  reported dropped or sampled away, plus those the controller evicted from its bounded history.
- `stockade_controller_flow_sink_records_total{sink}`: flow records a sink took: `file` (the
  JSON-lines flow log) wrote, `otlp` the collector accepted.
- `stockade_controller_flow_sink_dropped_total{sink}`: flow records a sink lost: `file` could not
  write (disk full, read-only), `otlp` refused for a full queue or in a batch the collector did
  not take (down, slow, refusing). The in-memory history keeps them either way.
- `stockade_build_info{component,version,python}` and `process_*` (build_info.py).
- `stockade_policy_rollout_seconds`: histogram of revision committed → first report of each
  agent enforcing it in sync; one observation per (host, revision).

State gauges and the flow counters are read from the service at scrape time, so they are
right after a restart too (the flow counters start again from 0 with the process, as counters do).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Iterator, MutableMapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stockade.build_info import add_process_metrics
from stockade.controller.rollouts import RecentRollouts
from stockade.controller.service import ControllerService

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


ROLLOUT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


_SINK_TAKEN = ("stockade_controller_flow_sink_records", "Flow records a sink wrote (file) or delivered (otlp)")
_SINK_DROPPED = ("stockade_controller_flow_sink_dropped",
                 "Flow records a sink lost: write failed (file), queue full or export failed (otlp)")


class _StateCollector(Collector):
    def __init__(self, service: ControllerService) -> None:
        self._service = service

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("stockade_controller_revision", "Latest revision of the desired state")
        yield GaugeMetricFamily("stockade_controller_host_revision", "Revision the host's agent last reported enforcing", labels=["host"])
        yield GaugeMetricFamily("stockade_controller_host_reporting", "1 if the host's agent reported recently", labels=["host"])
        yield GaugeMetricFamily("stockade_controller_host_lag_revisions", "Controller revision minus the host's",
                                labels=["host"])
        yield GaugeMetricFamily("stockade_controller_host_in_sync",
                                "1 if the host's agent last reported its kernel equal to its program", labels=["host"])
        yield GaugeMetricFamily("stockade_controller_long_polls", "Long-polls waiting now", labels=["kind"])
        yield CounterMetricFamily("stockade_controller_flow_records_received", "Flow records received from each host", labels=["host"])
        yield CounterMetricFamily("stockade_controller_flow_records_lost", "Flow records a host reported dropped, or the controller evicted",
                                  labels=["host"])
        yield CounterMetricFamily(*_SINK_TAKEN, labels=["sink"])
        yield CounterMetricFamily(*_SINK_DROPPED, labels=["sink"])

    def collect(self) -> Iterator[Metric]:
        status = self._service.status()
        yield GaugeMetricFamily("stockade_controller_revision", "Latest revision of the desired state",
                                value=status.revision)
        enforced = GaugeMetricFamily("stockade_controller_host_revision", "Revision the host's agent last reported enforcing",
                                     labels=["host"])
        reporting = GaugeMetricFamily("stockade_controller_host_reporting", "1 if the host's agent reported recently",
                                      labels=["host"])
        lag = GaugeMetricFamily("stockade_controller_host_lag_revisions", "Controller revision minus the host's",
                                labels=["host"])
        in_sync = GaugeMetricFamily("stockade_controller_host_in_sync",
                                    "1 if the host's agent last reported its kernel equal to its program",
                                    labels=["host"])
        for agent in status.agents:
            in_sync.add_metric([agent.host], 1.0 if agent.report.in_sync else 0.0)
            enforced.add_metric([agent.host], agent.report.revision)
            reporting.add_metric([agent.host], 1.0 if agent.reporting else 0.0)
            lag.add_metric([agent.host], max(0, status.revision - agent.report.revision))
        yield enforced
        yield reporting
        yield lag
        yield in_sync
        waiting = GaugeMetricFamily("stockade_controller_long_polls", "Long-polls waiting now", labels=["kind"])
        for kind, n in sorted(self._service.long_polls().items()):
            waiting.add_metric([kind], n)
        yield waiting
        counts = self._service.flow_log.counts()
        received = CounterMetricFamily("stockade_controller_flow_records_received", "Flow records received from each host",
                                       labels=["host"])
        for host, n in sorted(counts.received.items()):
            received.add_metric([host], n)
        dropped = CounterMetricFamily("stockade_controller_flow_records_lost", "Flow records a host reported dropped, or the controller evicted",
                                      labels=["host"])
        for host, n in counts.dropped_total().items():
            dropped.add_metric([host], n)
        yield received
        yield dropped
        taken = CounterMetricFamily(*_SINK_TAKEN, labels=["sink"])
        lost = CounterMetricFamily(*_SINK_DROPPED, labels=["sink"])
        for sink, (n_taken, n_lost) in sorted(self._service.flow_log.sink_counts().items()):
            taken.add_metric([sink], n_taken)
            lost.add_metric([sink], n_lost)
        yield taken
        yield lost


class ControllerMetrics:
    def __init__(self, service: ControllerService) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("stockade_api_requests_total", "API requests by route and status",
                                ["route", "status"], registry=self.registry)
        self.rollout = Histogram("stockade_policy_rollout_seconds",
                                 "Revision committed to first report of each agent enforcing it in sync",
                                 buckets=ROLLOUT_BUCKETS, registry=self.registry)
        self.registry.register(_StateCollector(service))
        add_process_metrics(self.registry, "controller")
        # The same measurements, the latest few kept as they are: the dashboard's overview.
        self.recent_rollouts = RecentRollouts()

    def observe_rollout(self, host: str, revision: int, seconds: float) -> None:
        """A host enforces `revision` in sync, `seconds` after it was committed."""
        self.rollout.observe(seconds)
        self.recent_rollouts.add(host, revision, seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestCounter:
    """ASGI middleware counting every HTTP request by route template and final status."""

    def __init__(self, app: ASGIApp, metrics: ControllerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets when the app raises before responding

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            # The router records the matched route in the (shared) scope.
            route = getattr(scope.get("route"), "path", None) or "<unmatched>"
            self.metrics.requests.labels(route=route, status=str(status)).inc()
