"""The agent loop against a real controller (HTTP) and a real kernel (a scratch netns).

Behaviours: nothing is programmed before the first full sync; a change in the
store reaches the kernel through the watch; the agent reports what it enforces;
its metrics count the transactions and expose per-rule counters by rule id.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client import generate_latest

from stockade.agent.loop import Agent, AgentConfig
from stockade.agent.metrics import AgentMetrics
from stockade.agent.reconciler import Reconciler
from stockade.client import ControllerClient
from stockade.controller.auth import create_token_file
from stockade.controller.config import ControllerConfig
from stockade.controller.main import start_in_thread
from stockade.dataplane.nft_driver import NftDriver, run_command

pytestmark = pytest.mark.kernel

SHOP = """
apiVersion: stockade.io/v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {name: web-1, namespace: shop, labels: {tier: web}}
spec: {host: hv1, ips: [198.18.10.11]}
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: web, namespace: shop}
spec:
  appliesTo: {selector: {matchLabels: {tier: web}}}
  ingress: [{id: http, action: allow, ports: [{protocol: TCP, port: 80}]}]
"""


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"stka-{uuid.uuid4().hex[:10]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _driver(netns: str) -> NftDriver:
    return NftDriver(runner=lambda cmd, stdin=None: run_command(["ip", "netns", "exec", netns, *cmd], stdin))


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[tuple[ControllerClient, ControllerClient]]:
    tokens = create_token_file(tmp_path / "tokens.json", [{"name": "admin", "role": "admin"},
                                                          {"name": "hv1", "role": "agent", "host": "hv1"}])
    running = start_in_thread(ControllerConfig(db_path=tmp_path / "c.db", tokens_file=tmp_path / "tokens.json"))
    try:
        yield ControllerClient(running.url, tokens["admin"]), ControllerClient(running.url, tokens["hv1"])
    finally:
        running.stop()


async def _run_until(agent: Agent, predicate, timeout: float = 10.0) -> bool:
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            if await asyncio.to_thread(predicate):
                return True
            await asyncio.sleep(0.1)
        return False
    finally:
        stop.set()
        await task


def _fast() -> AgentConfig:
    return AgentConfig(host="hv1", watch_timeout=2.0, drift_interval=0.2, heartbeat_interval=0.5,
                       retry_interval=0.2)


def test_nothing_is_programmed_before_the_first_full_sync(netns: str) -> None:
    driver = _driver(netns)
    unreachable = ControllerClient("http://127.0.0.1:9", "t", timeout=0.5)
    agent = Agent(_fast(), unreachable, Reconciler(driver, "hv1"))
    programmed = asyncio.run(_run_until(agent, lambda: driver.list_table() is not None, timeout=2.0))
    assert programmed is False
    assert driver.list_table() is None


def test_watch_brings_changes_to_the_kernel_and_status_reports_them(netns: str, controller) -> None:
    admin, agent_client = controller
    driver = _driver(netns)
    reconciler = Reconciler(driver, "hv1")
    metrics = AgentMetrics(reconciler)
    agent = Agent(_fast(), agent_client, reconciler, on_outcome=metrics.observe)

    async def scenario() -> bool:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            await asyncio.sleep(0.5)  # first sync of the empty store
            result = await asyncio.to_thread(admin.apply, list(yaml.safe_load_all(SHOP)), "test")
            rev = int(result["revision"])
            for _ in range(100):
                status = await asyncio.to_thread(admin.status)
                hv1 = [a for a in status["agents"] if a["host"] == "hv1"]
                if hv1 and hv1[0]["revision"] == rev and hv1[0]["inSync"]:
                    return True
                await asyncio.sleep(0.1)
            return False
        finally:
            stop.set()
            await task

    assert asyncio.run(scenario())
    listing = subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "table", "inet", "stockade"],
                             capture_output=True, text=True).stdout
    assert 'comment "shop/web/http"' in listing
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())}
    ok = [s for s in families["stockade_agent_transactions"].samples
          if s.name.endswith("_total") and s.labels.get("result") == "ok"]
    assert sum(s.value for s in ok) >= 2  # the empty program, then the shop
    rules = {s.labels["rule"] for s in families["stockade_rule_packets"].samples}
    assert "shop/web/http" in rules and "shop/default-deny/ingress" in rules
    assert families["stockade_agent_enforced_revision"].samples[0].value >= 1
