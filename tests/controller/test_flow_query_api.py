"""GET /api/v1/flows's Hubble-like filters and the flow log over real HTTP (the real app in a thread):
filters, a 422 naming the field, a tenant that tries to learn another tenant's names by filtering,
and records (with their seqs) that outlive a controller restart."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from stockade.client import ControllerClient
from stockade.controller.api import build_app
from stockade.controller.config import ControllerConfig
from stockade.controller.main import RunningController, start_in_thread
from stockade.errors import ValidationError
from tests.controller.test_flows import metrics, record


@pytest.fixture
def config(config: ControllerConfig, tmp_path: Path) -> ControllerConfig:
    return replace(config, flow_log=tmp_path / "stockade.db.flows.jsonl")


def seqs(page: dict[str, Any]) -> list[int]:
    return [r["seq"] for r in page["records"]]


def test_filters_combine_and_match_in_the_controller(admin: ControllerClient, agent: ControllerClient,
                                                     controller: RunningController, tokens: dict[str, str]) -> None:
    agent.send_flows("hv1", [
        record("allow"),                                                            # 1
        record("deny", src="bank/app", port=22),                                    # 2
        record("would-deny", dst=None, port=443),                                   # 3
        record("reject", protocol="udp", port=53, rule="shop/dns/out"),             # 4
    ])
    assert seqs(admin.flows(filters={"from": "bank/app"})) == [2]
    assert seqs(admin.flows(filters={"to": "db-1"})) == [1, 2, 4]
    assert seqs(admin.flows(filters={"verdict": ["deny", "reject"]})) == [2, 4]
    assert seqs(admin.flows(filters={"port": 443})) == [3]
    assert seqs(admin.flows(filters={"protocol": "udp"})) == [4]
    assert seqs(admin.flows(filters={"rule": "shop/dns/out"})) == [4]
    assert seqs(admin.flows(filters={"to": "198.18.10.12", "verdict": ["denied"]})) == [2, 3, 4]
    assert seqs(admin.flows(limit=2, filters={"to": "shop/db-1"})) == [2, 4]  # --last 2
    # The raw query string, as the dashboard sends it.
    answer = httpx.get(f"{controller.url}/api/v1/flows?from=bank%2Fapp&verdict=deny&verdict=allow",
                       headers={"Authorization": f"Bearer {tokens['alice']}"})
    assert answer.status_code == 200 and seqs(answer.json()) == [2]


@pytest.mark.parametrize("filters,field", [
    ({"verdict": ["dney"]}, "query.verdict"),
    ({"from": "a/b/c"}, "query.from"),
    ({"to": "not an address!"}, "query.to"),
    ({"protocol": "t c p"}, "query.protocol"),
    ({"port": 70000}, "port"),
])
def test_a_bad_filter_is_a_422_naming_the_field(admin: ControllerClient, filters: dict[str, Any],
                                                field: str) -> None:
    with pytest.raises(ValidationError) as e:
        admin.flows(filters=filters)
    assert field in json.dumps(e.value.to_dict())


def test_a_tenant_cannot_learn_another_tenants_names_by_filtering(admin: ControllerClient, agent: ControllerClient,
                                                                  controller: RunningController) -> None:
    """The attack: shop's tenant guesses bank's workload and rule names. If a guess returned the
    (redacted) record, the guess would be proven right. Only what shop is shown may match."""
    agent.send_flows("hv1", [record("deny", src="shop/web-1", dst="bank/secret-db",
                                    rule="bank/their-policy/their-rule")])
    secret = admin.create_token("tenant", ["shop"], name="shop-team")["token"]
    with ControllerClient(controller.url, secret) as tenant:
        for guess in ({"rule": "bank/their-policy/their-rule"}, {"to": "bank/secret-db"}, {"to": "secret-db"}):
            assert tenant.flows(filters=guess)["records"] == [], guess
            assert seqs(admin.flows(filters=guess)) == [1], guess  # the guess is right: an operator sees it
        # What the tenant is shown, it may filter on; the record comes redacted.
        [shown] = tenant.flows(filters={"rule": "bank/(hidden)", "to": "198.18.10.12"})["records"]
        assert shown["dst"]["workload"] == "bank/(hidden)" and shown["rule"] == "bank/(hidden)"
        assert seqs(tenant.flows(filters={"from": "shop/web-1"})) == [1]


def test_records_and_their_seqs_outlive_a_restart_and_new_ones_number_on(
        config: ControllerConfig, short_dir: Path, tokens: dict[str, str]) -> None:
    def run() -> RunningController:
        return start_in_thread(config, unix_socket=short_dir / "ctl.sock", app=build_app(config))

    first = run()
    try:
        assert first.unix_url is not None
        with ControllerClient(first.unix_url, tokens["agent-hv1"]) as agent:
            agent.send_flows("hv1", [record("allow"), record("deny", port=22)])
            agent.send_flows("hv1", [record("reject", port=23)])
        assert metrics(first)["stockade_controller_flow_sink_records_total[('sink', 'file')]"] == 3
    finally:
        first.stop()
    lines = [json.loads(x) for x in config.flow_log.read_text().splitlines()]  # type: ignore[union-attr]
    assert [(x["seq"], x["verdict"]) for x in lines] == [(1, "allow"), (2, "deny"), (3, "reject")]
    assert all(x["received"].endswith("+00:00") and "token" not in json.dumps(x).lower() for x in lines)

    second = run()
    try:
        with ControllerClient(second.url, tokens["alice"]) as admin:
            page = admin.flows()
            assert [(r["seq"], r["verdict"]) for r in page["records"]] == [(1, "allow"), (2, "deny"), (3, "reject")]
            assert page["lastSeq"] == 3 and page["firstSeq"] == 1
            assert page["records"][1] == {k: v for k, v in lines[1].items() if k != "received"}  # as served before
            assert second.unix_url is not None
            with ControllerClient(second.unix_url, tokens["agent-hv1"]) as agent:
                assert agent.send_flows("hv1", [record("allow", port=80)])["lastSeq"] == 4
            assert seqs(admin.flows(since_seq=3)) == [4]  # a follower that had seq 3 goes on
            assert seqs(admin.flows(filters={"verdict": ["deny"]})) == [2]
    finally:
        second.stop()
