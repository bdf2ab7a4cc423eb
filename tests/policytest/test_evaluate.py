"""Evaluating expectations with trace: verdicts and deciding rules."""

from __future__ import annotations

import pytest

from stockade.errors import ValidationError
from stockade.policytest import evaluate, proposed_state
from stockade.policytest.expectations import Expectation
from tests.policytest.examples import example_documents, problems_of


def _entry(index: int, src: str, dst: str, expect: str, port: int | None = 80, protocol: str = "tcp",
           family: int = 4) -> Expectation:
    s, d = tuple(src.split("/")), tuple(dst.split("/"))
    return Expectation(index, s, d, protocol, expect, port, family)  # type: ignore[arg-type]


def test_evaluation_reports_verdict_and_deciding_rule_of_each_flow() -> None:
    state = proposed_state(example_documents())
    report = evaluate(state, [
        _entry(1, "shop/lb-1", "shop/web-2", "allow", 8080),
        _entry(2, "shop/web-1", "shop/db-1", "allow", 5432),   # wrong: web may not skip the app tier
        _entry(3, "shop/lb-1", "shop/web-1", "deny", 8080),    # wrong: lb reaches web
    ])
    assert (report.passed, report.failed, report.summary()) == (1, 2, "1 passed, 2 failed")
    ok, skip, lb = report.outcomes
    assert ok.passed and ok.deciding_rule == "shop/web/http-from-lb" and ok.deciding_side == "ingress"
    assert (skip.got, skip.deciding_rule, skip.deciding_side) == ("deny", "shop/default-deny/egress", "egress")
    assert report.misses == (skip, lb)
    as_json = report.to_dict()
    assert (as_json["passed"], as_json["failed"]) == (1, 2)
    assert as_json["results"][1]["from"] == "shop/web-1" and as_json["results"][1]["got"] == "deny"
    assert as_json["results"][1]["trace"]["egress"]["host"] == "hv1"


def test_evaluation_sees_tiers_reject_and_global_policy() -> None:
    docs = example_documents() + [{
        "apiVersion": "stockade.io/v1", "kind": "GlobalPolicy", "metadata": {"name": "no-db-from-lb"},
        "spec": {"tier": "platform", "appliesTo": {"selector": {"matchLabels": {"tier": "lb"}}},
                 "egress": [{"id": "reject-web", "action": "reject", "to": [{"group": "shop/web"}]}]},
    }]
    report = evaluate(proposed_state(docs), [_entry(1, "shop/lb-1", "shop/web-2", "reject", 8080)])
    assert report.failed == 0
    assert report.outcomes[0].deciding_rule == "no-db-from-lb/reject-web"


def test_evaluation_takes_kubernetes_network_policies_in_a_proposal() -> None:
    docs = [
        {"apiVersion": "stockade.io/v1", "kind": "Namespace", "metadata": {"name": "k8s"},
         "spec": {"defaultAction": "allowUntilSelected"}},
        *({"apiVersion": "stockade.io/v1", "kind": "Workload",
           "metadata": {"name": n, "namespace": "k8s", "labels": {"app": n}},
           "spec": {"host": "hv1", "ports": [{"name": "web", "port": 8081}]}} for n in ("a", "b", "c")),
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "b", "namespace": "k8s"},
         "spec": {"podSelector": {"matchLabels": {"app": "b"}},
                  "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}], "ports": [{"port": "web"}]}]}},
    ]
    report = evaluate(proposed_state(docs), [
        _entry(1, "k8s/a", "k8s/b", "allow", 8081),   # the named port, from the selected pod
        _entry(2, "k8s/c", "k8s/b", "deny", 8081),    # b is isolated for ingress now
        _entry(3, "k8s/b", "k8s/c", "allow", 9999),   # c is selected by nothing: open
    ])
    assert report.failed == 0, [o.to_dict() for o in report.misses]
    assert [o.deciding_rule for o in report.outcomes] == \
        ["k8s/b/ingress-0", "k8s/default-deny/ingress", "k8s/default-allow/ingress"]


def test_evaluation_refuses_unknown_workloads_and_missing_families() -> None:
    docs = [d for d in example_documents() if d["metadata"]["name"] != "lb-1"]
    web1 = next(d for d in docs if d["metadata"]["name"] == "web-1")
    web1["spec"]["ips"] = ["198.18.10.11"]  # IPv4 only
    with pytest.raises(ValidationError) as exc:
        evaluate(proposed_state(docs), [_entry(1, "shop/lb-1", "shop/web-2", "allow"),
                                        _entry(2, "shop/web-2", "shop/web-1", "deny", family=6)])
    assert problems_of(exc) == {("entry 1", "from"), ("entry 2", "family")}


