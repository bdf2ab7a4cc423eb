"""The REST API over real HTTP (uvicorn on TCP and a unix socket), talked to with the real client."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stockade.client import ControllerClient
from stockade.controller.api import build_app
from stockade.controller.config import ControllerConfig
from stockade.controller.main import RunningController, start_in_thread
from stockade.errors import ConflictError, Forbidden, Gone, NotFoundError, Unauthorized, ValidationError
from tests.controller.conftest import wait_for_long_polls
from tests.controller.controller_docs import namespace, policy, shop, workload


def test_healthz_needs_no_token(controller: RunningController) -> None:
    with ControllerClient(controller.url) as anonymous:
        health = anonymous.healthz()
    cluster = health.pop("clusterId")
    assert health == {"ok": True, "revision": 0} and re.fullmatch(r"[0-9a-f]{32}", cluster)


def test_apply_records_the_token_name_as_author(admin: ControllerClient) -> None:
    result = admin.apply(shop(), "open the shop")
    assert result["revision"] == 1
    assert {r["action"] for r in result["results"]} == {"created"}
    assert result["results"][0] == {"kind": "Namespace", "namespace": None, "name": "shop", "action": "created"}
    [rev] = admin.revisions()
    assert (rev["revision"], rev["author"], rev["message"]) == (1, "alice", "open the shop")
    assert admin.healthz()["revision"] == 1


def test_reapply_over_http_is_unchanged_and_makes_no_revision(admin: ControllerClient) -> None:
    admin.apply(shop(), "first")
    again = admin.apply(shop(), "second")
    assert again["revision"] == 1 and {r["action"] for r in again["results"]} == {"unchanged"}
    assert len(admin.revisions()) == 1


def test_bad_file_is_422_with_object_and_field_and_stores_nothing(admin: ControllerClient) -> None:
    file = shop() + [policy("broken", port=70000)]
    with pytest.raises(ValidationError) as caught:
        admin.apply(file, "with a typo")
    [problem] = caught.value.problems
    assert problem.object_ref.startswith("Policy shop/broken") and problem.field == "spec.ingress[0].ports[0]"
    assert {k: v for k, v in admin.snapshot().items() if k != "clusterId"} == {"revision": 0, "objects": []}


def test_malformed_request_body_is_a_typed_validation_error(controller: RunningController,
                                                            tokens: dict[str, str]) -> None:
    response = httpx.post(f"{controller.url}/api/v1/apply", json={"documents": "nope"},
                          headers={"Authorization": f"Bearer {tokens['alice']}"})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid" and body["problems"][0]["field"] == "body.documents"


def test_delete_of_a_group_in_use_is_409_and_changes_nothing(admin: ControllerClient) -> None:
    admin.apply(shop(), "")
    with pytest.raises(ConflictError) as caught:
        admin.delete([{"kind": "group", "namespace": "shop", "name": "web"}], "remove web")
    assert "Policy shop/web-ingress" in caught.value.message
    assert admin.list("groups", "shop", "web")["items"]
    assert admin.healthz()["revision"] == 1


def test_delete_over_http(admin: ControllerClient) -> None:
    admin.apply(shop(), "")
    result = admin.delete([("workload", "shop", "db-1")], "bye db")
    assert result == {"revision": 2, "results": [
        {"kind": "Workload", "namespace": "shop", "name": "db-1", "action": "deleted"}]}
    with pytest.raises(NotFoundError):
        admin.list("workload", "shop", "db-1")


@pytest.mark.parametrize("kind", ["workload", "Workloads", "WL", "workload.stockade.io"])
def test_objects_are_listed_by_any_kind_spelling(admin: ControllerClient, kind: str) -> None:
    admin.apply(shop(), "")
    listed = admin.list(kind, "shop")
    assert listed["revision"] == 1
    assert sorted(i["metadata"]["name"] for i in listed["items"]) == ["db-1", "web-1"]


def test_unknown_kind_is_a_validation_error(admin: ControllerClient) -> None:
    with pytest.raises(ValidationError) as caught:
        admin.list("gadgets")
    assert caught.value.problems[0].field == "kind"


def test_named_object_missing_is_404(admin: ControllerClient) -> None:
    with pytest.raises(NotFoundError):
        admin.list("workload", "shop", "nope")


def test_workload_status_carries_assigned_addresses_and_reported_netns(admin: ControllerClient,
                                                                       agent: ControllerClient) -> None:
    admin.apply(shop(), "")
    agent.report_status("hv1", revision=1, program_hash="h1", in_sync=True,
                        endpoints={"shop/web-1": {"netns": "stk-web-1", "interface": "stk0", "mac": "02:00:00:00:00:01"}})
    [web] = admin.list("workload", "shop", "web-1")["items"]
    assert web["status"]["netns"] == "stk-web-1"
    assert web["status"]["ips"][0].startswith("198.18.") and web["status"]["ips"][1].startswith("2001:db8:")
    state = agent.snapshot_state()
    assert state.revision == 1
    assert state.workload_ips(state.workloads[("shop", "web-1")]) == web["status"]["ips"]


def test_watch_resumes_from_a_revision(admin: ControllerClient, agent: ControllerClient) -> None:
    admin.apply(shop(), "one")
    admin.apply([workload("web-2", tier="web")], "two")
    answer = agent.watch(since=1, timeout=5)
    assert answer["revision"] == 2
    assert [(e["revision"], e["type"], e["kind"], e["name"]) for e in answer["events"]] == [
        (2, "PUT", "Workload", "web-2")]
    assert answer["events"][0]["object"]["status"]["ips"]


def test_watch_long_polls_and_returns_when_a_write_happens(admin: ControllerClient, agent: ControllerClient,
                                                           controller: RunningController) -> None:
    admin.apply(shop(), "one")
    result: dict[str, Any] = {}

    def watch() -> None:
        started = time.monotonic()
        result["answer"] = agent.watch(since=1, timeout=20)
        result["elapsed"] = time.monotonic() - started

    watcher = threading.Thread(target=watch)
    watcher.start()
    wait_for_long_polls(controller, "watch")
    assert watcher.is_alive(), "the watch returned before anything changed"
    admin.delete([("policy", "shop", "web-ingress")], "two")
    watcher.join(5)
    assert not watcher.is_alive()
    assert result["elapsed"] < 5
    assert [(e["type"], e["name"], e["object"]) for e in result["answer"]["events"]] == [
        ("DELETE", "web-ingress", None)]


def test_watch_times_out_empty(agent: ControllerClient) -> None:
    answer = agent.watch(since=0, timeout=0.2)
    listing = agent.snapshot()
    assert answer == {"revision": 0, "events": [], "clusterId": listing["clusterId"], "view": listing["view"]}


def test_watch_from_before_the_kept_events_is_410(tokens: dict[str, str], config: ControllerConfig,
                                                  short_dir: Any) -> None:
    import dataclasses
    small = dataclasses.replace(config, event_retention=2)
    running = start_in_thread(small, app=build_app(small))
    try:
        with ControllerClient(running.url, tokens["alice"]) as client:
            client.apply([namespace("a")], "1")
            client.apply([namespace("b")], "2")
            client.apply([namespace("c")], "3")
            with pytest.raises(Gone):
                client.watch(since=0, timeout=1)
            assert [e["name"] for e in client.watch(since=1, timeout=1)["events"]] == ["b", "c"]
            with pytest.raises(Gone):
                client.watch(since=99, timeout=1)
    finally:
        running.stop()


def test_requests_without_a_valid_token_are_401(controller: RunningController) -> None:
    with ControllerClient(controller.url) as anonymous, ControllerClient(controller.url, "stk_forged") as forged:
        for client in (anonymous, forged):
            with pytest.raises(Unauthorized):
                client.snapshot()
            with pytest.raises(Unauthorized):
                client.apply(shop(), "")
    raw = httpx.get(f"{controller.url}/api/v1/snapshot")
    assert raw.status_code == 401 and raw.headers["www-authenticate"] == "Bearer"


def test_agent_token_reads_state_but_neither_lists_nor_writes_objects(agent: ControllerClient,
                                                                     admin: ControllerClient) -> None:
    admin.apply(shop(), "")
    assert agent.snapshot()["revision"] == 1
    # Of objects, only its own host's Workloads (test_host_registration.py): no other kind.
    assert {w["spec"]["host"] for w in agent.list("workloads")["items"]} <= {"hv1"}
    with pytest.raises(Forbidden):
        agent.list("policies")
    with pytest.raises(Forbidden):
        agent.apply([workload("evil")], "")
    with pytest.raises(Forbidden):
        agent.delete([("workload", "shop", "web-1")], "")
    assert admin.healthz()["revision"] == 1


def test_agent_token_reports_only_for_its_own_host(agent: ControllerClient, admin: ControllerClient) -> None:
    agent.report_status("hv1", revision=0, in_sync=True)
    with pytest.raises(Forbidden):
        agent.report_status("hv2", revision=0)
    assert [a["host"] for a in admin.status()["agents"]] == ["hv1"]


def test_status_lists_agents_and_what_they_enforce(admin: ControllerClient, agent: ControllerClient) -> None:
    admin.apply(shop(), "")
    agent.report_status("hv1", revision=1, program_hash="abc", applied_at="2030-01-01T00:00:00+00:00",
                        in_sync=True)
    status = admin.status()
    assert status["revision"] == 1 and status["enforcedRevision"] == 1
    [hv1] = status["agents"]
    assert {k: hv1[k] for k in ("host", "revision", "programHash", "inSync", "error", "reporting")} == {
        "host": "hv1", "revision": 1, "programHash": "abc", "inSync": True, "error": None, "reporting": True}


def test_unix_socket_serves_the_same_api(controller: RunningController, tokens: dict[str, str]) -> None:
    assert controller.unix_url is not None and controller.unix_socket is not None
    assert controller.unix_socket.is_socket()
    with ControllerClient(controller.unix_url, tokens["alice"]) as over_unix, \
            ControllerClient(controller.url, tokens["alice"]) as over_tcp:
        over_unix.apply(shop(), "via unix")
        assert over_tcp.revisions()[0]["message"] == "via unix"


def test_openapi_describes_every_endpoint(controller: RunningController) -> None:
    doc = httpx.get(f"{controller.url}/openapi.json").json()
    paths = doc["paths"]
    for path, method in [("/healthz", "get"), ("/api/v1/apply", "post"), ("/api/v1/delete", "post"),
                         ("/api/v1/objects/{kind}", "get"), ("/api/v1/snapshot", "get"),
                         ("/api/v1/watch", "get"), ("/api/v1/agents/{host}/status", "put"),
                         ("/api/v1/status", "get"), ("/api/v1/revisions", "get"), ("/metrics", "get")]:
        assert method in paths[path], path
    schemas = doc["components"]["schemas"]
    assert {"ApplyRequest", "WriteResponse", "DeleteRequest", "WatchResponse", "AgentStatusRequest",
            "StatusResponse", "ErrorBody"} <= set(schemas)
    apply_body = paths["/api/v1/apply"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert apply_body["$ref"].endswith("/ApplyRequest")
    assert "410" in paths["/api/v1/watch"]["get"]["responses"]
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_metrics_parse_and_count(admin: ControllerClient, agent: ControllerClient,
                                 controller: RunningController) -> None:
    admin.apply(shop(), "")
    agent.report_status("hv1", revision=1, in_sync=True)
    with pytest.raises(Forbidden):
        agent.apply(shop(), "")
    text = httpx.get(f"{controller.url}/metrics").text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("stockade_controller_revision", ())] == 1
    assert samples[("stockade_controller_host_revision", (("host", "hv1"),))] == 1
    assert samples[("stockade_api_requests_total", (("route", "/api/v1/apply"), ("status", "200")))] == 1
    assert samples[("stockade_api_requests_total", (("route", "/api/v1/apply"), ("status", "403")))] == 1


def test_stopping_the_controller_answers_pending_watches(config: ControllerConfig, short_dir: Any,
                                                         tokens: dict[str, str]) -> None:
    running = start_in_thread(config, unix_socket=short_dir / "other.sock", app=build_app(config))
    result: dict[str, Any] = {}

    def watch() -> None:
        with ControllerClient(running.unix_url or "", tokens["agent-hv1"]) as client:
            result["answer"] = client.watch(since=0, timeout=30)

    watcher = threading.Thread(target=watch)
    watcher.start()
    wait_for_long_polls(running, "watch")
    started = time.monotonic()
    running.stop()
    watcher.join(5)
    assert time.monotonic() - started < 1.5  # not the 2 s graceful-shutdown cut-off, nor the 30 s poll
    assert {k: v for k, v in result["answer"].items() if k not in ("clusterId", "view")} == {"revision": 0, "events": []}
    assert not (short_dir / "other.sock").exists()


def test_workloads_an_agent_could_not_program_are_in_its_status(admin: ControllerClient,
                                                                agent: ControllerClient) -> None:
    admin.apply(shop(), "")
    reason = "interface tap7 is also Workload shop/db-1's on host hv1, which keeps it"
    agent.report_status("hv1", {"revision": 1, "programHash": "h1", "inSync": True, "error": None,
                                "endpoints": {}, "notProgrammed": [{"object": "shop/web-1", "reason": reason}]})
    [hv1] = [a for a in admin.status()["agents"] if a["host"] == "hv1"]
    assert hv1["notProgrammed"] == [{"object": "shop/web-1", "reason": reason}]
    # An agent that says nothing of it (an older one) has none.
    agent.report_status("hv1", revision=1, program_hash="h1", in_sync=True)
    [hv1] = [a for a in admin.status()["agents"] if a["host"] == "hv1"]
    assert hv1["notProgrammed"] == []


def test_a_network_policy_cidr_with_host_bits_is_accepted_with_a_warning(admin: ControllerClient) -> None:
    """What the Kubernetes API server accepts is accepted (issue 17, item 4): the apply answer says
    what the CIDR is taken to mean; the object is served back as written; other results carry no
    warnings key at all."""
    netpol = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "from-net", "namespace": "shop"},
              "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "198.18.21.7/22"}}]}]}}
    result = admin.apply([namespace("shop"), netpol])
    ns_result, np_result = result["results"]
    assert "warnings" not in ns_result
    assert np_result["action"] == "created" and np_result["warnings"] == [
        "spec.ingress[0].from[0].ipBlock.cidr: 198.18.21.7/22 has host bits set; it means 198.18.20.0/22, "
        "as Kubernetes reads it"]
    stored = admin.list("NetworkPolicy", "shop", "from-net")["items"][0]
    assert stored["spec"]["ingress"][0]["from"][0]["ipBlock"]["cidr"] == "198.18.21.7/22"
    again = admin.apply([netpol])
    assert again["results"][0]["action"] == "unchanged" and again["results"][0]["warnings"]


def test_a_cluster_network_policy_is_applied_read_by_its_short_name_and_deleted(admin: ControllerClient) -> None:
    """The upstream kind through the API (issue 17): served back as written, `cnp` names it, a
    field upstream does not have is refused naming it, and nothing is stored then."""
    cnp = {"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
           "metadata": {"name": "guardrail"},
           "spec": {"tier": "Baseline", "priority": 3, "subject": {"pods": {"podSelector": {}}},
                    "egress": [{"name": "no-metadata-service", "action": "Deny",
                                "to": [{"networks": ["198.18.169.254/32"]}]}]}}
    assert admin.apply([cnp])["results"][0]["action"] == "created"
    [stored] = admin.list("cnp")["items"]
    assert stored["spec"] == cnp["spec"] and stored["metadata"]["name"] == "guardrail"
    before = admin.revisions(1)[0]["revision"]
    bad = {**cnp, "spec": {**cnp["spec"], "egress": [{"name": "x", "action": "Allow", "to": [{"networks": ["198.18.0.0/16"]}]}]}}
    with pytest.raises(ValidationError, match=r"ClusterNetworkPolicy guardrail.*spec.egress\[0\].action"):
        admin.apply([bad])
    assert admin.revisions(1)[0]["revision"] == before
    admin.delete([("ClusterNetworkPolicy", "", "guardrail")])
    assert admin.list("clusternetworkpolicies")["items"] == []


@pytest.mark.parametrize("kind,version,tier", [
    ("ClusterNetworkPolicy", "v1alpha2", {"tier": "Admin", "priority": 5}),
    ("AdminNetworkPolicy", "v1alpha1", {"priority": 5}),
], ids=["cnp", "anp"])
def test_a_cluster_policy_network_with_host_bits_is_accepted_with_a_warning(admin: ControllerClient, kind: str,
                                                                            version: str, tier: dict) -> None:
    """Issue 17, item 4 for the cluster kinds: `networks` as upstream's CEL isCIDR takes them, the
    network that holds the address enforced, and the apply answer saying so per field."""
    doc = {"apiVersion": f"policy.networking.k8s.io/{version}", "kind": kind, "metadata": {"name": "no-net"},
           "spec": {**tier, "subject": {"namespaces": {}},
                    "egress": [{"name": "no-net", "action": "Deny",
                                "to": [{"networks": ["198.18.0.0/16", "198.18.21.7/22"]}]}]}}
    [result] = admin.apply([doc])["results"]
    assert result["warnings"] == ["spec.egress[0].to[0].networks[1]: 198.18.21.7/22 has host bits set; "
                                  "it means 198.18.20.0/22, as Kubernetes reads it"]
    assert admin.list(kind, None, "no-net")["items"][0]["spec"]["egress"][0]["to"][0]["networks"][1] == "198.18.21.7/22"
