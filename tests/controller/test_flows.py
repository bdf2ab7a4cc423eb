"""Flow records in the controller, over real HTTP: ingest, query, filters, follow, bounds, auth, metrics."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stockade.client import ControllerClient
from stockade.controller.api import build_app
from stockade.controller.config import ControllerConfig
from stockade.controller.main import RunningController, start_in_thread
from stockade.errors import Forbidden, ValidationError
from stockade.model.validation import ValidationSettings
from tests.controller.conftest import HOSTS, wait_for_long_polls
from tests.controller.controller_docs import shop

HISTORY = 40


@pytest.fixture
def config(tmp_path: Path, tokens: dict[str, str]) -> ControllerConfig:
    # A small history, so eviction is cheap to reach.
    return ControllerConfig(db_path=tmp_path / "stockade.db", tokens_file=tmp_path / "tokens.json",
                            validation=ValidationSettings(known_hosts=HOSTS), flow_history=HISTORY)


def record(verdict: str = "allow", src: str = "shop/web-1", dst: str = "shop/db-1", host: str = "hv1",
           time_: str = "2026-11-24T10:00:00Z", port: int = 5432, **extra: Any) -> dict[str, Any]:
    def end(ref: str | None, ip: str, p: int | None) -> dict[str, Any]:
        return {"ip": ip, "port": p, "workload": ref, "namespace": ref.split("/")[0] if ref else None}
    return {"time": time_, "host": host, "direction": "egress", "verdict": verdict,
            "rule": "shop/web-egress/to-db", "protocol": "tcp", "family": 4,
            "src": end(src, "198.18.10.11", 40000), "dst": end(dst, "198.18.10.12", port),
            "icmpType": None, "packets": 1, "bytes": 60, **extra}


def metrics(controller: RunningController) -> dict[str, Any]:
    text = httpx.get(f"{controller.url}/metrics").text
    return {s.name + repr(sorted(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_records_sent_by_an_agent_come_back_with_seq_in_order(admin: ControllerClient,
                                                             agent: ControllerClient) -> None:
    answer = agent.send_flows("hv1", [record(), record("deny", port=22)], dropped=3)
    assert answer == {"accepted": 2, "lastSeq": 2}
    page = admin.flows()
    assert [r["seq"] for r in page["records"]] == [1, 2]
    assert page["records"][1]["verdict"] == "deny" and page["records"][1]["dst"]["port"] == 22
    assert page["records"][0]["time"] == "2026-11-24T10:00:00.000000+00:00"
    assert page["lastSeq"] == 2 and page["more"] is False
    assert page["dropped"] == {"hv1": {"agent": 3, "evicted": 0}}
    assert page["received"] == {"hv1": 2}


def test_filters_namespace_workload_denied_since_and_since_seq(admin: ControllerClient,
                                                              agent: ControllerClient) -> None:
    agent.send_flows("hv1", [
        record("allow", time_="2026-11-24T10:00:00Z"),                               # 1
        record("deny", src="bank/app", dst="shop/db-1", time_="2026-11-24T10:01:00Z"),  # 2
        record("would-deny", src="ops/mon", dst=None, time_="2026-11-24T10:02:00Z"),   # 3
        record("reject", time_="2026-11-24T10:03:00+01:00"),                          # 4: 09:03 UTC
        record("log", src="bank/app", dst="bank/db", time_="2026-11-24T10:04:00Z"),  # 5
        record("would-reject", time_="2026-11-24T10:05:00Z"),                       # 6
    ])
    seqs = lambda page: [r["seq"] for r in page["records"]]  # noqa: E731
    assert seqs(admin.flows(denied=True)) == [2, 3, 4, 6]
    assert seqs(admin.flows(namespace="bank")) == [2, 5]
    assert seqs(admin.flows(namespace="ops", denied=True)) == [3]
    assert seqs(admin.flows(workload="shop/db-1")) == [1, 2, 4, 6]
    assert seqs(admin.flows(since="2026-11-24T10:01:00Z")) == [2, 3, 5, 6]
    assert seqs(admin.flows(since="2026-11-24T11:01:30+01:00")) == [3, 5, 6]  # zones are honoured
    assert seqs(admin.flows(since_seq=4)) == [5, 6]
    tail = admin.flows(limit=2)  # no since_seq: the newest
    assert seqs(tail) == [5, 6] and tail["lastSeq"] == 6
    paged = admin.flows(since_seq=0, limit=2)  # since_seq: the oldest after it, and where to resume
    assert seqs(paged) == [1, 2] and paged["lastSeq"] == 2 and paged["more"] is True
    assert seqs(admin.flows(since_seq=paged["lastSeq"], limit=10)) == [3, 4, 5, 6]
    with pytest.raises(ValidationError) as caught:
        admin.flows(since="yesterday")
    assert "since" in str(caught.value.problems[0])


def test_follow_returns_within_a_second_of_a_new_matching_record(controller: RunningController,
                                                                 tokens: dict[str, str],
                                                                 agent: ControllerClient) -> None:
    agent.send_flows("hv1", [record()])
    got: dict[str, Any] = {}

    def follow() -> None:
        with ControllerClient(controller.url, tokens["alice"]) as c:
            got["page"] = c.flows(since_seq=1, denied=True, follow_timeout=20)
            got["at"] = time.monotonic()

    t = threading.Thread(target=follow)
    t.start()
    wait_for_long_polls(controller, "flows")
    agent.send_flows("hv1", [record("allow")])  # does not match: the poll keeps waiting
    time.sleep(0.3)  # a window in which nothing may happen: the wrong record must not end the poll
    assert t.is_alive()
    sent = time.monotonic()
    agent.send_flows("hv1", [record("deny")])
    t.join(5)
    assert not t.is_alive()
    assert got["at"] - sent < 1.0
    assert [(r["seq"], r["verdict"]) for r in got["page"]["records"]] == [(3, "deny")]
    assert got["page"]["lastSeq"] == 3


def test_follow_times_out_empty_with_the_position_to_resume_from(admin: ControllerClient,
                                                                 agent: ControllerClient) -> None:
    agent.send_flows("hv1", [record()])
    started = time.monotonic()
    page = admin.flows(since_seq=1, follow_timeout=0.3)
    assert 0.25 < time.monotonic() - started < 3
    assert page["records"] == [] and page["lastSeq"] == 1


def test_bounded_history_evicts_the_oldest_and_counts_them(controller: RunningController,
                                                          admin: ControllerClient,
                                                          agent: ControllerClient) -> None:
    for _ in range(3):
        agent.send_flows("hv1", [record() for _ in range(20)])
    page = admin.flows(limit=1000)
    assert len(page["records"]) == HISTORY
    assert page["records"][0]["seq"] == 60 - HISTORY + 1 and page["lastSeq"] == 60
    assert page["firstSeq"] == 21
    assert page["dropped"] == {"hv1": {"agent": 0, "evicted": 20}}
    agent.send_flows("hv1", [], dropped=5)
    m = metrics(controller)
    assert m["stockade_controller_flow_records_received_total[('host', 'hv1')]"] == 60
    assert m["stockade_controller_flow_records_lost_total[('host', 'hv1')]"] == 25


def test_agent_token_sends_flows_only_for_its_own_host(admin: ControllerClient, agent: ControllerClient) -> None:
    with pytest.raises(Forbidden):
        agent.send_flows("hv2", [record(host="hv2")])
    with pytest.raises(ValidationError) as caught:  # its own host, but a record naming another
        agent.send_flows("hv1", [record(), record(host="hv2")])
    assert [p.field for p in caught.value.problems] == ["records.1.host"]
    assert admin.flows()["records"] == []  # all or nothing
    with pytest.raises(ValidationError):
        admin.send_flows("hv9", [record(host="hv9")])  # not a known host


@pytest.mark.parametrize("change, field", [
    ({"verdict": "maybe"}, "body.records.0.verdict"),
    ({"time": "10:00"}, "body.records.0.time"),
    ({"time": "2026-11-24T10:00:00"}, "body.records.0.time"),          # no zone
    ({"family": 5}, "body.records.0.family"),
    ({"packets": "3"}, "body.records.0.packets"),                     # strict: no coercion
    ({"packets": -1}, "body.records.0.packets"),
    ({"colour": "red"}, "body.records.0.colour"),                     # unknown field
    ({"src": {"ip": "300.1.1.1", "port": 1, "workload": None, "namespace": None}}, "body.records.0.src.ip"),
    ({"dst": {"ip": "198.18.0.1", "port": 70000, "workload": None, "namespace": None}}, "body.records.0.dst.port"),
    ({"dst": {"ip": "198.18.0.1", "port": 1, "workload": "no-slash", "namespace": None}},
     "body.records.0.dst.workload"),
    ({"family": 6}, "body.records.0"),                                # addresses are IPv4
    ({"event": "stop"}, "body.records.0.event"),
    ({"event": None}, "body.records.0.event"),
    ({"replyBytes": -1}, "body.records.0.replyBytes"),
    ({"replyPackets": 2.0}, "body.records.0.replyPackets"),            # strict: no float
])
def test_bad_records_are_422_naming_the_field(agent: ControllerClient, admin: ControllerClient,
                                              change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        agent.send_flows("hv1", [{**record(), **change}])
    assert caught.value.http_status == 422
    assert field in [p.field for p in caught.value.problems], caught.value.problems
    assert admin.flows()["records"] == []


def test_start_and_end_records_keep_their_event_and_counts(agent: ControllerClient,
                                                          admin: ControllerClient) -> None:
    start = record()
    del start["packets"], start["bytes"]                              # an older agent: no event, no counts
    end = record(event="end", packets=12, bytes=10500, replyPackets=5, replyBytes=9000,
                 time_="2026-11-24T10:02:00Z")
    agent.send_flows("hv1", [start, end])
    got = admin.flows()["records"]
    assert [(r["event"], r["packets"], r["bytes"], r["replyPackets"], r["replyBytes"]) for r in got] == [
        ("start", None, None, None, None), ("end", 12, 10500, 5, 9000)]


def test_batches_are_bounded_and_dropped_is_not_negative(agent: ControllerClient) -> None:
    with pytest.raises(ValidationError) as caught:
        agent.send_flows("hv1", [record()] * 5001)
    assert [p.field for p in caught.value.problems] == ["body.records"]
    with pytest.raises(ValidationError):
        agent.send_flows("hv1", [], dropped=-1)


def test_rollout_histogram_observes_once_per_host_and_revision(controller: RunningController,
                                                               admin: ControllerClient,
                                                               agent: ControllerClient) -> None:
    rev = admin.apply(shop(), "shop")["revision"]
    count = "stockade_policy_rollout_seconds_count[]"
    assert metrics(controller)[count] == 0
    agent.report_status("hv1", revision=rev, in_sync=False, error="nft failed")  # not enforcing it yet
    assert metrics(controller)[count] == 0
    agent.report_status("hv1", revision=rev, in_sync=True)
    m = metrics(controller)
    assert m[count] == 1
    assert 0 <= m["stockade_policy_rollout_seconds_sum[]"] < 30
    assert m["stockade_policy_rollout_seconds_bucket[('le', '+Inf')]"] == 1
    agent.report_status("hv1", revision=rev, in_sync=True)  # the same revision again: no new observation
    assert metrics(controller)[count] == 1
    assert m["stockade_controller_host_lag_revisions[('host', 'hv1')]"] == 0
    rev2 = admin.apply([{**shop()[1], "metadata": {**shop()[1]["metadata"], "labels": {"tier": "x"}}}])["revision"]
    assert rev2 == rev + 1
    assert metrics(controller)["stockade_controller_host_lag_revisions[('host', 'hv1')]"] == 1


def test_rollout_is_not_measured_again_after_a_controller_restart(config: ControllerConfig, short_dir: Path,
                                                                 tokens: dict[str, str]) -> None:
    def run() -> Iterator[RunningController]:
        running = start_in_thread(config, unix_socket=short_dir / "ctl.sock", app=build_app(config))
        try:
            yield running
        finally:
            running.stop()

    for round_ in range(2):
        for running in run():
            with ControllerClient(running.url, tokens["alice"]) as admin, \
                    ControllerClient(running.url, tokens["agent-hv1"]) as agent:
                rev = admin.apply(shop(), "shop")["revision"]
                agent.report_status("hv1", revision=rev, in_sync=True)
                assert metrics(running)["stockade_policy_rollout_seconds_count[]"] == (1 if round_ == 0 else 0)


def test_metrics_parse_with_prometheus_client(controller: RunningController, agent: ControllerClient) -> None:
    agent.send_flows("hv1", [record()])
    agent.report_status("hv1", revision=0, in_sync=True)
    names = {fam.name for fam in text_string_to_metric_families(httpx.get(f"{controller.url}/metrics").text)}
    assert {"stockade_controller_flow_records_received", "stockade_controller_flow_records_lost",
            "stockade_policy_rollout_seconds", "stockade_controller_host_lag_revisions",
            "stockade_controller_host_reporting", "stockade_controller_revision"} <= names
    # No name is also an agent's (issue 19): what the controller says of hosts is named for it.
    assert not {n for n in names if n.startswith("stockade_agent_")}
