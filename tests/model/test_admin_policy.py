"""AdminNetworkPolicy and BaselineAdminNetworkPolicy (policy.networking.k8s.io/v1alpha1) as upstream
validates them, and their meaning through the compiled program (issue 17). Pure."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from stockade.compile.trace import Flow, trace_flow
from stockade.model.admin_policy import AdminNetworkPolicy, BaselineAdminNetworkPolicy
from stockade.model.kinds import parse_object, resolve_kind
from stockade.model.state import DesiredState
from tests.netpol_world import netpol, nss, pods, world_docs

V1A1 = "policy.networking.k8s.io/v1alpha1"


def ns_is(name: str) -> dict[str, Any]:
    return {"matchLabels": {"kubernetes.io/metadata.name": name}}


def anp(name: str = "admin", priority: int = 10, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"priority": priority, "subject": {"namespaces": ns_is("x")}}
    body.update(spec)
    return {"apiVersion": V1A1, "kind": "AdminNetworkPolicy", "metadata": {"name": name}, "spec": body}


def banp(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"subject": {"namespaces": ns_is("x")}}
    body.update(spec)
    return {"apiVersion": V1A1, "kind": "BaselineAdminNetworkPolicy", "metadata": {"name": "default"}, "spec": body}


def rule(name: str, action: str, source: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "action": action, "from": [{"namespaces": ns_is(source)}], **extra}


def refusal(model: type, doc: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(pydantic.ValidationError) as caught:
        model.model_validate(doc)
    return [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in caught.value.errors()]


def test_the_v1alpha1_shapes_parse_with_their_short_names() -> None:
    doc = anp(ingress=[rule("deny-y", "Deny", "y", ports=[{"portNumber": {"port": 80}},
                                                          {"portRange": {"protocol": "UDP", "start": 53, "end": 54}},
                                                          {"namedPort": "web"}])],
              egress=[{"name": "to-net", "action": "Allow", "to": [{"networks": ["198.18.0.0/15"]}]}])
    parsed = AdminNetworkPolicy.model_validate(doc)
    assert parsed.spec.ingress[0].ports[0].portNumber.protocol == "TCP"  # type: ignore[index,union-attr]
    BaselineAdminNetworkPolicy.model_validate(banp(ingress=[rule("allow-y", "Allow", "y")]))
    assert (resolve_kind("anp").name, resolve_kind("banp").name) == ("AdminNetworkPolicy", "BaselineAdminNetworkPolicy")


@pytest.mark.parametrize("model, doc, field, words", [
    (AdminNetworkPolicy, anp(priority=1001), "spec.priority", "less than or equal to 1000"),
    (AdminNetworkPolicy, anp(ingress=[rule("a", "Accept", "y")]), "spec.ingress.0.action", "'Allow', 'Deny' or 'Pass'"),
    (AdminNetworkPolicy, anp(ingress=[rule("a", "Deny", "y")] * 101), "spec.ingress", "at most 100"),
    (AdminNetworkPolicy, anp(ingress=[rule("a", "Deny", "y", ports=[{"portRange": {"start": 9, "end": 9}}])]),
     "spec.ingress.0.ports.0.portRange", "less than end"),
    (AdminNetworkPolicy, anp(ingress=[rule("a", "Deny", "y", ports=[{"portNumber": {"port": 1}, "namedPort": "web"}])]),
     "spec.ingress.0.ports.0", "not portNumber, namedPort"),
    (AdminNetworkPolicy, anp(subject={"pods": {"podSelector": {}}}), "spec.subject.pods.namespaceSelector", "required"),
    (AdminNetworkPolicy, anp(egress=[{"action": "Deny", "to": [{"networks": ["198.18.0.0/16"]}],
                                      "ports": [{"namedPort": "web"}]}]), "spec.egress.0", "namedPort"),
    (AdminNetworkPolicy, anp(egress=[{"action": "Deny", "to": [{"nodes": {}}]}]), "spec.egress.0.to.0", "no Node objects"),
    (BaselineAdminNetworkPolicy, banp(ingress=[rule("p", "Pass", "y")]), "spec.ingress.0.action", "'Allow' or 'Deny'"),
    (BaselineAdminNetworkPolicy, {**banp(), "metadata": {"name": "other"}}, "", "named 'default'"),
    (BaselineAdminNetworkPolicy, banp(priority=3), "spec.priority", "Extra inputs are not permitted"),
    (BaselineAdminNetworkPolicy, banp(egress=[{"action": "Deny", "to": [{"domainNames": ["example.com"]}]}]),
     "spec.egress.0.to.0", "no domainNames peer"),
])
def test_what_upstream_refuses_is_refused_naming_the_field(model: type, doc: dict[str, Any], field: str,
                                                           words: str) -> None:
    found = refusal(model, doc)
    assert any((loc == field or not field) and words in msg for loc, msg in found), found


def check(state: DesiredState, src: str, dst: str, port: int = 80) -> tuple[str, list[str]]:
    result = trace_flow(state, Flow(tuple(src.split("/")), tuple(dst.split("/")), "tcp", port))  # type: ignore[arg-type]
    steps = result.ingress.rules if result.ingress is not None else []
    return result.verdict, [s["rule"] for s in steps if s["rule"] and not s["rule"].startswith("tier ")]


def test_admin_then_network_policy_then_baseline_as_for_cluster_network_policy() -> None:
    docs = [anp(ingress=[rule("deny-y-80", "Deny", "y", ports=[{"portNumber": {"port": 80}}]), rule("pass-z", "Pass", "z")]),
            banp(ingress=[rule("deny-z", "Deny", "z"), rule("allow-y", "Allow", "y")]),
            netpol("from-y-and-z", pods("a"), ingress=[{"from": [{"namespaceSelector": nss("y")},
                                                                  {"namespaceSelector": nss("z")}]}])]
    state = DesiredState.from_objects(1, [parse_object(d) for d in [*world_docs(), *docs]])
    assert check(state, "y/a", "x/a", 80) == ("deny", ["admin/deny-y-80"])
    assert check(state, "z/a", "x/a", 80)[0] == "allow"                       # pass → the NetworkPolicy
    assert check(state, "z/a", "x/b", 80) == ("deny", ["admin/pass-z", "default/deny-z"])   # pass → baseline
    assert check(state, "y/a", "x/b", 81) == ("allow", ["default/allow-y"])
    assert check(state, "x/c", "x/b", 80)[0] == "allow"                       # nothing isolates x/b
