"""Every metric the controller and the agent export is in docs/operations.md, and no name is
exported by both with another meaning (issue 19, "metrics that add up")."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import httpx
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stockade.agent.metrics import AgentMetrics
from stockade.agent.reconciler import Reconciler
from stockade.client import ControllerClient
from stockade.controller.main import RunningController
from tests.agent.fakes import FakeTable
from tests.controller.test_flows import record

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def names(text: str) -> set[str]:
    """Metric families, without prometheus_client's `*_created` timestamps of counters and histograms."""
    found = {f.name for f in text_string_to_metric_families(text)}
    return {n for n in found if not (n.endswith("_created") and n.removesuffix("_created") in found)}


def agent_names() -> set[str]:
    metrics = AgentMetrics(Reconciler(FakeTable(True), "hv1"))
    metrics.watch_link(lambda: True)
    metrics.watch_dns(SimpleNamespace(queries=0, failures=0),
                      SimpleNamespace(counts=lambda: (0, 0), answers_learned=0))
    metrics.dns_proxy_down("closed")
    return names(generate_latest(metrics.registry).decode())


def documented(name: str, text: str) -> bool:
    """The family's name in the docs, as written there (a counter with `_total`, or a `process_*` family)."""
    if name.startswith("process_"):
        return "`process_*`" in text
    return any(re.search(rf"`{re.escape(n)}[`{{]", text) for n in (name, name + "_total"))


def test_every_exported_metric_is_documented_and_no_name_means_two_things(
        controller: RunningController, agent: ControllerClient) -> None:
    agent.send_flows("hv1", [record()])
    agent.report_status("hv1", revision=0, in_sync=True)
    controller_names = names(httpx.get(f"{controller.url}/metrics").text)
    agent_side = agent_names()
    text = DOCS.read_text()
    missing = sorted(n for n in controller_names | agent_side if not documented(n, text))
    assert not missing, f"not in docs/operations.md: {missing}"
    # Shared on purpose, with one meaning everywhere: the build and the process's own figures.
    shared = {n for n in controller_names & agent_side if not n.startswith("process_") and n != "stockade_build_info"}
    assert not shared, f"exported by controller and agent alike: {sorted(shared)}"
