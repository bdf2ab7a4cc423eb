"""Flow records outlive the controller (issue 19, "flows that last"): real packets make records, the
controller dies of SIGKILL and `lab up` starts it again, and `stockade flows` still lists the
earlier records with their seqs, then new ones numbered after them. The filters work on them."""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest

from tests.e2e.conftest import EXAMPLES, Lab, make_lab
from tests.e2e.test_three_tier import _probe
from tests.waiting import wait_until

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def shop_r(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    for lab in make_lab(tmp_path_factory.mktemp("flows19"), hosts=2):
        lab.cli("apply", "-f", str(EXAMPLES), "--wait", "--timeout", "60")
        yield lab


def records(lab: Lab, *extra: str) -> list[dict[str, Any]]:
    out = lab.cli("flows", "-o", "json", "--limit", "10000", *extra).stdout
    return [r for r in map(json.loads, out.splitlines()) if "seq" in r]


def web1_to_db1(r: dict[str, Any]) -> bool:
    return (r["src"]["workload"], r["dst"]["workload"], r["dst"]["port"]) == ("shop/web-1", "shop/db-1", 5432)


def test_flows_survive_a_controller_restart_with_their_seqs_and_new_ones_follow(shop_r: Lab) -> None:
    assert _probe(shop_r, "shop/web-1", "shop/db-1", "tcp", 5432, timeout=2.0) == "denied"
    assert _probe(shop_r, "shop/lb-1", "shop/web-2", "tcp", 8080) == "allowed"
    denied = wait_until(lambda: [r for r in records(shop_r) if web1_to_db1(r)], "the denied probe's record",
                        timeout=10, describe=lambda: records(shop_r))
    before = wait_until(lambda: (lambda rs: rs if any(r["dst"]["workload"] == "shop/web-2" for r in rs) else None)(
        records(shop_r)), "the allowed probe's records", timeout=10, describe=lambda: records(shop_r))
    flow_log = shop_r.state_dir / "controller.db.flows.jsonl"  # on by default, beside the lab's store
    assert {json.loads(x)["seq"] for x in flow_log.read_text().splitlines()} >= {r["seq"] for r in before}

    old_pid = shop_r.kill9("controller")
    shop_r.cli("lab", "up", "--hosts", "2")
    assert shop_r.pid("controller") != old_pid

    after = records(shop_r)
    by_seq = {r["seq"]: r for r in after}
    for r in before:  # every earlier record, with its seq, as it was served before the restart
        assert by_seq.get(r["seq"]) == r, (r, by_seq.get(r["seq"]))
    last_before = max(r["seq"] for r in before)
    # The filters (matched in the controller) find the earlier denied record too.
    found = records(shop_r, "--from", "shop/web-1", "--to", "db-1", "--port", "5432", "--verdict", "deny")
    assert [r["seq"] for r in found][:1] == [denied[0]["seq"]]
    assert all(r["verdict"] == "deny" and web1_to_db1(r) for r in found)

    # New records after the restart are numbered after the earlier ones.
    assert _probe(shop_r, "shop/web-1", "shop/db-1", "tcp", 5432, timeout=2.0) == "denied"
    fresh = wait_until(lambda: [r for r in records(shop_r, "--from", "shop/web-1") if r["seq"] > last_before],
                       "a record of the probe after the restart", timeout=15, describe=lambda: records(shop_r))
    assert web1_to_db1(fresh[0]) and fresh[0]["verdict"] == "deny"
    page = shop_r.client().flows(since_seq=last_before)
    assert page["records"] and all(r["seq"] > last_before for r in page["records"])
    assert page["firstSeq"] <= min(r["seq"] for r in before)  # the window holds the old and the new
