"""A real Prometheus (Debian's) scraping the lab with Stockade's SLI rules (issue 19, item 3)."""

from __future__ import annotations

import json
import urllib.request
from typing import Any, Iterator

import pytest

from stockade.lab import naming
from stockade.lab import netns as ns
from stockade.lab import prometheus
from stockade.lab.state import LabSettings
from tests.e2e.conftest import EXAMPLES, Lab, make_lab
from tests.waiting import wait_until

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    for lab in make_lab(tmp_path_factory.mktemp("prom"), 2, "--prometheus"):
        lab.cli("apply", "-f", str(EXAMPLES), "--wait", "--timeout", "60")
        yield lab


def settings(lab: Lab) -> LabSettings:
    return LabSettings(lab.prefix, lab.state_dir, lab.state_dir / "unused.json")


def query(lab: Lab, promql: str) -> list[dict[str, Any]]:
    return prometheus.query(settings(lab), promql)


def api(lab: Lab, path: str) -> Any:
    def ask() -> Any:
        with urllib.request.urlopen(f"http://{prometheus.address()}{path}", timeout=5) as answer:
            return json.loads(answer.read())["data"]

    return ns.run_in(naming.control_netns(lab.prefix), ask)


def value(lab: Lab, promql: str) -> float | None:
    found = query(lab, promql)
    return float(found[0]["value"][1]) if found else None


def test_it_scrapes_every_component_computes_the_slis_and_pages_when_an_agent_dies(lab: Lab) -> None:
    processes = {p["name"]: p for p in lab.json("lab", "status")["processes"]}
    assert processes["prometheus"]["role"] == "prometheus" and processes["prometheus"]["alive"]
    wait_until(lambda: value(lab, 'count(up{job="stockade-agent"} == 1)') == 2, "both agents scraped", timeout=30)
    wait_until(lambda: value(lab, 'count(up{job="stockade-controller"} == 1)') == 1, "the controller scraped",
               timeout=30)
    components = {r["metric"]["component"] for r in query(lab, "stockade_build_info")}
    assert components == {"controller", "agent"}
    wait_until(lambda: value(lab, "stockade:enforcement_success:ratio") == 1.0, "every host enforcing", timeout=30)
    assert value(lab, "stockade:agents_up:ratio") == 1.0
    loaded = api(lab, "/api/v1/rules")["groups"]
    assert {g["name"] for g in loaded} == {"stockade-sli", "stockade-slo-error-ratios", "stockade-burn-rate-alerts"}
    # Every rule evaluates against the lab's real series without error. (Whether an alert fires
    # before the fault depends on the machine: a first rollout slower than 1 s on a busy CI host
    # burns the latency budget of a lab a minute old, as it should.)
    def unhealthy() -> list[tuple[str, str]]:
        return [(r["name"], r.get("lastError") or r["health"]) for g in api(lab, "/api/v1/rules")["groups"]
                for r in g["rules"] if r["health"] != "ok"]

    wait_until(lambda: not unhealthy(), "every rule to evaluate without error", timeout=20, describe=unhealthy)
    # The dashboard's trends read the same SLIs from this Prometheus (the lab gave the controller
    # --prometheus), and say so.
    def trends() -> dict[str, Any] | None:
        ctx = lab.context()
        ask = urllib.request.Request(f"{ctx.controller.split(',')[0]}/api/v1/trends",
                                     headers={"Authorization": f"Bearer {ctx.token}"})
        with urllib.request.urlopen(ask, timeout=10, context=lab.tls()) as answer:
            got: dict[str, Any] = json.loads(answer.read())
        return got if got.get("source") == "prometheus" and got["series"]["enforcementSuccess"] else None

    shown = wait_until(trends, "the controller's trends to come from Prometheus", timeout=30)
    assert shown["url"] == f"http://{prometheus.address()}"
    assert shown["series"]["enforcementSuccess"][-1][1] == 1.0
    # Then the fault (one test: the order of tests is random): an agent killed, the SLI halves,
    # and the fast-burn page fires.
    lab.kill9("agent-hv2")
    wait_until(lambda: value(lab, "stockade:agents_up:ratio") == 0.5, "the SLI to see one agent down", timeout=30)

    def paging() -> list[dict[str, Any]]:
        return [a for a in api(lab, "/api/v1/alerts")["alerts"]
                if a["labels"]["alertname"] == "StockadeAgentsDownBudgetBurn" and a["state"] == "firing"]

    [alert] = wait_until(paging, "the burn-rate alert to fire", timeout=30)
    assert alert["labels"]["severity"] == "page"
