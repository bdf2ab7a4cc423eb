"""The agent keeps enforcing when the controller is gone, and `apply --wait` names a host that lags."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.e2e.conftest import EXAMPLES, Lab, make_lab
from tests.e2e.test_three_tier import _probe
from tests.waiting import wait_until

CONTROLLER_ERRORS = ("stockade_agent_controller_errors_total", ())

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def shop2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    for lab in make_lab(tmp_path_factory.mktemp("resilience"), hosts=2):
        lab.cli("apply", "-f", str(EXAMPLES), "--wait", "--timeout", "60")
        yield lab


def test_agents_keep_enforcing_while_the_controller_is_down(shop2: Lab) -> None:
    before = {h: shop2.nft(h, "list", "table", "inet", "stockade").stdout for h in ("hv1", "hv2")}
    workloads = {ref: shop2.workload(ref) for ref in ("shop/lb-1", "shop/web-2", "shop/web-1", "shop/db-1")}
    errors = {h: shop2.agent_metrics(h).get(CONTROLLER_ERRORS, 0.0) for h in ("hv1", "hv2")}
    shop2.kill9("controller")
    for h in ("hv1", "hv2"):  # each agent has tried and failed to reach the controller, repeatedly
        wait_until(lambda: shop2.agent_metrics(h).get(CONTROLLER_ERRORS, 0.0) >= errors[h] + 3,
                   f"agent {h} to count 3 failed watches of the dead controller", timeout=15)
    for h in ("hv1", "hv2"):
        assert shop2.nft(h, "list", "table", "inet", "stockade").returncode == 0
        strip = lambda s: "\n".join(l for l in s.splitlines() if "counter" not in l)  # noqa: E731
        assert strip(shop2.nft(h, "list", "table", "inet", "stockade").stdout) == strip(before[h])
    from stockade.lab.probe import probe

    def verdict(src: str, dst: str, port: int) -> str:
        s, d = workloads[src], workloads[dst]
        ip = next(i for i in d["status"]["ips"] if ":" not in i)
        return probe(s["status"]["netns"], d["status"]["netns"], ip, "tcp", port).verdict

    assert verdict("shop/lb-1", "shop/web-2", 8080) == "allowed"
    assert verdict("shop/web-1", "shop/db-1", 5432) == "denied"
    # The controller comes back (lab up restarts what died); agents resync and new changes flow again.
    shop2.cli("lab", "up", "--hosts", "2")
    shop2.apply_text("""
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: web-to-db, namespace: shop}
spec:
  appliesTo: {group: web}
  egress: [{id: sql, action: allow, to: [{group: db}], ports: [{protocol: TCP, port: 5432}]}]
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: db-from-web, namespace: shop}
spec:
  appliesTo: {group: db}
  ingress: [{id: sql, action: allow, from: [{group: web}], ports: [{protocol: TCP, port: 5432}]}]
""", "--wait", "--timeout", "60")
    assert _probe(shop2, "shop/web-1", "shop/db-1", "tcp", 5432) == "allowed"
    shop2.cli("delete", "policy", "web-to-db", "-n", "shop", "--wait")
    assert _probe(shop2, "shop/web-1", "shop/db-1", "tcp", 5432) == "denied"


def test_apply_wait_times_out_naming_the_host_that_lags(shop2: Lab) -> None:
    shop2.kill9("agent-hv2")
    try:
        res = shop2.apply_text("""
apiVersion: stockade.io/v1
kind: Workload
metadata: {name: late, namespace: shop}
spec: {host: hv2}
""", "--wait", "--timeout", "2", check=False)
        assert res.returncode == 7, res
        assert "hv2" in res.stderr and "revision" in res.stderr, res.stderr
        assert "hv1" not in res.stderr.split("agents")[-1].split("hv2")[0]
    finally:
        shop2.cli("lab", "up", "--hosts", "2")  # restarts the agent
    # Once back, the agent catches up with everything it missed.
    shop2.cli("apply", "-f", str(EXAMPLES), "--wait", "--timeout", "60")
    late = shop2.workload("shop/late")
    assert late["status"].get("netns", "").startswith(f"{shop2.prefix}-hv2.")
