"""Issue 13, item 9: a tenant reads only what is its own, through every answer that mixes it with
others': object reads (403 whether or not the object exists), delete and resourceVersion answers,
validation problems, status, flow records and the flows `diff` replays.

Each test is an attack a tenant of `a` could make on `b` before the fix; it passes only when the
answer tells `a` nothing about `b`'s objects it could not read directly.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from stockade.controller.api import build_app
from stockade.controller.auth import Principal, create_token_file
from stockade.controller.config import ControllerConfig
from stockade.controller.flows import FlowQuery
from stockade.model.reports import AgentReport, FlowRecord
from stockade.controller.service import ControllerService
from stockade.compile.host import NotProgrammed
from stockade.errors import ConflictError, Forbidden, NotFoundError, ValidationError
from stockade.model.kinds import ObjectKey
from stockade.model.validation import ValidationSettings
from tests.controller.conftest import HOSTS
from tests.controller.controller_docs import group, namespace, workload

API = "/api/v1"
TENANT_A = Principal(name="tenant-a", role="tenant", namespaces=frozenset({"a"}), token_id="aaaa")


def _world(service: ControllerService) -> None:
    """Two tenants: b's database on hv1 behind a group that a's policy may name as a peer."""
    service.apply([namespace("a"), namespace("b"),
                   workload("web", ns="a", host="hv2", ips=["198.18.1.10"], tier="web"),
                   workload("secret-db", ns="b", host="hv1", ips=["198.18.2.20"], tier="db"),
                   group("web", ns="a", tier="web"), group("db", ns="b", tier="db")], "admin", "world")


# ------------------------------------------------------------ object reads over HTTP


@pytest.fixture
def http(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    tokens = create_token_file(tmp_path / "tokens.json", [
        {"name": "root", "role": "admin"},
        {"name": "tenant-a", "role": "tenant", "namespaces": ["a"]}])
    config = ControllerConfig(db_path=tmp_path / "stockade.db", tokens_file=tmp_path / "tokens.json",
                              validation=ValidationSettings(known_hosts=HOSTS))
    with TestClient(build_app(config)) as client:
        _world(client.app.state.service)  # type: ignore[attr-defined]
        yield client, tokens


def _get(client: TestClient, token: str, kind: str, **params: str) -> httpx.Response:
    return client.get(f"{API}/objects/{kind}", params=params, headers={"Authorization": f"Bearer {token}"})


@pytest.mark.parametrize("kind, params", [
    ("workloads", {"name": "{name}"}),                        # across namespaces
    ("workloads", {"name": "{name}", "namespace": "b"}),      # in b
    ("namespaces", {"name": "{ns}"}),                         # the namespace object itself
])
def test_tenant_cannot_tell_whether_another_tenants_object_exists(
        http: tuple[TestClient, dict[str, str]], kind: str, params: dict[str, str]) -> None:
    client, tokens = http
    answers = []
    for name, ns in (("secret-db", "b"), ("no-such-thing", "no-such-ns")):
        filled = {k: v.format(name=name, ns=ns) for k, v in params.items()}
        r = _get(client, tokens["tenant-a"], kind, **filled)
        answers.append((r.status_code, r.json()["error"]))
    assert answers[0] == answers[1] == (403, "forbidden")


def test_tenant_still_gets_404_in_its_own_namespace_and_its_objects(http: tuple[TestClient, dict[str, str]]) -> None:
    client, tokens = http
    assert _get(client, tokens["tenant-a"], "workloads", name="nope", namespace="a").status_code == 404
    [item] = _get(client, tokens["tenant-a"], "workloads", name="web").json()["items"]
    assert item["metadata"]["namespace"] == "a"
    items = _get(client, tokens["tenant-a"], "workloads").json()["items"]
    assert {i["metadata"]["namespace"] for i in items} == {"a"}


# ------------------------------------------------------------ writes that answer about others


def test_deleting_another_tenants_object_is_403_whether_or_not_it_exists(service: ControllerService) -> None:
    _world(service)
    for name in ("secret-db", "no-such-thing"):
        with pytest.raises(Forbidden):
            service.delete([ObjectKey("Workload", "b", name)], "tenant-a", "", principal=TENANT_A)
    with pytest.raises(NotFoundError):  # in its own namespace, absence is its own business
        service.delete([ObjectKey("Workload", "a", "nope")], "tenant-a", "", principal=TENANT_A)


def test_a_resource_version_on_another_tenants_object_is_403_not_409(service: ControllerService) -> None:
    _world(service)
    for name in ("secret-db", "no-such-thing"):
        doc = workload(name, ns="b")
        doc["metadata"]["resourceVersion"] = "999"
        with pytest.raises(Forbidden):
            service.apply([doc], "tenant-a", "", principal=TENANT_A)


def test_a_taken_address_does_not_name_the_other_tenants_workload(service: ControllerService) -> None:
    _world(service)
    before = service.snapshot()
    with pytest.raises(ValidationError) as caught:
        service.apply([workload("probe", ns="a", ips=["198.18.2.20"])], "tenant-a", "", principal=TENANT_A)
    [problem] = caught.value.problems
    assert problem.field == "spec.ips[0]" and "already used by a workload of another namespace" in problem.problem
    assert "secret-db" not in str(caught.value.to_dict())
    assert service.snapshot() == before
    # An admin is told who holds it.
    with pytest.raises(ValidationError, match="Workload b/secret-db"):
        service.apply([workload("probe", ns="a", ips=["198.18.2.20"])], "admin", "")


def test_a_group_in_use_by_the_platform_does_not_name_its_policy(service: ControllerService) -> None:
    _world(service)
    spy = {"apiVersion": "stockade.io/v1", "kind": "GlobalPolicy", "metadata": {"name": "quiet-name"},
           "spec": {"tier": "platform", "appliesTo": {"group": "b/db"},
                    "ingress": [{"action": "allow", "from": [{"group": "a/web"}]}]}}
    service.apply([spy], "admin", "the platform names a's group as a peer")
    with pytest.raises(ConflictError) as caught:
        service.delete([ObjectKey("Group", "a", "web")], "tenant-a", "", principal=TENANT_A)
    assert "quiet-name" not in caught.value.message
    assert "1 policy of other namespaces" in caught.value.message


def _peer_of(name: str, ns: str, peer: str) -> dict[str, Any]:
    return {"apiVersion": "stockade.io/v1", "kind": "Policy", "metadata": {"name": name, "namespace": ns},
            "spec": {"appliesTo": {"group": "web" if ns == "a" else "db"},
                     "ingress": [{"action": "allow", "from": [{"group": peer}]}]}}


def test_naming_another_tenants_group_as_a_peer_tells_nothing_of_whether_it_exists(
        service: ControllerService) -> None:
    _world(service)
    answers = []
    for i, peer in enumerate(("b/db", "b/no-such-group")):
        result = service.apply([_peer_of(f"probe-{i}", "a", peer)], "tenant-a", "", principal=TENANT_A)
        answers.append([r.action for r in result.results])
    assert answers == [["created"], ["created"]]


def test_another_tenant_naming_my_group_does_not_keep_me_from_deleting_it(service: ControllerService) -> None:
    _world(service)
    service.apply([_peer_of("pin", "b", "a/web")], "admin", "b names a's group as a peer")
    result = service.delete([ObjectKey("Group", "a", "web")], "tenant-a", "", principal=TENANT_A)
    assert [r.action for r in result.results] == ["deleted"]
    # b's peer now matches no one; re-applying b's policy stays valid.
    service.apply([_peer_of("pin", "b", "a/web")], "admin", "unchanged")


# ------------------------------------------------------------ status and flows


def test_tenant_status_shows_revisions_and_sync_but_not_error_text_or_others_workloads(
        service: ControllerService) -> None:
    _world(service)
    service.report_agent("hv1", AgentReport(
        revision=1, in_sync=False, error="nft: cannot add element for b/secret-db on stkab12",
        not_programmed=(NotProgrammed("b/secret-db", "interface taken"), NotProgrammed("a/web", "no address"))))
    [agent] = service.status(TENANT_A).to_dict()["agents"]
    assert (agent["host"], agent["revision"], agent["inSync"]) == ("hv1", 1, False)
    assert agent["error"] and "secret-db" not in agent["error"]
    assert agent["notProgrammed"] == [{"object": "a/web", "reason": "no address"}]
    [full] = service.status().to_dict()["agents"]  # the operator's view is whole
    assert "b/secret-db" in full["error"]


def _flow(src: str, dst: str, rule: str, port: int = 5432) -> dict[str, Any]:
    def end(ref: str, ip: str, p: int | None) -> dict[str, Any]:
        return {"ip": ip, "port": p, "workload": ref, "namespace": ref.split("/")[0]}
    return {"time": "2030-01-01T00:00:00+00:00", "host": "hv1", "direction": "ingress", "verdict": "deny",
            "rule": rule, "protocol": "tcp", "family": 4, "src": end(src, "198.18.1.10", 40000),
            "dst": end(dst, "198.18.2.20", port), "icmpType": None, "event": "start"}


def test_flow_records_hide_the_other_sides_workload_and_rule(service: ControllerService) -> None:
    _world(service)
    service.record_flows("hv1", [(datetime.now(timezone.utc),
                                  FlowRecord.from_dict(_flow("a/web", "b/secret-db", "b/db-lockdown/no-web")))])
    page = asyncio.run(service.flows(FlowQuery(), principal=TENANT_A))
    [record] = service.scope_flow_page(page, TENANT_A)["records"]
    assert record["src"]["workload"] == "a/web"
    assert record["dst"] == {"ip": "198.18.2.20", "port": 5432, "workload": "b/(hidden)", "namespace": "b",
                             "names": []}
    assert record["rule"] == "b/(hidden)"
    # An operator sees it whole.
    [whole] = service.scope_flow_page(asyncio.run(service.flows(FlowQuery())), None)["records"]
    assert whole["dst"]["workload"] == "b/secret-db" and whole["rule"] == "b/db-lockdown/no-web"


def test_tenant_cannot_probe_another_tenants_workload_name_through_the_flow_filter(
        service: ControllerService) -> None:
    _world(service)
    service.record_flows("hv1", [(datetime.now(timezone.utc), FlowRecord.from_dict(_flow("a/web", "b/secret-db", "b/p/r")))])
    for guess in ("b/secret-db", "b/no-such"):
        with pytest.raises(Forbidden):
            asyncio.run(service.flows(FlowQuery(namespace="a", workload=guess), principal=TENANT_A))


def test_diff_replays_only_the_tenants_flows_and_hides_the_far_end(service: ControllerService) -> None:
    _world(service)
    out_b = {"apiVersion": "stockade.io/v1", "kind": "Policy", "metadata": {"name": "out", "namespace": "b"},
             "spec": {"appliesTo": {"group": "db"}, "egress": [{"action": "allow"}]}}
    in_a = {"apiVersion": "stockade.io/v1", "kind": "Policy", "metadata": {"name": "in", "namespace": "a"},
            "spec": {"appliesTo": {"group": "web"}, "ingress": [{"id": "from-db", "action": "allow",
                                                                 "from": [{"group": "b/db"}]}]}}
    service.apply([out_b, in_a], "admin", "b may reach a")
    now = datetime.now(timezone.utc)
    b_to_a = _flow("b/secret-db", "a/web", "a/in/from-db", port=80)
    b_to_a.update(src={**b_to_a["src"], "ip": "198.18.2.20"}, dst={**b_to_a["dst"], "ip": "198.18.1.10"})
    service.record_flows("hv1", [(now, FlowRecord.from_dict(b_to_a))])
    closed = {**in_a, "spec": {**in_a["spec"], "ingress": []}}
    _, _, changes = service.diff([closed], principal=TENANT_A)
    [change] = changes
    assert change.to_dict()["src"] == "b/(hidden)" and change.to_dict()["dst"] == "a/web"
    assert change.before == "allow" and change.before_rule == "a/in/from-db"
    _, _, whole = service.diff([closed], principal=None)
    assert [c.src for c in whole] == ["b/secret-db"]


# ------------------------------------------------------------ /metrics


@pytest.mark.parametrize("metrics_auth", [False, True])
def test_metrics_auth_asks_a_viewer_or_better_token(tmp_path: Path, metrics_auth: bool) -> None:
    tokens = create_token_file(tmp_path / "tokens.json", [
        {"name": "vera", "role": "viewer"}, {"name": "tenant-a", "role": "tenant", "namespaces": ["a"]},
        {"name": "agent-hv1", "role": "agent", "host": "hv1"}])
    config = ControllerConfig(db_path=tmp_path / "stockade.db", tokens_file=tmp_path / "tokens.json",
                              validation=ValidationSettings(known_hosts=HOSTS), metrics_auth=metrics_auth)
    with TestClient(build_app(config)) as client:
        def status(token: str | None) -> int:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return client.get("/metrics", headers=headers).status_code
        if not metrics_auth:
            assert status(None) == 200  # the default is unchanged: a scraper needs no token
            return
        assert status(None) == 401
        assert status(tokens["tenant-a"]) == 403 and status(tokens["agent-hv1"]) == 403
        assert status(tokens["vera"]) == 200
