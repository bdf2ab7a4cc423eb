"""The controller's use cases, without HTTP: all-or-nothing apply and delete, revisions, watch, status."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from tests.controller.controller_docs import group, namespace, policy, shop, workload
from stockade.controller.config import ControllerConfig
from stockade.model.reports import AgentReport, Endpoint
from stockade.controller.service import ControllerService, object_key
from stockade.controller.wiring import open_service
from stockade.errors import ConflictError, NotFoundError, ValidationError
from stockade.model.kinds import ObjectKey


def actions(result: Any) -> list[tuple[str, str, str]]:
    return [(r.key.kind, r.key.name, r.action) for r in result.results]


def test_apply_creates_one_revision_with_author_and_message(service: ControllerService) -> None:
    result = service.apply(shop(), "alice", "open the shop")
    assert result.revision == 1
    assert actions(result) == [("Namespace", "shop", "created"), ("Workload", "web-1", "created"),
                               ("Workload", "db-1", "created"), ("Group", "web", "created"),
                               ("Policy", "web-ingress", "created")]
    [rev] = service.revisions()
    assert (rev.number, rev.author, rev.message) == (1, "alice", "open the shop")
    assert datetime.fromisoformat(rev.time).tzinfo is not None


def test_reapplying_the_same_file_makes_no_revision(service: ControllerService) -> None:
    service.apply(shop(), "alice", "first")
    again = service.apply(shop(), "bob", "again")
    assert again.revision == 1
    assert {r.action for r in again.results} == {"unchanged"}
    assert service.revision() == 1
    assert len(service.revisions()) == 1


def test_changed_object_is_configured_and_only_it_is_in_the_events(service: ControllerService) -> None:
    service.apply(shop(), "alice", "first")
    docs = shop()
    docs[1] = workload("web-1", tier="web", env="prod")
    result = service.apply(docs, "alice", "label web-1")
    assert result.revision == 2
    assert [a for a in actions(result) if a[2] != "unchanged"] == [("Workload", "web-1", "configured")]
    _, events = asyncio.run(service.watch(1, 0))
    assert [(e.type, e.key.name) for e in events] == [("PUT", "web-1")]


def test_default_namespace_applies_to_namespaced_objects_only(service: ControllerService) -> None:
    doc = workload("web-1")
    del doc["metadata"]["namespace"]
    result = service.apply([namespace("shop"), doc], "alice", "", default_namespace="shop")
    assert actions(result)[1] == ("Workload", "web-1", "created")
    assert result.results[1].key.namespace == "shop"


BAD_DOCUMENTS: dict[str, tuple[dict[str, Any], str, str, str]] = {
    # case: (bad document, object named, field named, words of the problem)
    "unknown field": ({**workload("cache-1"), "spec": {"host": "hv1", "colour": "red"}},
                      "Workload shop/cache-1", "spec.colour", "unknown field"),
    "bad selector": ({**group("g"), "spec": {"selector": {"matchExpressions": [
        {"key": "tier", "operator": "Near", "values": ["web"]}]}}},
        "Group shop/g", "spec.selector", "Near"),
    "port out of range": (policy("p", port=70000), "Policy shop/p", "spec.ingress[0].ports[0]", "out of range"),
    "bad cidr": ({**group("ext"), "spec": {"cidrs": ["198.19.0.0/33"]}}, "Group shop/ext", "spec.cidrs",
                 "not a valid CIDR"),
    "ip outside the allowed ranges": (workload("cache-1", ips=["10.1.2.3"]), "Workload shop/cache-1",
                                      "spec.ips[0]", "outside the allowed workload ranges"),
    "reference to a missing group": (policy("p", applies_to="nope"), "Policy shop/p", "spec.appliesTo.group",
                                     "group shop/nope does not exist"),
    "missing namespace": (workload("w", ns="ghost"), "Workload ghost/w", "metadata.namespace",
                          "namespace 'ghost' does not exist"),
    "unknown host": (workload("w", host="hv9"), "Workload shop/w", "spec.host", "unknown host"),
}


@pytest.mark.parametrize("case", sorted(BAD_DOCUMENTS))
def test_one_bad_document_stores_nothing_and_names_object_and_field(service: ControllerService,
                                                                     case: str) -> None:
    service.apply(shop(), "alice", "baseline")
    before = service.snapshot()
    bad, obj, field, words = BAD_DOCUMENTS[case]
    # Good documents around the bad one: a change, a new object, and the bad one last.
    file = [workload("web-1", tier="web", env="prod"), workload("web-2", tier="web"), bad]
    with pytest.raises(ValidationError) as caught:
        service.apply(file, "alice", "mixed")
    assert any(p.object_ref.startswith(obj) and p.field == field and words in p.problem
               for p in caught.value.problems), caught.value.to_dict()
    assert service.revision() == 1
    assert service.snapshot() == before


def test_every_problem_in_a_file_is_reported_at_once(service: ControllerService) -> None:
    bad_port = policy("p", port=0)
    unknown = {**workload("w"), "spec": {"host": "hv1", "colour": "red"}}
    with pytest.raises(ValidationError) as caught:
        service.apply([namespace("shop"), bad_port, unknown], "alice", "")
    assert {p.field for p in caught.value.problems} == {"spec.ingress[0].ports[0]", "spec.colour"}


def test_the_same_object_twice_in_one_file_is_refused(service: ControllerService) -> None:
    with pytest.raises(ValidationError) as caught:
        service.apply([namespace("shop"), workload("w"), workload("w", tier="x")], "alice", "")
    [problem] = caught.value.problems
    assert problem.object_ref.startswith("Workload shop/w") and "twice" in problem.problem
    assert service.revision() == 0


def test_empty_apply_is_refused(service: ControllerService) -> None:
    with pytest.raises(ValidationError):
        service.apply([], "alice", "")


# ------------------------------------------------------------------------ IPAM

def ips_of(service: ControllerService) -> dict[str, list[str]]:
    _, items = service.list("workloads")
    return {d["metadata"]["name"]: d["status"]["ips"] for d in items}


def test_ipam_assigns_one_ipv4_and_one_ipv6_unique_per_workload(service: ControllerService) -> None:
    service.apply([namespace("shop")] + [workload(f"w{i}") for i in range(5)], "alice", "")
    ips = ips_of(service)
    assert all(len(v) == 2 and "." in v[0] and ":" in v[1] for v in ips.values())
    flat = [ip for v in ips.values() for ip in v]
    assert len(flat) == len(set(flat)) == 10
    # Assigned addresses are status, not spec: the user's spec is kept as written.
    state = service.desired_state()
    assert all(not w.spec.ips for w in state.workloads.values())


def test_ipam_addresses_are_stable_across_reapplies_and_changes(service: ControllerService) -> None:
    service.apply([namespace("shop"), workload("a"), workload("b")], "alice", "")
    first = ips_of(service)
    service.apply([workload("c"), workload("a", tier="web")], "alice", "relabel a, add c")
    service.apply([namespace("shop"), workload("a", tier="web"), workload("b")], "alice", "again")
    after = ips_of(service)
    assert after["a"] == first["a"] and after["b"] == first["b"]
    assert not set(after["c"]) & (set(first["a"]) | set(first["b"]))


def test_ipam_never_hands_out_an_address_a_workload_names_in_its_spec(service: ControllerService) -> None:
    taken = ["198.18.64.1", "2001:db8:64::1"]  # the first addresses of the default pools
    service.apply([namespace("shop"), workload("fixed", ips=taken), workload("auto")], "alice", "")
    assert not set(ips_of(service)["auto"]) & set(taken)


def test_naming_an_address_already_assigned_to_another_workload_is_refused(service: ControllerService) -> None:
    service.apply([namespace("shop"), workload("auto")], "alice", "")
    v4 = ips_of(service)["auto"][0]
    with pytest.raises(ValidationError) as caught:
        service.apply([workload("fixed", ips=[v4])], "alice", "")
    assert "already used by Workload shop/auto" in str(caught.value)
    assert service.revision() == 1


def test_ipam_pool_exhaustion_is_a_validation_error(config: ControllerConfig) -> None:
    import dataclasses
    import ipaddress
    # Two hosts, both for one namespace: the pool itself runs out, not the namespace's share of it.
    tiny = dataclasses.replace(config, ipv4_pool=ipaddress.IPv4Network("198.18.64.0/30"), namespace_pool_share=1.0)
    svc = open_service(tiny)
    try:
        svc.apply([namespace("shop"), workload("a"), workload("b")], "alice", "")
        with pytest.raises(ValidationError) as caught:
            svc.apply([workload("c")], "alice", "")
        [problem] = caught.value.problems
        assert problem.object_ref == "Workload shop/c" and "no free IPv4 address" in problem.problem
        assert svc.revision() == 1
    finally:
        svc.close()


# ---------------------------------------------------------------------- delete

def test_deleting_a_group_a_policy_uses_is_a_conflict_and_changes_nothing(service: ControllerService) -> None:
    service.apply(shop(), "alice", "")
    with pytest.raises(ConflictError) as caught:
        service.delete([ObjectKey("Group", "shop", "web")], "alice", "")
    assert "Policy shop/web-ingress" in caught.value.message
    assert service.revision() == 1
    assert service.list("group", "shop", "web")[1]


def test_deleting_a_group_with_the_policy_that_uses_it_works(service: ControllerService) -> None:
    service.apply(shop(), "alice", "")
    result = service.delete([ObjectKey("Group", "shop", "web"), ObjectKey("Policy", "shop", "web-ingress")],
                            "alice", "retire web")
    assert result.revision == 2 and {r.action for r in result.results} == {"deleted"}
    _, events = asyncio.run(service.watch(1, 0))
    # Deletes run against dependency order: the policy goes before the group it uses.
    assert [(e.type, e.key.kind) for e in events] == [("DELETE", "Policy"), ("DELETE", "Group")]


def test_deleting_a_namespace_that_holds_objects_is_a_conflict(service: ControllerService) -> None:
    service.apply(shop(), "alice", "")
    with pytest.raises(ConflictError) as caught:
        service.delete([ObjectKey("Namespace", "", "shop")], "alice", "")
    assert "still holds 4 object(s)" in caught.value.message
    assert service.revision() == 1


def test_deleting_a_missing_object_names_it_and_changes_nothing(service: ControllerService) -> None:
    service.apply(shop(), "alice", "")
    with pytest.raises(NotFoundError) as caught:
        service.delete([ObjectKey("Workload", "shop", "web-1"), ObjectKey("Workload", "shop", "nope")], "alice", "")
    assert "Workload shop/nope not found" in caught.value.message
    assert service.list("workload", "shop", "web-1")[1]
    assert service.revision() == 1


def test_object_key_resolves_kinds_as_kubectl_does() -> None:
    assert object_key("WL", "shop", "a") == ObjectKey("Workload", "shop", "a")
    assert object_key("namespaces", "ignored", "shop") == ObjectKey("Namespace", "", "shop")
    with pytest.raises(ValidationError):
        object_key("workload", None, "a")


def test_listing_a_missing_name_is_not_found(service: ControllerService) -> None:
    with pytest.raises(NotFoundError):
        service.list("workloads", "shop", "nope")


# ----------------------------------------------------------------------- watch

def test_watch_returns_at_once_when_events_exist(service: ControllerService) -> None:
    service.apply(shop(), "alice", "")
    started = time.monotonic()
    revision, events = asyncio.run(service.watch(0, 10))
    assert time.monotonic() - started < 1
    assert revision == 1 and len(events) == 5


def test_watch_long_polls_until_a_commit_from_another_thread(service: ControllerService) -> None:
    service.apply(shop(), "alice", "")

    def later() -> None:
        time.sleep(0.2)  # the commit comes later on purpose: the watch must have waited for it
        service.apply([workload("web-2", tier="web")], "alice", "")

    async def main() -> tuple[float, tuple[int, list[Any]]]:
        started = time.monotonic()
        threading.Thread(target=later).start()
        result = await service.watch(1, 10)
        return time.monotonic() - started, result

    elapsed, (revision, events) = asyncio.run(main())
    assert 0.15 < elapsed < 5
    assert revision == 2 and [e.key.name for e in events] == ["web-2"]


def test_watch_times_out_with_no_events(service: ControllerService) -> None:
    started = time.monotonic()
    assert asyncio.run(service.watch(0, 0.2)) == (0, [])
    assert time.monotonic() - started >= 0.2


# ---------------------------------------------------------------------- agents

class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def test_status_marks_agents_reporting_within_the_staleness_window(config: ControllerConfig) -> None:
    clock = FakeClock()
    svc = open_service(config, clock=clock)
    try:
        svc.report_agent("hv1", AgentReport(revision=3, program_hash="abc", in_sync=True))
        clock.now += timedelta(seconds=10)
        svc.report_agent("hv2", AgentReport(revision=2))
        clock.now += timedelta(seconds=10)  # hv1 last reported 20 s ago, hv2 10 s ago
        status = svc.status().to_dict()
        assert [(a["host"], a["revision"], a["reporting"]) for a in status["agents"]] == [
            ("hv1", 3, False), ("hv2", 2, True)]
        assert status["enforcedRevision"] == 2
        assert status["agents"][0]["programHash"] == "abc" and status["agents"][0]["inSync"] is True
    finally:
        svc.close()


def test_reports_from_unknown_hosts_are_refused(service: ControllerService) -> None:
    with pytest.raises(ValidationError):
        service.report_agent("hv9", AgentReport(revision=0))


def test_list_and_snapshot_merge_endpoint_facts_into_workload_status(service: ControllerService) -> None:
    service.apply(shop(), "alice", "")
    service.report_agent("hv1", AgentReport(revision=1, endpoints={
        "shop/web-1": Endpoint(netns="stk-web-1", interface="stkabc", mac="02:00:00:00:00:01")}))
    _, [web] = service.list("workload", "shop", "web-1")
    assert web["status"]["netns"] == "stk-web-1" and web["status"]["host"] == "hv1"
    assert web["status"]["mac"] == "02:00:00:00:00:01" and len(web["status"]["ips"]) == 2
    _, objects = service.snapshot()
    assert [o["kind"] for o in objects][0] == "Namespace"
    db = next(o for o in objects if o["metadata"]["name"] == "db-1")
    assert "netns" not in db["status"] and db["status"]["host"] == "hv1"


def test_concurrent_applies_get_consecutive_revisions_and_distinct_addresses(service: ControllerService) -> None:
    service.apply([namespace("shop")], "alice", "")
    errors: list[BaseException] = []

    def apply(i: int) -> None:
        try:
            service.apply([workload(f"w{i}")], f"user{i}", "")
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=apply, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [r.number for r in service.revisions()] == list(range(9, 0, -1))
    flat = [ip for ips in ips_of(service).values() for ip in ips]
    assert len(flat) == len(set(flat)) == 16


# ------------------------------------------------ tenant isolation (issue 13)

def _tenant(*namespaces: str) -> Any:
    from stockade.controller.auth import Principal

    return Principal(name="tenant-a", role="tenant", namespaces=frozenset(namespaces))


def _two_tenants(service: ControllerService) -> None:
    service.apply([namespace("a"), namespace("b"), workload("web-a", ns="a", tier="web"),
                   workload("web-b", ns="b", tier="web"), group("web", ns="a", tier="web"),
                   group("web", ns="b", tier="web")], "admin", "two tenants")


def _open(applies_to: str, from_group: str | None = None) -> dict[str, Any]:
    doc = policy("x", ns="a", applies_to=applies_to, from_group=from_group)
    doc["spec"]["ingress"] = [{"action": "allow", **({"from": [{"group": from_group}]} if from_group else {})}]
    return doc


@pytest.mark.parametrize("who", ["tenant", "admin"])
def test_policy_applying_to_another_namespaces_group_is_refused_for_every_role(
        service: ControllerService, who: str) -> None:
    _two_tenants(service)
    before = service.snapshot()
    with pytest.raises(ValidationError) as caught:
        service.apply([_open("b/web")], who, "open b", principal=_tenant("a") if who == "tenant" else None)
    [problem] = caught.value.problems
    assert (problem.object_ref, problem.field) == ("Policy a/x", "spec.appliesTo.group")
    assert caught.value.exit_code == 2 and caught.value.http_status == 422
    assert service.snapshot() == before


def test_policy_naming_another_namespaces_group_as_a_peer_is_accepted(service: ControllerService) -> None:
    _two_tenants(service)
    result = service.apply([_open("web", from_group="b/web")], "tenant-a", "", principal=_tenant("a"))
    assert [r.action for r in result.results] == ["created"]


def test_diff_refuses_a_cross_namespace_applies_to_like_apply(service: ControllerService) -> None:
    _two_tenants(service)
    with pytest.raises(ValidationError) as caught:
        service.diff([_open("b/web")], principal=_tenant("a"))
    assert [(p.object_ref, p.field) for p in caught.value.problems] == [("Policy a/x", "spec.appliesTo.group")]


def test_rollback_to_a_revision_holding_a_cross_namespace_policy_is_refused(service: ControllerService) -> None:
    from stockade.controller.store import Change
    from stockade.model.kinds import key_of, parse_object, to_document

    _two_tenants(service)
    # Stored the way a controller before this check stored it: straight into the store.
    bad = parse_object(_open("b/web"))
    service.store.commit([Change(key_of(bad), to_document(bad))], "old-controller", "", datetime.now(timezone.utc))
    holding = service.revision()
    service.delete([key_of(bad)], "admin", "remove it")
    before = service.snapshot()
    with pytest.raises(ValidationError) as caught:
        service.rollback(holding, "admin", "")
    assert [(p.object_ref, p.field) for p in caught.value.problems] == [("Policy a/x", "spec.appliesTo.group")]
    assert service.snapshot() == before


def _on_interface(name: str, ns: str, iface: str, host: str = "hv1") -> dict[str, Any]:
    doc = workload(name, ns=ns, host=host)
    doc["spec"]["interface"] = iface
    return doc


def test_workload_taking_another_workloads_interface_is_refused(service: ControllerService) -> None:
    _two_tenants(service)
    service.apply([_on_interface("vm-b", "b", "tap7")], "admin", "")
    before = service.snapshot()
    with pytest.raises(ValidationError) as caught:
        service.apply([_on_interface("vm-a", "a", "tap7")], "tenant-a", "", principal=_tenant("a"))
    [problem] = caught.value.problems
    assert (problem.object_ref, problem.field) == ("Workload a/vm-a", "spec.interface")
    # Taken, but not by whom: the holder is another tenant's workload (issue 13).
    assert "already used on host 'hv1' by a workload of another namespace" in problem.problem
    assert "vm-b" not in problem.problem
    assert service.snapshot() == before
    # The same name on another host is another interface.
    service.apply([_on_interface("vm-a", "a", "tap7", host="hv2")], "tenant-a", "", principal=_tenant("a"))


def test_moving_a_workload_onto_a_host_where_its_interface_is_taken_is_refused(service: ControllerService) -> None:
    _two_tenants(service)
    service.apply([_on_interface("vm-b", "b", "tap7"), _on_interface("vm-a", "a", "tap7", host="hv2")], "admin", "")
    with pytest.raises(ValidationError, match="already used on host 'hv1'"):
        service.apply([_on_interface("vm-a", "a", "tap7", host="hv1")], "admin", "")


@pytest.mark.parametrize("iface,words", [("fab0", "belongs to the host"), ("lo", "belongs to the host"),
                                         ("eth0", "not a workload interface name")])
def test_workload_on_an_interface_of_the_host_is_refused(service: ControllerService, iface: str, words: str) -> None:
    _two_tenants(service)
    before = service.snapshot()
    with pytest.raises(ValidationError) as caught:
        service.apply([_on_interface("up", "a", iface)], "tenant-a", "", principal=_tenant("a"))
    [problem] = caught.value.problems
    assert (problem.object_ref, problem.field) == ("Workload a/up", "spec.interface") and words in problem.problem
    assert service.snapshot() == before


def test_rollback_to_a_revision_with_a_taken_interface_is_refused(service: ControllerService) -> None:
    from stockade.controller.store import Change
    from stockade.model.kinds import key_of, parse_object, to_document

    _two_tenants(service)
    service.apply([_on_interface("vm-b", "b", "tap7")], "admin", "")
    # A second workload on tap7, stored by a controller before this check.
    bad = parse_object(_on_interface("vm-a", "a", "tap7"))
    service.store.commit([Change(key_of(bad), to_document(bad))], "old-controller", "", datetime.now(timezone.utc))
    holding = service.revision()
    service.delete([key_of(bad)], "admin", "repair")
    before = service.snapshot()
    with pytest.raises(ValidationError) as caught:
        service.rollback(holding, "admin", "")
    assert [(p.object_ref, p.field) for p in caught.value.problems] == [("Workload a/vm-a", "spec.interface")]
    assert service.snapshot() == before
