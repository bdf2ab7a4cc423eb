"""The topology routes over the real app (TestClient over build_app, a real SQLite store, real
tokens): the picture and reach for an operator, the answers agree with `trace_flow` for every
pair, and a tenant's attacks on another tenant (asking reach of its workload, reading its labels
or policies through the topology) learn nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from stockade.compile.trace import Flow, trace_flow
from stockade.controller.api import build_app
from stockade.controller.auth import create_token_file
from stockade.controller.config import ControllerConfig
from stockade.controller.service import ControllerService
from stockade.model.validation import ValidationSettings
from tests.controller.conftest import HOSTS
from tests.controller.controller_docs import group, namespace, policy, workload

API = "/api/v1"


def _world(service: ControllerService) -> None:
    """Tenant a's web and tenant b's secret database, each with a group and a policy."""
    service.apply([namespace("a", team="web"), namespace("b", team="warehouse"),
                   workload("web", ns="a", host="hv2", ips=["198.18.1.10", "2001:db8:1::10"], tier="web"),
                   workload("lb", ns="a", host="hv1", ips=["198.18.1.2"], tier="lb"),
                   workload("secret-db", ns="b", host="hv1", ips=["198.18.2.20"], tier="db", pci="yes"),
                   group("web", ns="a", tier="web"), group("lb", ns="a", tier="lb"),
                   group("db", ns="b", tier="db"),
                   policy("web-in", ns="a", applies_to="web", from_group="lb", port=443),
                   policy("db-in", ns="b", applies_to="db", port=6379)], "admin", "world")


@pytest.fixture
def http(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    tokens = create_token_file(tmp_path / "tokens.json", [
        {"name": "root", "role": "admin"},
        {"name": "watcher", "role": "viewer"},
        {"name": "tenant-a", "role": "tenant", "namespaces": ["a"]}])
    config = ControllerConfig(db_path=tmp_path / "stockade.db", tokens_file=tmp_path / "tokens.json",
                              validation=ValidationSettings(known_hosts=HOSTS))
    with TestClient(build_app(config)) as client:
        _world(client.app.state.service)  # type: ignore[attr-defined]
        yield client, tokens


def _get(client: TestClient, token: str | None, path: str, **params: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.get(f"{API}{path}", params=params, headers=headers)


def test_an_operator_sees_hosts_workloads_groups_and_policies(http: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = http
    r = _get(client, tokens["watcher"], "/topology")
    assert r.status_code == 200, r.text
    topo = r.json()
    assert {h["name"]: h["workloads"] for h in topo["hosts"]} == {"hv1": ["a/lb", "b/secret-db"], "hv2": ["a/web"]}
    web = next(w for w in topo["workloads"] if w["id"] == "a/web")
    assert web["labels"] == {"tier": "web"} and web["ips"] == ["198.18.1.10", "2001:db8:1::10"]
    assert {g["id"]: g["members"] for g in topo["groups"]} == {"a/lb": ["a/lb"], "a/web": ["a/web"],
                                                               "b/db": ["b/secret-db"]}
    web_in = next(p for p in topo["policies"] if p["id"] == "Policy:a/web-in")
    assert web_in["appliesTo"] == {"ingress": ["a/web"], "egress": []} and web_in["group"] == "a/web"


def test_every_reach_row_over_http_is_trace_flows_verdict(http: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = http
    state = client.app.state.service.desired_state()  # type: ignore[attr-defined]
    rows = 0
    for subject in sorted(state.workloads):
        r = _get(client, tokens["root"], "/topology/reach", workload=f"{subject[0]}/{subject[1]}")
        assert r.status_code == 200, r.text
        answer = r.json()
        for way in ("outgoing", "incoming"):
            for entry in answer[way]:
                peer = tuple(entry["peer"].split("/", 1))
                src, dst = (subject, peer) if way == "outgoing" else (peer, subject)
                for row in entry["rows"]:
                    # Every workload of this world has IPv4: the pair's family is 4.
                    flow = (Flow(src, dst, "icmp", None, row["family"], row["icmpType"], row["icmpCode"])
                            if row["protocol"] == "icmp" else Flow(src, dst, row["protocol"], row["port"], 4))
                    traced = trace_flow(state, flow)
                    assert (row["verdict"], row["rule"]) == (traced.verdict, traced.deciding_rule), (src, dst, row)
                    rows += 1
    assert rows >= 12
    lb_to_web = next(e for e in _get(client, tokens["root"], "/topology/reach", workload="a/lb").json()["outgoing"]
                     if e["peer"] == "a/web")
    assert {(r["label"], r["verdict"], r["rule"]) for r in lb_to_web["rows"]} >= {
        ("tcp/443", "deny", "a/default-deny/egress")}  # lb's own egress is closed: a's default


def test_a_tenant_asking_reach_of_another_tenants_workload_learns_nothing(
        http: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = http
    answers = []
    for ref in ("b/secret-db", "b/no-such-thing", "no-such-ns/x"):
        r = _get(client, tokens["tenant-a"], "/topology/reach", workload=ref)
        answers.append((r.status_code, r.json()["error"]))
        assert "secret" not in r.json()["message"].replace(ref, "")
    assert answers == [(403, "forbidden")] * 3
    # Its own unknown workload is a plain 404.
    assert _get(client, tokens["tenant-a"], "/topology/reach", workload="a/nope").status_code == 404


def test_a_tenant_reads_no_other_tenants_labels_policies_or_rules(http: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = http
    topo = _get(client, tokens["tenant-a"], "/topology").json()
    reach = _get(client, tokens["tenant-a"], "/topology/reach", workload="a/web").json()
    for answer in (topo, reach):
        text = str(answer)
        for secret in ("secret-db", "pci", "warehouse", "db-in", "6379", "198.18.2.20"):
            assert secret not in text, f"a tenant reads {secret!r} of namespace b: {text}"
    assert {w["namespace"] for w in topo["workloads"]} == {"a"}
    assert [h["workloads"] for h in topo["hosts"]] == [["a/lb"], ["a/web"]]
    assert [e["peer"] for e in reach["incoming"]] == ["a/lb", "b/(hidden)"]
    hidden = reach["incoming"][1]
    assert hidden["hidden"] is True and {r["rule"] for r in hidden["rows"]} == {"b/(hidden)"}


@pytest.mark.parametrize("ref", ["web", "a/", "/web", "a/web/x"])
def test_a_malformed_workload_is_refused_naming_the_parameter(http: tuple[TestClient, dict[str, str]],
                                                              ref: str) -> None:
    client, tokens = http
    r = _get(client, tokens["root"], "/topology/reach", workload=ref)
    assert r.status_code == 422 and "query.workload" in r.json()["message"], r.text


def test_without_a_token_nothing_is_shown(http: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = http
    for path, params in (("/topology", {}), ("/topology/reach", {"workload": "a/web"})):
        r = _get(client, None, path, **params)
        assert r.status_code == 401 and "web" not in r.text


def test_the_openapi_document_describes_both_answers(http: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = http
    doc = client.get("/openapi.json").json()
    for path, schema in (("/api/v1/topology", "TopologyResponse"), ("/api/v1/topology/reach", "ReachResponse")):
        answer = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert answer["$ref"].endswith("/" + schema), path
    groups = _get(client, tokens["root"], "/topology").json()["groups"]
    assert all(set(g) == {"id", "namespace", "name", "members", "cidrs", "except"} for g in groups)
