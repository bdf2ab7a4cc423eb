"""GET /api/v1/rules (controller.rule_hits): tiers -> policies -> rules with the hosts' counters.

The real app (build_app over a SQLite file, TestClient over HTTP): the agents report their
counters through PUT /agents/HOST/status with their own host tokens and their flow records
through PUT /agents/HOST/flows, exactly as agents do; the view is read back with admin, viewer,
tenant and agent tokens. The tenant tests are attacks: tenant `a` trying to read `b`'s rules
and counters, or the platform's, through this view.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from stockade.controller.api import build_app
from stockade.controller.auth import create_token_file
from stockade.controller.config import ControllerConfig
from stockade.model.validation import ValidationSettings
from tests.controller.conftest import HOSTS
from tests.controller.controller_docs import group, namespace, workload

API = "/api/v1"
V1 = "stockade.io/v1"


def _policy(name: str, ns: str | None, *, tier: str = "application", order: int = 100, mode: str = "enforce",
            ingress: list[dict[str, Any]] | None = None, egress: list[dict[str, Any]] | None = None,
            applies: dict[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if ns is not None:
        meta["namespace"] = ns
    return {"apiVersion": V1, "kind": "Policy" if ns else "GlobalPolicy", "metadata": meta,
            "spec": {"tier": tier, "order": order, "mode": mode, "appliesTo": applies or {"group": "web"},
                     "ingress": ingress or [], "egress": egress or []}}


WORLD = [
    namespace("a"), namespace("b"),
    {"apiVersion": V1, "kind": "Namespace", "metadata": {"name": "c"}, "spec": {"defaultAction": "allowUntilSelected"}},
    workload("web", ns="a", host="hv1", ips=["198.18.1.10"], tier="web"),
    workload("lb", ns="a", host="hv2", ips=["198.18.1.11"], tier="lb"),
    workload("db", ns="b", host="hv1", ips=["198.18.2.20"], tier="web"),
    group("web", ns="a", tier="web"), group("lb", ns="a", tier="lb"), group("web", ns="b", tier="web"),
    _policy("web-in", "a", order=20, ingress=[
        {"id": "https", "action": "allow", "from": [{"group": "lb"}], "ports": [{"protocol": "TCP", "port": 443}]},
        {"id": "ping", "action": "allow", "ports": [{"protocol": "ICMP", "type": 8}]}]),
    _policy("watch", "a", order=10, mode="audit", ingress=[
        {"id": "block-ssh", "action": "deny", "ports": [{"protocol": "TCP", "port": 22}]},
        {"id": "note", "action": "allow", "from": [{"cidr": "198.19.0.0/16", "except": ["198.19.5.0/24"]}]}]),
    _policy("db-in", "b", ingress=[{"id": "sql", "action": "allow", "ports": [{"protocol": "TCP", "port": 5432}]}]),
    _policy("platform-guard", None, tier="platform", applies={"selector": {}},
            egress=[{"id": "no-smtp", "action": "deny", "ports": [{"protocol": "TCP", "port": 25}]}]),
]

HV1_COUNTERS = {"a/web-in/https": {"ingress": {"packets": 10, "bytes": 600}},
                "a/watch/block-ssh": {"ingress": {"packets": 3, "bytes": 180}},
                "b/db-in/sql": {"ingress": {"packets": 7, "bytes": 420}},
                "platform-guard/no-smtp": {"egress": {"packets": 2, "bytes": 120}},
                "a/default-deny/ingress": {"ingress": {"packets": 4, "bytes": 240}}}
HV2_COUNTERS = {"a/web-in/https": {"ingress": {"packets": 5, "bytes": 300}},
                "b/db-in/sql": {"ingress": {"packets": 1, "bytes": 60}}}


def _flow(rule: str, *, event: str = "start", verdict: str = "allow", dst: str = "a/web",
          dst_ip: str = "198.18.1.10") -> dict[str, Any]:
    def end(ref: str | None, ip: str, port: int | None) -> dict[str, Any]:
        return {"ip": ip, "port": port, "workload": ref, "namespace": ref.split("/")[0] if ref else None}
    out = {"time": "2030-01-01T00:00:00Z", "host": "hv1", "direction": "ingress", "verdict": verdict, "rule": rule,
           "protocol": "tcp", "family": 4, "src": end("a/lb", "198.18.1.11", 40000), "dst": end(dst, dst_ip, 443),
           "icmpType": None, "event": event}
    if event == "end":
        out.update(packets=9, bytes=900, replyPackets=4, replyBytes=400)
    return out


class Api:
    def __init__(self, client: TestClient, tokens: dict[str, str]) -> None:
        self.client, self.tokens = client, tokens

    def get(self, who: str | None, **params: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return self.client.get(f"{API}/rules", headers=headers, params=params)

    def rules(self, who: str = "root", **params: str) -> dict[str, Any]:
        res = self.get(who, **params)
        assert res.status_code == 200, res.text
        return res.json()

    def report(self, host: str, counters: dict[str, Any], omitted: int = 0) -> httpx.Response:
        return self.client.put(f"{API}/agents/{host}/status", headers={"Authorization": f"Bearer {self.tokens[host]}"},
                               json={"revision": 1, "inSync": True, "ruleCounters": counters,
                                     "ruleCountersOmitted": omitted})

    def flows(self, host: str, records: list[dict[str, Any]]) -> None:
        res = self.client.put(f"{API}/agents/{host}/flows", headers={"Authorization": f"Bearer {self.tokens[host]}"},
                              json={"records": records, "dropped": 0})
        assert res.status_code == 200, res.text


def _tokens(tmp_path: Path) -> dict[str, str]:
    return create_token_file(tmp_path / "tokens.json", [
        {"name": "root", "role": "admin"}, {"name": "viewer", "role": "viewer"},
        {"name": "tenant-a", "role": "tenant", "namespaces": ["a"]},
        {"name": "hv1", "role": "agent", "host": "hv1"}, {"name": "hv2", "role": "agent", "host": "hv2"}])


def _config(tmp_path: Path) -> ControllerConfig:
    return ControllerConfig(db_path=tmp_path / "stockade.db", tokens_file=tmp_path / "tokens.json",
                            validation=ValidationSettings(known_hosts=HOSTS))


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    tokens = _tokens(tmp_path)
    with TestClient(build_app(_config(tmp_path))) as client:
        client.app.state.service.apply(WORLD, "root", "world")  # type: ignore[attr-defined]
        yield Api(client, tokens)


def _all_rules(view: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for tier in view["tiers"]:
        for policy in tier["policies"]:
            for rule in policy["rules"]:
                out[(rule["id"], rule["direction"])] = rule
    for d in view["defaults"]:
        for rule in d["rules"]:
            out[(rule["id"], rule["direction"])] = rule
    return out


def _with_reports(api: Api) -> None:
    assert api.report("hv1", HV1_COUNTERS).status_code == 200
    assert api.report("hv2", HV2_COUNTERS).status_code == 200


# ------------------------------------------------------------------ what it shows


def test_counters_from_the_hosts_reports_are_summed_and_given_per_host(api: Api) -> None:
    _with_reports(api)
    rules = _all_rules(api.rules())
    https = rules[("a/web-in/https", "ingress")]
    assert (https["packets"], https["bytes"]) == (15, 900)
    assert https["hosts"] == [{"host": "hv1", "packets": 10, "bytes": 600}, {"host": "hv2", "packets": 5, "bytes": 300}]
    assert (rules[("b/db-in/sql", "ingress")]["packets"], rules[("platform-guard/no-smtp", "egress")]["packets"]) == (8, 2)
    assert rules[("a/default-deny/ingress", "ingress")]["packets"] == 4
    # A newer report replaces the host's previous one: counters are the kernel's totals, not deltas.
    assert api.report("hv2", {"a/web-in/https": {"ingress": {"packets": 6, "bytes": 360}}}).status_code == 200
    assert _all_rules(api.rules())[("a/web-in/https", "ingress")]["packets"] == 16


def test_the_tree_is_tiers_then_policies_in_evaluation_order_with_rules_as_text(api: Api) -> None:
    view = api.rules()
    assert [t["name"] for t in view["tiers"]][:3] == ["platform", "application", "baseline"]
    platform, application = view["tiers"][0], view["tiers"][1]
    assert [(p["kind"], p["name"]) for p in platform["policies"]] == [("GlobalPolicy", "platform-guard")]
    assert [(p["namespace"], p["name"], p["order"]) for p in application["policies"]] == [
        ("a", "watch", 10), ("a", "web-in", 20), ("b", "db-in", 100)]
    web_in = application["policies"][1]
    assert (web_in["mode"], web_in["appliesTo"], web_in["tier"]) == ("enforce", "group web", "application")
    https, ping = web_in["rules"]
    assert (https["id"], https["direction"], https["action"], https["peers"], https["ports"]) == \
        ("a/web-in/https", "ingress", "allow", "group lb", "TCP 443")
    assert (ping["peers"], ping["ports"]) == ("any", "ICMP type 8")
    note = application["policies"][0]["rules"][1]
    assert note["peers"] == "cidr 198.19.0.0/16 except 198.19.5.0/24"
    assert platform["policies"][0]["appliesTo"] == "selector (all)"
    # The namespaces' defaults after the tiers: allowUntilSelected has both an allow and a deny.
    defaults = {d["namespace"]: d for d in view["defaults"]}
    assert [r["id"] for r in defaults["a"]["rules"]] == ["a/default-deny/ingress", "a/default-deny/egress"]
    assert {r["id"] for r in defaults["c"]["rules"]} == {"c/default-deny/ingress", "c/default-deny/egress",
                                                         "c/default-allow/ingress", "c/default-allow/egress"}


def test_flows_count_the_start_records_in_the_history_that_name_the_rule(api: Api) -> None:
    api.flows("hv1", [_flow("a/web-in/https"), _flow("a/web-in/https"), _flow("a/web-in/https", event="end"),
                      _flow("a/default-deny/ingress", verdict="deny")])
    rules = _all_rules(api.rules())
    assert rules[("a/web-in/https", "ingress")]["flows"] == 2  # the end record is the same flow ending
    assert rules[("a/default-deny/ingress", "ingress")]["flows"] == 1
    assert rules[("a/web-in/ping", "ingress")]["flows"] == 0


def test_a_rule_no_host_counted_and_no_flow_names_is_unused(api: Api) -> None:
    api.flows("hv1", [_flow("a/web-in/ping")])  # a flow but no packet counted yet: used
    _with_reports(api)
    rules = _all_rules(api.rules())
    assert rules[("a/web-in/https", "ingress")]["unused"] is False
    assert rules[("a/web-in/ping", "ingress")]["unused"] is False
    assert rules[("a/watch/note", "ingress")]["unused"] is True
    assert rules[("a/default-deny/egress", "egress")]["unused"] is True


def test_an_audit_rule_says_what_it_would_deny_and_an_enforcing_one_does_not(api: Api) -> None:
    _with_reports(api)
    rules = _all_rules(api.rules())
    assert rules[("a/watch/block-ssh", "ingress")]["wouldDeny"] == 3
    assert rules[("a/watch/note", "ingress")]["wouldDeny"] == 0  # an audit allow would deny nothing
    assert rules[("a/web-in/https", "ingress")]["wouldDeny"] is None


def test_one_rule_is_asked_for_by_its_id(api: Api) -> None:
    _with_reports(api)
    view = api.rules(rule="a/web-in/https")
    assert [r["id"] for r in _all_rules(view).values()] == ["a/web-in/https"]
    assert view["tiers"][0]["policies"][0]["name"] == "web-in"
    assert [(r["id"], r["packets"]) for r in view["rules"]] == [("a/web-in/https", 15)]
    default = api.rules(rule="a/default-deny/ingress")
    assert [(r["id"], r["packets"]) for r in default["rules"]] == [("a/default-deny/ingress", 4)]
    assert default["tiers"] == [] and [d["namespace"] for d in default["defaults"]] == ["a"]
    assert api.rules()["rules"] is None  # the whole view is the tree alone
    missing = api.get("root", rule="a/web-in/nope")
    assert missing.status_code == 404 and "a/web-in/nope" in missing.json()["message"]
    bad = api.get("root", rule="no-slashes")
    assert bad.status_code == 422 and "query.rule" in bad.text


def test_counters_survive_a_controller_restart(tmp_path: Path) -> None:
    """The reports repository keeps the counters it was given (the agents' next heartbeats would
    replace them anyway, but a restarted controller does not show every rule unused meanwhile)."""
    tokens = _tokens(tmp_path)
    with TestClient(build_app(_config(tmp_path))) as client:
        client.app.state.service.apply(WORLD, "root", "world")  # type: ignore[attr-defined]
        _with_reports(Api(client, tokens))
    with TestClient(build_app(_config(tmp_path))) as client:
        rules = _all_rules(Api(client, tokens).rules())
    assert rules[("a/web-in/https", "ingress")]["packets"] == 15


def test_a_report_with_a_bad_counter_is_refused_naming_the_field(api: Api) -> None:
    res = api.report("hv1", {"a/web-in/https": {"sideways": {"packets": 1, "bytes": 1}}})
    assert res.status_code == 422 and "ruleCounters" in res.text and "sideways" in res.text
    res = api.report("hv1", {"a/web-in/https": {"ingress": {"packets": -1, "bytes": 1}}})
    assert res.status_code == 422 and "packets" in res.text


def test_the_hosts_caps_are_shown_to_operators(api: Api) -> None:
    assert api.report("hv1", HV1_COUNTERS, omitted=12).status_code == 200
    assert api.rules()["omitted"] == {"hv1": 12}
    assert api.rules("tenant-a")["omitted"] == {}


# ------------------------------------------------------------------ who may read it


def test_the_route_refuses_without_a_token_and_to_an_agent(api: Api) -> None:
    assert api.get(None).status_code == 401
    assert api.get("hv1").status_code == 403  # a host credential is no browser
    assert api.get("viewer").status_code == 200


def test_attack_a_tenant_reads_no_other_tenants_rules_or_counters(api: Api) -> None:
    _with_reports(api)
    api.flows("hv1", [_flow("b/db-in/sql", dst="b/db", dst_ip="198.18.2.20")])
    view = api.rules("tenant-a")
    text = json.dumps(view)
    for secret in ("db-in", "b/", "platform-guard", "no-smtp"):
        assert secret not in text, f"tenant a sees {secret!r}"
    assert [d["namespace"] for d in view["defaults"]] == ["a"]
    # Its own rules, counted on every host, are there.
    assert _all_rules(view)[("a/web-in/https", "ingress")]["packets"] == 15
    # Asking by id: the same 403 for another tenant's rule that exists and one that does not.
    taken, made_up = api.get("tenant-a", rule="b/db-in/sql"), api.get("tenant-a", rule="b/made-up/x")
    assert (taken.status_code, made_up.status_code) == (403, 403)
    assert taken.json()["message"].replace("db-in", "made-up") == made_up.json()["message"]
    assert api.get("tenant-a", rule="platform-guard/no-smtp").status_code == 403
    assert api.get("tenant-a", rule="b/default-deny/ingress").status_code == 403


def test_attack_a_tenant_reads_no_host_counters_through_the_status(api: Api) -> None:
    _with_reports(api)
    res = api.client.get(f"{API}/status", headers={"Authorization": f"Bearer {api.tokens['tenant-a']}"})
    assert res.status_code == 200
    assert "db-in" not in res.text and "ruleCounters" not in res.text
