"""ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2) as upstream validates it (issue 17,
item 1): what parses, and every refusal naming its field. Pure."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from stockade.errors import ValidationError
from stockade.model.cluster_policy import ClusterNetworkPolicy
from stockade.model.kinds import parse_object


def cnp(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "tier": "Admin", "priority": 10,
        "subject": {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "gryffindor"}}},
        "ingress": [{"name": "deny-from-slytherin-at-80", "action": "Deny",
                     "from": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "slytherin"}}}],
                     "protocols": [{"tcp": {"destinationPort": {"number": 80}}}]}],
        "egress": [{"name": "accept-to-dns", "action": "Accept",
                    "to": [{"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "dns"}}}},
                           {"networks": ["198.18.0.0/16", "2001:db8::/32"]}],
                    "protocols": [{"udp": {"destinationPort": {"range": {"start": 53, "end": 54}}}}]}],
    }
    base.update(spec)
    return {"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
            "metadata": {"name": "guardrail"}, "spec": base}


def problems(doc: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(pydantic.ValidationError) as caught:
        ClusterNetworkPolicy.model_validate(doc)
    return [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in caught.value.errors()]


def test_an_upstream_shaped_policy_parses_and_is_served_back_as_written() -> None:
    doc = cnp()
    policy = ClusterNetworkPolicy.model_validate(doc)
    assert policy.spec.tier == "Admin" and policy.spec.egress[0].to[1].networks == ["198.18.0.0/16", "2001:db8::/32"]  # type: ignore[index]
    back = policy.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert back["spec"]["ingress"] == doc["spec"]["ingress"]
    baseline = cnp(tier="Baseline", subject={"pods": {"podSelector": {}}}, ingress=None, egress=None)
    assert ClusterNetworkPolicy.model_validate(baseline).spec.subject.pods is not None
    # A CIDR with host bits is a CIDR to upstream's isCIDR, and a named port goes with pod peers.
    loose = cnp(egress=[{"action": "Pass", "to": [{"networks": ["198.18.1.7/16"]}]},
                        {"action": "Accept", "to": [{"namespaces": {}}],
                         "protocols": [{"destinationNamedPort": "http"}]}])
    ClusterNetworkPolicy.model_validate(loose)


def _with(path: list[Any], value: Any) -> dict[str, Any]:
    doc = cnp()
    node: Any = doc["spec"]
    for step in path[:-1]:
        node = node[step]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


_DELETE = object()
PEER = {"namespaces": {}}


@pytest.mark.parametrize("path, value, field, words", [
    (["tier"], "Platform", "spec.tier", "'Admin' or 'Baseline'"),
    (["priority"], 1001, "spec.priority", "less than or equal to 1000"),
    (["priority"], -1, "spec.priority", "greater than or equal to 0"),
    (["subject"], {}, "spec.subject", "exactly one of namespaces, pods"),
    (["subject"], {"namespaces": {}, "pods": {"podSelector": {}}}, "spec.subject", "not namespaces, pods"),
    (["subject", "pods"], {"namespaceSelector": {}}, "spec.subject.pods.podSelector", "required"),
    (["ingress"], [{"action": "Deny", "from": [PEER]}] * 26, "spec.ingress", "at most 25"),
    (["ingress", 0, "action"], "Allow", "spec.ingress.0.action", "'Accept', 'Deny' or 'Pass'"),
    (["ingress", 0, "from"], [], "spec.ingress.0.from", "at least 1"),
    (["ingress", 0, "from"], [PEER] * 26, "spec.ingress.0.from", "at most 25"),
    (["ingress", 0, "name"], "n" * 101, "spec.ingress.0.name", "at most 100"),
    (["ingress", 0, "from", 0], {"networks": ["198.18.0.0/16"]}, "spec.ingress.0.from.0.networks",
     "Extra inputs are not permitted"),
    (["ingress", 0, "protocols"], [], "spec.ingress.0.protocols", "at least 1"),
    (["ingress", 0, "protocols", 0], {"tcp": {"destinationPort": {"number": 80}}, "udp": {"destinationPort": {"number": 80}}},
     "spec.ingress.0.protocols.0", "not tcp, udp"),
    (["ingress", 0, "protocols", 0, "tcp"], {}, "spec.ingress.0.protocols.0.tcp.destinationPort", "required"),
    (["ingress", 0, "protocols", 0, "tcp", "destinationPort"], {"number": 0},
     "spec.ingress.0.protocols.0.tcp.destinationPort.number", "greater than or equal to 1"),
    (["ingress", 0, "protocols", 0, "tcp", "destinationPort"], {"range": {"start": 90, "end": 90}},
     "spec.ingress.0.protocols.0.tcp.destinationPort.range", "less than end"),
    (["ingress", 0, "protocols", 0, "tcp", "destinationPort"], {"number": 80, "range": {"start": 1, "end": 2}},
     "spec.ingress.0.protocols.0.tcp.destinationPort", "not number, range"),
    (["ingress", 0, "protocols", 0], {"destinationNamedPort": "Web_Port"},
     "spec.ingress.0.protocols.0.destinationNamedPort", "not a valid port name"),
    (["egress", 0, "to", 1, "networks"], ["198.18.0.0/33"], "spec.egress.0.to.1.networks", "not a valid CIDR"),
    (["egress", 0, "to", 1, "networks"], ["198.18.0.0/16", "198.18.0.0/16"], "spec.egress.0.to.1.networks", "twice"),
    (["egress", 0, "to", 1], {"nodes": {}}, "spec.egress.0.to.1", "no Node objects"),
    (["egress", 0], {"name": "no-cdn", "action": "Deny", "to": [{"domainNames": ["*.cdn.example"]}]},
     "spec.egress.0", "only allowed in an Accept rule"),
    (["egress", 0, "to", 1], {"domainNames": ["a.example", "A.Example."]}, "spec.egress.0.to.1.domainNames",
     "the same domain name twice"),
    (["egress", 0, "to", 1], {"domainNames": ["x" * 64 + ".example"]}, "spec.egress.0.to.1.domainNames",
     "not a valid label"),
    (["egress", 0, "to", 1], {"domainNames": ["example.*"]}, "spec.egress.0.to.1.domainNames", "'*.' may only lead"),
    (["egress", 0, "protocols"], [{"destinationNamedPort": "dns"}], "spec.egress.0",
     "cannot be used with a networks"),
    (["egress", 0, "to", 0, "pods", "podSelector"], {"matchLabels": {"app": "dns"}, "extra": 1},
     "spec.egress.0.to.0.pods.podSelector.extra", "Extra inputs are not permitted"),
])
def test_what_upstream_refuses_is_refused_naming_the_field(path: list[Any], value: Any, field: str, words: str) -> None:
    found = problems(_with(path, copy.deepcopy(value)))
    assert any(loc == field and words in msg for loc, msg in found), found


def test_a_cluster_policy_is_not_namespaced_and_names_are_dns_labels() -> None:
    doc = cnp()
    doc["metadata"] = {"name": "guardrail", "namespace": "x"}
    assert any("not namespaced" in msg for _, msg in problems(doc))
    doc["metadata"] = {"name": "Guardrail"}
    assert any(loc == "metadata.name" for loc, _ in problems(doc))


# ------------------------------------------------------------------ semantics, through the compiled program

from stockade.compile.trace import Flow, trace_flow  # noqa: E402
from stockade.model.kinds import parse_object  # noqa: E402
from stockade.model.state import DesiredState  # noqa: E402
from tests.netpol_world import netpol, nss, pods, world_docs  # noqa: E402


def ns_is(name: str) -> dict[str, Any]:
    return {"matchLabels": {"kubernetes.io/metadata.name": name}}


def policy(name: str, tier: str, priority: int, ingress: list[dict[str, Any]], **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
            "metadata": {"name": name, **meta},
            "spec": {"tier": tier, "priority": priority, "subject": {"namespaces": ns_is("x")}, "ingress": ingress}}


def rule(name: str, action: str, source: str, port: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "action": action, "from": [{"namespaces": ns_is(source)}]}
    if port is not None:
        out["protocols"] = [{"tcp": {"destinationPort": {"number": port}}}]
    return out


ADMIN = policy("admin", "Admin", 10, [rule("deny-y-80", "Deny", "y", 80), rule("pass-z", "Pass", "z")])
BASELINE = policy("baseline", "Baseline", 10, [rule("deny-z", "Deny", "z"), rule("accept-y", "Accept", "y")])
# x/a is isolated by a NetworkPolicy that admits y and z; x/b and x/c by none.
NP = netpol("from-y-and-z", pods("a"), ingress=[{"from": [{"namespaceSelector": nss("y")},
                                                          {"namespaceSelector": nss("z")}]}])


def state_with(*docs: dict[str, Any]) -> DesiredState:
    return DesiredState.from_objects(1, [parse_object(d) for d in [*world_docs(), *docs]])


def check(state: DesiredState, src: str, dst: str, port: int = 80) -> tuple[str, list[str]]:
    s, d = tuple(src.split("/")), tuple(dst.split("/"))
    result = trace_flow(state, Flow(s, d, "tcp", port))  # type: ignore[arg-type]
    steps = result.ingress.rules if result.ingress is not None else []
    return result.verdict, [step["rule"] for step in steps if step["rule"] and not step["rule"].startswith("tier ")]


def test_admin_then_network_policy_then_baseline_then_the_default() -> None:
    state = state_with(ADMIN, BASELINE, NP)
    # Admin Deny decides first, whatever the NetworkPolicy allows; deny drops (no reject).
    assert check(state, "y/a", "x/a", 80) == ("deny", ["admin/deny-y-80"])
    assert check(state, "y/a", "x/a", 81)[0] == "allow"               # the NetworkPolicy allows
    # Pass skips the rest of the admin tier: the NetworkPolicy decides for x/a ...
    assert check(state, "z/a", "x/a", 80)[0] == "allow"
    # ... and the baseline for x/b, which no NetworkPolicy selects.
    assert check(state, "z/a", "x/b", 80) == ("deny", ["admin/pass-z", "baseline/deny-z"])
    assert check(state, "y/a", "x/b", 81) == ("allow", ["baseline/accept-y"])
    # Isolated by the NetworkPolicy: what it does not allow is denied before the baseline.
    assert check(state, "x/b", "x/a", 80) == ("deny", ["x/default-deny/ingress"])
    # Neither tier matches and nothing isolates x/c: the namespace's default (allow, as Kubernetes).
    assert check(state, "x/b", "x/c", 80)[0] == "allow"


def test_a_cluster_policy_never_isolates_and_audit_mode_decides_nothing() -> None:
    only_admin = state_with(policy("admin", "Admin", 10, [rule("deny-y", "Deny", "y")]))
    assert check(only_admin, "y/a", "x/a")[0] == "deny"
    assert check(only_admin, "z/a", "x/a")[0] == "allow"     # the subject is not closed to the rest
    audited = state_with(policy("admin", "Admin", 10, [rule("deny-y", "Deny", "y")],
                                annotations={"stockade.io/mode": "audit"}))
    assert check(audited, "y/a", "x/a")[0] == "allow"


def test_priority_orders_the_admin_tier_and_egress_networks_and_pod_subjects_apply() -> None:
    first = policy("first", "Admin", 1, [rule("accept-y", "Accept", "y")])
    second = policy("second", "Admin", 2, [rule("deny-y", "Deny", "y")])
    assert check(state_with(first, second), "y/a", "x/a") == ("allow", ["first/accept-y"])
    swapped = {**first, "spec": {**first["spec"], "priority": 3}}
    assert check(state_with(swapped, second), "y/a", "x/a") == ("deny", ["second/deny-y"])
    egress = {"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
              "metadata": {"name": "no-z"},
              "spec": {"tier": "Admin", "priority": 5, "subject": {"pods": {"podSelector": pods("a")}},
                       "egress": [{"name": "Deny Z's Network!", "action": "Deny",
                                   "to": [{"networks": ["198.18.0.0/15"]}]}]}}
    state = state_with(egress)
    blocked = trace_flow(state, Flow(("y", "a"), ("z", "b"), "tcp", 80))
    assert blocked.verdict == "deny"
    [decided] = [s["rule"] for s in blocked.egress.rules if s["rule"].startswith("no-z/")]
    assert decided.startswith("no-z/deny-z-s-network-")  # the upstream name, made a rule id
    assert trace_flow(state, Flow(("y", "b"), ("z", "b"), "tcp", 80)).verdict == "allow"  # not a subject


# ------------------------------------------------------------------ upstream's own fixtures

UPSTREAM = Path(__file__).resolve().parents[1] / "e2e" / "conformance" / "upstream" / "base"
FIXTURES = sorted(UPSTREAM.rglob("*.yaml"))


@pytest.mark.parametrize("path", FIXTURES, ids=[str(p.relative_to(UPSTREAM)) for p in FIXTURES])
def test_every_upstream_conformance_fixture_is_taken_unchanged_or_refused_for_nodes(path: Path) -> None:
    """Upstream's manifests as a platform team brings them: each object parses as it is, except the
    experimental egress-selector fixtures, whose `nodes` peers are refused naming the field."""
    # The experimental fixtures are Go templates: the suite fills in the nodes' host-network ports.
    text = re.sub(r"\{\{ index \.HostNetworkPorts (\d+) \}\}", lambda m: str(30000 + int(m.group(1))),
                  path.read_text())
    for doc in (d for d in yaml.safe_load_all(text) if d):
        if path.name.startswith("experimental-egress-selector"):
            with pytest.raises(ValidationError) as refused:
                parse_object(doc)
            assert "nodes" in str(refused.value) and "no Node objects" in str(refused.value)
        else:
            assert parse_object(doc).metadata.name == doc["metadata"]["name"]


def test_the_fixtures_are_all_here() -> None:
    assert len(FIXTURES) == 20  # upstream's conformance/base without manifests.yaml (the lab's world)
