"""Seeing the firewall: status shows drift and silent agents, metrics move with traffic and
rollouts, and a flood of denied packets is bounded and honestly counted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from stockade.dataplane.nft_driver import counters_by_comment
from tests.e2e.conftest import EXAMPLES, Lab, make_lab
from tests.e2e.test_three_tier import _probe
from tests.waiting import wait_until

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def obs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    for lab in make_lab(tmp_path_factory.mktemp("obs"), hosts=2):
        lab.cli("apply", "-f", str(EXAMPLES), "--wait", "--timeout", "60")
        yield lab


def _agent(lab: Lab, host: str) -> dict[str, Any]:
    return next(a for a in lab.json("status")["agents"] if a["host"] == host)


def test_status_shows_drift_after_a_hand_edit_and_clean_state_after_repair(obs: Lab) -> None:
    before = _agent(obs, "hv1")["driftRepairs"]
    assert obs.nft("hv1", "flush", "chain", "inet", "stockade", "egress").returncode == 0
    wait_until(lambda: _agent(obs, "hv1")["driftRepairs"] > before, "hv1 to report a drift repair", timeout=10)
    agent = _agent(obs, "hv1")
    assert agent["lastDriftAt"] and agent["inSync"] is True
    table = obs.cli("status").stdout
    assert "drift repaired" in table and "in sync" in table
    assert _probe(obs, "shop/web-1", "shop/db-1", "tcp", 5432) == "denied"


def test_metrics_of_controller_and_agents_move_with_rollouts_and_traffic(obs: Lab) -> None:
    controller = obs.controller_metrics()
    assert controller[("stockade_controller_revision", ())] >= 1
    assert controller[("stockade_policy_rollout_seconds_count", ())] >= 2  # both agents, first apply
    rule = ("stockade_rule_packets_total", (("direction", "ingress"), ("namespace", "shop"), ("policy", "web"),
                                            ("rule", "shop/web/http-from-lb")))
    before = obs.agent_metrics("hv2").get(rule, 0.0)
    for _ in range(3):
        assert _probe(obs, "shop/lb-1", "shop/web-2", "tcp", 8080) == "allowed"
    after = obs.agent_metrics("hv2")
    assert after[rule] >= before + 3                      # one new connection each
    assert after[("stockade_agent_transactions_total", (("kind", "full"), ("result", "ok")))] >= 1
    assert after[("stockade_agent_in_sync", ())] == 1
    rollouts = controller[("stockade_policy_rollout_seconds_count", ())]
    obs.apply_text("""
apiVersion: stockade.io/v1
kind: Group
metadata: {name: spare, namespace: shop}
spec: {cidrs: [198.19.77.0/24]}
""", "--wait")
    wait_until(lambda: obs.controller_metrics()[("stockade_policy_rollout_seconds_count", ())] >= rollouts + 2,
               "both agents' rollouts to be observed", timeout=10)


def test_an_agent_that_stops_reporting_is_shown_as_such(obs: Lab) -> None:
    pid = int((obs.state_dir / "run" / "agent-hv2.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    try:
        wait_until(lambda: _agent(obs, "hv2")["reporting"] is False, "hv2 to be shown as not reporting",
                   timeout=25, interval=0.5)
        assert "unknown" in obs.cli("status").stdout
    finally:
        obs.cli("lab", "up", "--hosts", "2")
    wait_until(lambda: _agent(obs, "hv2")["reporting"] is True, "hv2 to report again", timeout=15)


FLOOD = """
import socket, sys, time
dst, count = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 10          # bounded in time as well as in count
sent = 0
while sent < count and time.monotonic() < deadline:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 20000 + sent))  # a distinct source port for each: 5000 distinct "connections"
    s.sendto(b"x", (dst, 7))
    s.close()
    sent += 1
print(sent)
"""


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_a_flood_of_denied_packets_is_bounded_and_every_packet_is_accounted(obs: Lab) -> None:
    obs.apply_text("""
apiVersion: stockade.io/v1
kind: Namespace
metadata: {name: flood}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {name: src, namespace: flood}
spec: {host: hv1}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {name: dst, namespace: flood}
spec: {host: hv2}
""", "--wait")
    src, dst = obs.workload("flood/src"), obs.workload("flood/dst")
    rule = "flood/default-deny/egress"
    agent_pid = int((obs.state_dir / "run" / "agent-hv1.pid").read_text())
    rss_before = _rss_kib(agent_pid)
    sent = int(subprocess.run(["nsenter", f"--net=/run/netns/{src['status']['netns']}", sys.executable, "-c",
                               FLOOD, next(ip for ip in dst["status"]["ips"] if ":" not in ip), "5000"],
                              capture_output=True, text=True, timeout=60, check=True).stdout)
    assert sent == 5000
    # The agent stays responsive: a change is enforced everywhere promptly right after the flood.
    started = time.monotonic()
    obs.apply_text("""
apiVersion: stockade.io/v1
kind: Group
metadata: {name: after-flood, namespace: flood}
spec: {cidrs: [198.19.78.0/24]}
""", "--wait", "--timeout", "10")
    assert time.monotonic() - started < 10

    def accounted() -> tuple[int, int, int]:
        listing = json.loads(obs.nft("hv1", "-j", "list", "table", "inet", "stockade").stdout)
        matched = counters_by_comment(listing).get(rule, (0, 0))[0]
        ctx = obs.context()
        req = urllib.request.Request(f"{ctx.controller}/api/v1/flows?workload=flood/src&limit=10000",
                                     headers={"Authorization": f"Bearer {ctx.token}"})
        page = json.loads(urllib.request.urlopen(req, timeout=10, context=obs.tls()).read())
        records = sum(1 for r in page["records"] if r["rule"] == rule)
        dropped = sum(page["dropped"].get("hv1", {}).values())
        return matched, records, dropped

    # Every packet the rule matched is either a record or counted as dropped/sampled.
    wait_until(lambda: (lambda m, r, d: m >= sent and r + d >= m)(*accounted()),
               "every matched packet to be a record or counted as dropped", timeout=15,
               describe=lambda: (accounted(), obs.cli("flows", "-o", "json", "--limit", "5").stdout[-600:]))
    matched, records, dropped = accounted()
    assert records + dropped == matched, (matched, records, dropped)
    assert records < sent / 2          # the kernel rate limit held the record stream down
    assert dropped > 0
    assert _rss_kib(agent_pid) < max(rss_before * 2, 200_000)   # memory stays bounded
