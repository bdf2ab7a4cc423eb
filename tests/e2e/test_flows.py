"""Flow records from real packets: each decision is recorded once, with the rule that made it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any, Iterator

import pytest

from tests.e2e.conftest import EXAMPLES, Lab, make_lab
from tests.e2e.test_three_tier import _probe
from tests.waiting import wait_until

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def shop3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    for lab in make_lab(tmp_path_factory.mktemp("flows"), hosts=2):
        lab.cli("apply", "-f", str(EXAMPLES), "--wait", "--timeout", "60")
        yield lab


def _records(lab: Lab, *extra: str) -> list[dict[str, Any]]:
    out = lab.cli("flows", "-o", "json", "--limit", "10000", *extra).stdout
    return [r for r in map(json.loads, out.splitlines()) if "seq" in r]


def _wait_records(lab: Lab, match, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = [r for r in _records(lab) if match(r)]
        if len(found) >= count:
            time.sleep(1.0)  # a window in which nothing may arrive: a duplicate would come with the next batches
            return [r for r in _records(lab) if match(r)]
        time.sleep(0.2)
    return found


def _between(src: str, dst: str, port: int, event: str = "start"):
    return lambda r: (r["src"]["workload"], r["dst"]["workload"], r["dst"]["port"], r.get("event", "start")) == \
        (src, dst, port, event)


def test_an_allowed_connection_is_recorded_once_per_side_with_its_rules(shop3: Lab) -> None:
    assert _probe(shop3, "shop/lb-1", "shop/web-2", "tcp", 8080) == "allowed"
    found = _wait_records(shop3, _between("shop/lb-1", "shop/web-2", 8080), 2)
    by_side = {(r["direction"], r["host"]): r for r in found}
    assert len(found) == 2, found
    assert by_side[("egress", "hv1")]["rule"] == "shop/lb/to-web"
    assert by_side[("ingress", "hv2")]["rule"] == "shop/web/http-from-lb"
    assert {r["verdict"] for r in found} == {"allow"}
    assert found[0]["src"]["port"] == found[1]["src"]["port"]  # the same connection


def test_a_denied_connection_is_recorded_once_with_the_default_deny(shop3: Lab) -> None:
    # a 3 s attempt: the SYN is retransmitted, and still only one record comes out
    assert _probe(shop3, "shop/web-1", "shop/db-1", "tcp", 5432, timeout=3.0) == "denied"
    found = _wait_records(shop3, _between("shop/web-1", "shop/db-1", 5432), 1)
    assert len(found) == 1, found
    assert (found[0]["verdict"], found[0]["rule"], found[0]["direction"]) == \
        ("deny", "shop/default-deny/egress", "egress")
    assert found[0]["src"]["namespace"] == "shop" and found[0]["dst"]["namespace"] == "shop"
    denied = _records(shop3, "--denied")
    assert denied and all(r["verdict"] in ("deny", "reject", "would-deny", "would-reject") for r in denied)


def test_an_audit_rule_records_would_deny_while_traffic_flows(shop3: Lab) -> None:
    shop3.apply_text("""
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: audit-lb, namespace: shop}
spec:
  tier: platform
  mode: audit
  appliesTo: {group: web}
  ingress: [{id: no-lb, action: deny, from: [{group: lb}]}]
""", "--wait", "--timeout", "60")
    try:
        assert _probe(shop3, "shop/lb-1", "shop/web-1", "tcp", 8080) == "allowed"
        found = _wait_records(shop3, lambda r: _between("shop/lb-1", "shop/web-1", 8080)(r)
                              and r["direction"] == "ingress", 2)
        verdicts = {r["verdict"]: r["rule"] for r in found}
        assert verdicts.get("would-deny") == "shop/audit-lb/no-lb", found
        assert verdicts.get("allow") == "shop/web/http-from-lb", found
    finally:
        shop3.cli("delete", "policy", "audit-lb", "-n", "shop", "--wait")


def test_follow_shows_a_new_record_within_a_second(shop3: Lab) -> None:
    follower = subprocess.Popen([sys.executable, "-m", "stockade", "flows", "--follow", "-o", "json",
                                 "--workload", "shop/app-1"], env=shop3.env, stdout=subprocess.PIPE,
                                text=True)
    try:
        # The follower prints what exists, then long-polls: a probe from now on is new to it.
        wait_until(lambda: shop3.controller_metrics().get(("stockade_controller_long_polls", (("kind", "flows"),)),
                                                          0) >= 1, "the follower's long-poll in the controller")
        assert _probe(shop3, "shop/db-1", "shop/app-1", "tcp", 9000, timeout=0.5) == "denied"
        sent = time.monotonic()
        import selectors
        sel = selectors.DefaultSelector()
        sel.register(follower.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
        got = None
        while time.monotonic() - sent < 3.0 and got is None:
            if sel.select(timeout=0.1):
                line = follower.stdout.readline()  # type: ignore[union-attr]
                rec = json.loads(line)
                if rec.get("dst", {}).get("workload") == "shop/app-1" and rec["dst"]["port"] == 9000:
                    got = time.monotonic() - sent
        assert got is not None and got < 1.0, got
    finally:
        follower.terminate()
        follower.wait(timeout=10)


def test_an_allowed_connection_ends_with_its_packets_and_bytes(shop3: Lab) -> None:
    assert _probe(shop3, "shop/app-1", "ops/dns-1", "udp", 53) == "allowed"
    started = _wait_records(shop3, _between("shop/app-1", "ops/dns-1", 53), 2)
    assert len(started) == 2
    # The connection ends when conntrack forgets it; delete it rather than wait out the UDP timeout.
    for host in ("hv1", "hv2"):
        subprocess.run(["ip", "netns", "exec", shop3.hv_netns(host), "conntrack", "-D", "-p", "udp",
                        "--orig-port-dst", "53"], capture_output=True, timeout=10)
    ended = _wait_records(shop3, _between("shop/app-1", "ops/dns-1", 53, "end"), 2)
    assert {(r["direction"], r["host"]) for r in ended} == {("egress", "hv2"), ("ingress", "hv1")}, ended
    for r in ended:
        assert r["packets"] >= 2 and r["bytes"] > 0 and r["replyPackets"] >= 1, r  # request + echo
        assert r["src"]["port"] == started[0]["src"]["port"]
