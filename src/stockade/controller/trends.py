"""Trends for the dashboard from Prometheus, when the controller knows one (`--prometheus URL`).

The controller keeps no time series of its own beyond the flow history's window; Prometheus,
scraping every controller and agent with the SLI rules of deploy/prometheus, does. This asks it
for the last `RANGE` of the recorded SLIs (enforcement success, rollout latency, agents up,
denied flows, transaction errors) and says plainly where the figures came from:

- `{"source": "prometheus", "url", "series": {name: [[unix_time, value], ...]}}` when it answered;
- `{"source": "controller", "reason"}` when none is configured, or it did not answer (the reason
  names the URL and the error), or the caller is a tenant (the SLIs are cluster-wide: a tenant's
  figures are its own flows, from the controller's history).

Invariants: one short timeout per query (`TIMEOUT`), run in the request's worker thread, never on
the event loop; only fixed PromQL expressions are sent (nothing from the request); a failing
Prometheus never fails the page.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from stockade.clock import unix_time
from stockade.controller import rbac
from stockade.controller.auth import Principal

RANGE_SECONDS = 30 * 60
STEP_SECONDS = 30
TIMEOUT = 2.0

# The recording rules of deploy/prometheus/stockade-rules.yml (tests/test_deploy.py checks they exist).
SERIES: dict[str, str] = {
    "enforcementSuccess": "stockade:enforcement_success:ratio",
    "agentsUp": "stockade:agents_up:ratio",
    "rolloutP99Seconds": "stockade:policy_rollout_seconds:p99_5m",
    "rolloutP50Seconds": "stockade:policy_rollout_seconds:p50_5m",
    "deniedFlowsPerSecond": "stockade:denied_flows:rate5m",
    "transactionErrorsPerSecond": "stockade:transaction_errors:rate5m",
}


class PrometheusTrends:
    def __init__(self, url: str | None) -> None:
        self.url = url.rstrip("/") if url else None

    def trends(self, principal: Principal, now: float | None = None) -> dict[str, Any]:
        if rbac.is_scoped(principal):
            return {"source": "controller", "reason": "cluster-wide trends are shown to operators; these figures "
                                                      "are your namespaces' flows from the controller's history"}
        if self.url is None:
            return {"source": "controller", "reason": "no Prometheus configured (controller --prometheus URL): "
                                                      "figures from the controller's own memory"}
        end = now if now is not None else unix_time()
        series: dict[str, list[list[float]]] = {}
        try:
            for name, expr in SERIES.items():
                series[name] = self._range(expr, end - RANGE_SECONDS, end)
        except (OSError, urllib.error.URLError, ValueError, KeyError) as e:
            return {"source": "controller", "reason": f"Prometheus at {self.url} did not answer ({e}): figures "
                                                      "from the controller's own memory"}
        return {"source": "prometheus", "url": self.url, "rangeSeconds": RANGE_SECONDS, "stepSeconds": STEP_SECONDS,
                "series": series}

    def _range(self, expr: str, start: float, end: float) -> list[list[float]]:
        query = urllib.parse.urlencode({"query": expr, "start": f"{start:.0f}", "end": f"{end:.0f}",
                                        "step": str(STEP_SECONDS)})
        with urllib.request.urlopen(f"{self.url}/api/v1/query_range?{query}", timeout=TIMEOUT) as answer:
            body = json.loads(answer.read())
        if body.get("status") != "success":
            raise ValueError(f"query {expr!r}: {body.get('error', 'failed')}")
        points: list[list[float]] = []
        for result in body["data"]["result"][:1]:  # each expression is one series (sum/avg)
            points = [[float(t), float(v)] for t, v in result["values"]]
        return points
