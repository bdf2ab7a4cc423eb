"""Kubernetes NetworkPolicy (model.k8s): parsing, translation to the native Policy, and its
meaning evaluated on the compiled programs by `trace_flow` — no kernel needed.

The semantics part runs every truth-table case of tests/netpol_world.py (the world of
upstream's test/e2e/network/netpol) through trace; tests/e2e/test_netpol_truth_table.py runs
the same cases with real packets.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from stockade.compile.host import compile_host
from stockade.compile.trace import Flow, trace_flow
from stockade.errors import ValidationError
from stockade.model.k8s import NETWORK_POLICY_ORDER, SOURCE_KIND_ANNOTATION, NetworkPolicy, host_bits_warnings, to_native
from stockade.model.kinds import ObjectKey, parse_object, parse_stored, to_document
from stockade.model.objects import LabelSelector
from stockade.model.state import DesiredState
from stockade.model.validation import ValidationSettings, validate_state
from tests.netpol_world import (
    PAIRS,
    Case,
    Check,
    Reachability,
    cases,
    compare,
    namespace_doc,
    netpol,
    nss,
    pods,
    trace_matrix,
    workload_doc,
    world_docs,
)

REF = "NetworkPolicy x/p"


def parse(doc: dict[str, Any]) -> NetworkPolicy:
    obj = parse_object(doc)
    assert isinstance(obj, NetworkPolicy)
    return obj


def refusal(doc: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as e:
        parse_object(doc)
    return e.value


# ------------------------------------------------------------------ podSelector

@pytest.mark.parametrize("spec", [{"podSelector": None}, {}], ids=["null", "absent"])
def test_a_null_or_absent_pod_selector_selects_every_pod_as_the_api_server_decodes_it(spec):
    """Upstream's conformance fixture writes `podSelector:` with no value; the API server takes it."""
    doc = netpol("p", {}, ingress=[{}])
    doc["spec"] = {**{k: v for k, v in doc["spec"].items() if k != "podSelector"}, **spec}
    native = to_native(parse(doc))
    assert native.spec.appliesTo.selector == to_native(parse(netpol("p", {}, ingress=[{}]))).spec.appliesTo.selector


# ------------------------------------------------------------------ policyTypes

def test_policy_types_default_to_ingress_without_egress_rules():
    np = parse(netpol("p", {}, ingress=[{}]))
    assert np.policy_types() == ("Ingress",)
    assert to_native(np).spec.types == ["Ingress"]


def test_policy_types_default_adds_egress_when_there_are_egress_rules():
    np = parse(netpol("p", {}, egress=[{"to": [{"podSelector": {}}]}]))
    assert np.policy_types() == ("Ingress", "Egress")
    native = to_native(np)
    assert native.spec.types == ["Ingress", "Egress"]
    assert native.spec.ingress == []   # selected for ingress with no rule: isolated for ingress


def test_empty_egress_list_without_policy_types_does_not_isolate_egress():
    # Upstream SetDefaults_NetworkPolicy adds Egress only when len(spec.egress) != 0;
    # a default-deny-egress needs policyTypes: [Egress].
    np = parse(netpol("p", {}, egress=[]))
    assert np.policy_types() == ("Ingress",)
    state = world_state(netpol("p", {}, egress=[]))
    assert verdict(state, "x/a", "y/a") == "allow"      # egress of x/a still open
    assert verdict(state, "y/a", "x/a") == "deny"       # ingress of x/a isolated


def test_empty_policy_types_list_takes_the_default():
    np = parse(netpol("p", {}, types=[], egress=[{}]))
    assert np.policy_types() == ("Ingress", "Egress")


def test_explicit_policy_types_drop_rules_of_other_directions():
    np = parse(netpol("p", pods("a"), types=["Egress"], ingress=[{}], egress=[{"to": [{"podSelector": {}}]}]))
    native = to_native(np)
    assert native.spec.types == ["Egress"]
    assert native.spec.ingress == [] and len(native.spec.egress) == 1


def test_egress_only_policy_leaves_ingress_open():
    state = world_state(netpol("p", {}, types=["Egress"]))
    assert verdict(state, "y/a", "x/a") == "allow"
    assert verdict(state, "x/a", "y/a") == "deny"


# ------------------------------------------------------------------ rules and peers

def test_empty_ingress_list_isolates_and_allows_nothing():
    native = to_native(parse(netpol("p", {}, ingress=[])))
    assert native.spec.types == ["Ingress"] and native.spec.ingress == []


@pytest.mark.parametrize("rule", [{}, {"from": []}, {"ports": []}, {"from": [], "ports": []}],
                         ids=["empty-rule", "empty-from", "empty-ports", "both-empty"])
def test_missing_or_empty_from_and_ports_match_everything(rule):
    native = to_native(parse(netpol("p", {}, ingress=[rule])))
    [r] = native.spec.ingress
    assert (r.action, r.from_, r.ports) == ("allow", None, None)


def test_missing_to_matches_every_destination():
    [r] = to_native(parse(netpol("p", {}, types=["Egress"], egress=[{"ports": [{"port": 53}]}]))).spec.egress
    assert r.to is None and r.ports is not None and r.ports[0].port == 53


def test_every_translated_rule_is_an_allow_in_the_application_tier():
    np = parse(netpol("p", pods("a"), types=["Ingress", "Egress"],
                      ingress=[{"from": [{"podSelector": {}}]}, {}], egress=[{}, {"ports": [{"port": 81}]}]))
    native = to_native(np)
    assert (native.kind, native.spec.tier, native.spec.order, native.spec.mode) == \
        ("Policy", "application", NETWORK_POLICY_ORDER, "enforce")
    assert NETWORK_POLICY_ORDER == 1000
    assert {r.action for r in [*native.spec.ingress, *native.spec.egress]} == {"allow"}
    assert native.metadata.annotations == {SOURCE_KIND_ANNOTATION: "NetworkPolicy"}
    assert native.spec.appliesTo.selector == LabelSelector(matchLabels={"pod": "a"})
    assert native.spec.appliesTo.group is None and native.spec.appliesTo.namespaceSelector is None


def test_pod_selector_peer_stays_in_the_policy_namespace():
    [r] = to_native(parse(netpol("p", {}, ingress=[{"from": [{"podSelector": pods("b")}]}]))).spec.ingress
    [peer] = r.from_ or []
    assert peer.selector == LabelSelector(matchLabels={"pod": "b"}) and peer.namespaceSelector is None
    state = world_state(netpol("p", {}, ingress=[{"from": [{"podSelector": pods("b")}]}]))
    assert verdict(state, "x/b", "x/a") == "allow"
    assert verdict(state, "y/b", "x/a") == "deny"       # same labels, other namespace


def test_namespace_selector_peer_means_every_pod_of_those_namespaces():
    [r] = to_native(parse(netpol("p", {}, ingress=[{"from": [{"namespaceSelector": nss("y")}]}]))).spec.ingress
    [peer] = r.from_ or []
    assert peer.selector is None and peer.namespaceSelector == LabelSelector(matchLabels={"ns": "y"})


def test_both_selectors_in_one_peer_are_anded():
    doc = netpol("p", pods("a"), ingress=[{"from": [{"namespaceSelector": nss("y"), "podSelector": pods("b")}]}])
    [r] = to_native(parse(doc)).spec.ingress
    [peer] = r.from_ or []
    assert peer.selector is not None and peer.namespaceSelector is not None
    state = world_state(doc)
    assert [verdict(state, s, "x/a") for s in ("y/b", "y/a", "x/b", "z/b")] == ["allow", "deny", "deny", "deny"]


def test_empty_selectors_in_a_peer_mean_all_pods_of_the_namespace_or_of_all_namespaces():
    same_ns = world_state(netpol("p", pods("a"), ingress=[{"from": [{"podSelector": {}}]}]))
    assert (verdict(same_ns, "x/b", "x/a"), verdict(same_ns, "y/b", "x/a")) == ("allow", "deny")
    all_ns = world_state(netpol("p", pods("a"), ingress=[{"from": [{"namespaceSelector": {}}]}]))
    assert all(verdict(all_ns, s, "x/a") == "allow" for s in ("x/b", "y/a", "z/c"))


def test_ip_block_with_except_becomes_a_cidr_peer():
    doc = netpol("p", pods("a"), ingress=[{"from": [{"ipBlock": {"cidr": "198.18.20.0/22",
                                                                    "except": ["198.18.22.0/24"]}}]}])
    [r] = to_native(parse(doc)).spec.ingress
    [peer] = r.from_ or []
    assert (peer.cidr, peer.except_, peer.selector) == ("198.18.20.0/22", ["198.18.22.0/24"], None)
    state = world_state(doc)
    assert (verdict(state, "z/a", "x/a"), verdict(state, "y/a", "x/a")) == ("allow", "deny")


def test_a_cidr_with_host_bits_is_taken_as_kubernetes_takes_it_the_network_that_holds_it():
    """The API server accepts `198.18.21.7/22` (Go's net.ParseCIDR reads it as 198.18.20.0/22):
    kept as written in the object, enforced as the network, and said so in a warning."""
    doc = netpol("p", pods("a"), ingress=[{"from": [{"ipBlock": {"cidr": "198.18.21.7/22",
                                                                    "except": ["198.18.22.9/24"]}}]}])
    policy = parse(doc)
    assert policy.spec.ingress[0].from_[0].ipBlock.cidr == "198.18.21.7/22"  # type: ignore[index,union-attr]
    [peer] = to_native(policy).spec.ingress[0].from_ or []
    assert (peer.cidr, peer.except_) == ("198.18.20.0/22", ["198.18.22.0/24"])
    assert host_bits_warnings(policy) == [
        "spec.ingress[0].from[0].ipBlock.cidr: 198.18.21.7/22 has host bits set; it means 198.18.20.0/22, "
        "as Kubernetes reads it",
        "spec.ingress[0].from[0].ipBlock.except[0]: 198.18.22.9/24 has host bits set; it means 198.18.22.0/24, "
        "as Kubernetes reads it"]
    state = world_state(doc)
    assert (verdict(state, "z/a", "x/a"), verdict(state, "y/a", "x/a")) == ("allow", "deny")
    v6 = parse(netpol("q", pods("a"), egress=[{"to": [{"ipBlock": {"cidr": "2001:db8::1/64"}}]}]))
    assert to_native(v6).spec.egress[0].to[0].cidr == "2001:db8::/64"  # type: ignore[index]
    assert host_bits_warnings(parse(netpol("r", pods("a"), ingress=[{"from": [{"ipBlock": {"cidr": "198.18.0.0/16"}}]}]))) == []


def test_match_expressions_are_kept_and_evaluated():
    exprs = [{"key": "ns", "operator": "In", "values": ["y", "z"]}, {"key": "ns", "operator": "NotIn", "values": ["z"]},
             {"key": "ns", "operator": "Exists"}, {"key": "quarantined", "operator": "DoesNotExist"}]
    doc = netpol("p", pods("a"), ingress=[{"from": [{"namespaceSelector": {"matchExpressions": exprs}}]}])
    [r] = to_native(parse(doc)).spec.ingress
    assert (r.from_ or [])[0].namespaceSelector == LabelSelector(matchExpressions=exprs)
    state = world_state(doc)
    assert [verdict(state, s, "x/a") for s in ("x/b", "y/b", "z/b")] == ["deny", "allow", "deny"]
    relabelled = state.with_changes(2, put=[parse_object(namespace_doc("y", quarantined="yes"))])
    assert verdict(relabelled, "y/b", "x/a") == "deny"


def test_namespaces_match_on_the_automatic_metadata_name_label():
    doc = netpol("p", pods("a"), ingress=[{"from": [{"namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": "z"}}}]}])
    state = world_state(doc)
    assert (verdict(state, "z/c", "x/a"), verdict(state, "y/c", "x/a")) == ("allow", "deny")


def test_pod_selector_of_the_policy_selects_only_its_own_namespace():
    state = world_state(netpol("p", pods("a"), ingress=[]))
    assert verdict(state, "x/b", "x/a") == "deny"
    assert verdict(state, "x/b", "y/a") == "allow"      # y/a has the same labels, but lives elsewhere


# ------------------------------------------------------------------ ports

def test_numeric_port_defaults_to_tcp():
    [r] = to_native(parse(netpol("p", {}, ingress=[{"ports": [{"port": 80}]}]))).spec.ingress
    [p] = r.ports or []
    assert (p.protocol, p.port, p.endPort) == ("TCP", 80, None)


def test_named_port_end_port_and_every_protocol_translate():
    ports = [{"protocol": "UDP", "port": "serve-81-udp"}, {"protocol": "TCP", "port": 8000, "endPort": 8100},
             {"protocol": "SCTP", "port": 80}, {"protocol": "UDP"}]
    [r] = to_native(parse(netpol("p", {}, ingress=[{"ports": ports}]))).spec.ingress
    assert [(p.protocol, p.port, p.endPort) for p in r.ports or []] == [
        ("UDP", "serve-81-udp", None), ("TCP", 8000, 8100), ("SCTP", 80, None), ("UDP", None, None)]


def test_protocol_without_port_opens_every_port_of_that_protocol_only():
    state = world_state(netpol("p", pods("a"), ingress=[{"ports": [{"protocol": "UDP"}]}]))
    assert verdict(state, "y/a", "x/a", "udp", 5353) == "allow"
    assert verdict(state, "y/a", "x/a", "tcp", 5353) == "deny"


def test_end_port_range_is_inclusive():
    state = world_state(netpol("p", pods("a"), ingress=[{"ports": [{"port": 81, "endPort": 85}]}]))
    assert [verdict(state, "y/a", "x/a", "tcp", p) for p in (80, 81, 85, 86)] == ["deny", "allow", "allow", "deny"]


def test_named_port_resolves_on_each_destination_workload():
    # The same name maps to 80 on x/a and to 8080 on x/b.
    extra = [workload_doc("x/a"), workload_doc("x/b")]
    extra[0]["spec"]["ports"] = [{"name": "http", "port": 80}]
    extra[1]["spec"]["ports"] = [{"name": "http", "port": 8080}]
    state = world_state(netpol("p", {}, ingress=[{"ports": [{"port": "http"}]}]), *extra)
    assert [verdict(state, "x/c", "x/a", "tcp", p) for p in (80, 8080)] == ["allow", "deny"]
    assert [verdict(state, "x/c", "x/b", "tcp", p) for p in (80, 8080)] == ["deny", "allow"]
    assert verdict(state, "x/a", "x/c", "tcp", 80) == "deny"   # x/c has no port named http
    egress = world_state(netpol("p", pods("c"), types=["Egress"], egress=[{"ports": [{"port": "http"}]}]), *extra)
    assert [verdict(egress, "x/c", "x/a", "tcp", p) for p in (80, 8080)] == ["allow", "deny"]
    assert [verdict(egress, "x/c", "x/b", "tcp", p) for p in (80, 8080)] == ["deny", "allow"]


def test_named_port_matches_name_and_protocol():
    # serve-80-udp is UDP 80: a TCP rule naming it opens nothing, a UDP one opens UDP 80.
    tcp = world_state(netpol("p", pods("a"), ingress=[{"ports": [{"protocol": "TCP", "port": "serve-80-udp"}]}]))
    assert (verdict(tcp, "y/a", "x/a", "tcp", 80), verdict(tcp, "y/a", "x/a", "udp", 80)) == ("deny", "deny")
    udp = world_state(netpol("p", pods("a"), ingress=[{"ports": [{"protocol": "UDP", "port": "serve-80-udp"}]}]))
    assert (verdict(udp, "y/a", "x/a", "tcp", 80), verdict(udp, "y/a", "x/a", "udp", 80)) == ("deny", "allow")


@pytest.mark.parametrize("rule_port, opens, stays_closed", [
    ({"protocol": "TCP", "port": 80}, ("tcp", 80), ("sctp", 80)),
    ({"protocol": "SCTP", "port": 80}, ("sctp", 80), ("tcp", 80)),
    ({"protocol": "SCTP", "port": "serve-80-sctp"}, ("sctp", 80), ("tcp", 80)),
    ({"protocol": "SCTP"}, ("sctp", 81), ("udp", 81)),
    ({"protocol": "UDP", "port": 80}, ("udp", 80), ("sctp", 80)),
], ids=["tcp-rule-not-sctp", "sctp-rule-not-tcp", "named-sctp-not-tcp", "any-sctp-not-udp", "udp-not-sctp"])
def test_a_rule_for_one_protocol_does_not_open_another(rule_port, opens, stays_closed):
    state = world_state(netpol("p", pods("a"), ingress=[{"ports": [rule_port]}]))
    assert verdict(state, "y/b", "x/a", *opens) == "allow"
    assert verdict(state, "y/b", "x/a", *stays_closed) == "deny"


def test_sctp_is_compiled_into_the_program():
    state = world_state(netpol("p", pods("a"), ingress=[{"ports": [{"protocol": "SCTP", "port": 80}]}]))
    program = compile_host(state, "hv1")   # x/a lives on hv1
    texts = [repr(r) for c in program.chains for r in c.rules if "x/p/ingress-0" in (r.comment or "")]
    assert texts and all("sctp" in t for t in texts)


# ------------------------------------------------------------------ refusals

@pytest.mark.parametrize("doc, field, words", [
    (netpol("p", {}, ingress=[{"from": [{"ipBlock": {"cidr": "198.18.0.0/16"}, "podSelector": {}}]}]),
     "spec.ingress[0].from[0]", ["ipBlock", "podSelector"]),
    (netpol("p", {}, egress=[{"to": [{"ipBlock": {"cidr": "198.18.0.0/16"}, "namespaceSelector": {}}]}]),
     "spec.egress[0].to[0]", ["ipBlock", "namespaceSelector"]),
    (netpol("p", {}, ingress=[{"from": [{}]}]), "spec.ingress[0].from[0]", ["peer needs"]),
    (netpol("p", {}, egress=[{"to": [{"ipBlock": {"cidr": "198.18.0.0/33"}}]}]),
     "spec.egress[0].to[0].ipBlock.cidr", ["198.18.0.0/33", "not a valid CIDR"]),
    (netpol("p", {}, ingress=[{"from": [{"ipBlock": {"cidr": "198.18.1.1/16", "except": ["198.19.0.7/24"]}}]}]),
     "spec.ingress[0].from[0].ipBlock", ["except[0]", "198.19.0.7/24", "strict subset"]),
    (netpol("p", {}, ingress=[{"from": [{"ipBlock": {"cidr": "198.18.0.0/16", "except": ["198.19.0.0/24"]}}]}]),
     "spec.ingress[0].from[0].ipBlock", ["except[0]", "198.19.0.0/24", "strict subset"]),
    (netpol("p", {}, ingress=[{"from": [{"ipBlock": {"cidr": "198.18.0.0/16", "except": ["198.18.0.0/16"]}}]}]),
     "spec.ingress[0].from[0].ipBlock", ["strict subset"]),
    (netpol("p", {}, ingress=[{"from": [{"ipBlock": {"cidr": "198.18.0.0/16", "except": ["2001:db8::/64"]}}]}]),
     "spec.ingress[0].from[0].ipBlock", ["2001:db8::/64", "strict subset"]),
    (netpol("p", {}, ingress=[{"ports": [{"port": 80}, {"port": 70000}]}]),
     "spec.ingress[0].ports[1]", ["70000", "out of range"]),
    (netpol("p", {}, ingress=[{"ports": [{"port": 0}]}]), "spec.ingress[0].ports[0]", ["0", "out of range"]),
    (netpol("p", {}, egress=[{"ports": [{"port": 90, "endPort": 80}]}]), "spec.egress[0].ports[0]", ["endPort", "below"]),
    (netpol("p", {}, egress=[{"ports": [{"endPort": 80}]}]), "spec.egress[0].ports[0]", ["endPort", "needs port"]),
    (netpol("p", {}, egress=[{"ports": [{"port": 80, "endPort": 65536}]}]),
     "spec.egress[0].ports[0]", ["endPort", "65536"]),
    (netpol("p", {}, ingress=[{"ports": [{"port": "serve-80-tcp", "endPort": 90}]}]),
     "spec.ingress[0].ports[0]", ["endPort", "named port"]),
    (netpol("p", {}, ingress=[{"ports": [{"port": "Serve_80"}]}]), "spec.ingress[0].ports[0]", ["Serve_80"]),
    (netpol("p", {}, ingress=[{"ports": [{"port": "80"}]}]), "spec.ingress[0].ports[0]", ["'80'"]),
    (netpol("p", {}, ingress=[{"ports": [{"protocol": "ICMP"}]}]), "spec.ingress[0].ports[0].protocol", ["SCTP"]),
    (netpol("p", {}, ingress=[{"fromm": []}]), "spec.ingress[0].fromm", ["unknown field"]),
    (netpol("p", {}, egress=[{"to": [{"podSelector": {}, "namespace": "y"}]}]), "spec.egress[0].to[0].namespace",
     ["unknown field"]),
    ({**netpol("p", {}), "spec": {"podSelector": {}, "priority": 1}}, "spec.priority", ["unknown field"]),
    ({**netpol("p", {}), "spec": {"podSelector": "app=web", "ingress": []}}, "spec.podSelector", ["dictionary"]),
    (netpol("p", {}, types=["Ingress", "Sideways"]), "spec.policyTypes[1]", ["Ingress", "Egress"]),
    (netpol("p", {"matchExpressions": [{"key": "pod", "operator": "Near", "values": ["a"]}]}),
     "spec.podSelector", ["Near"]),
    (netpol("p", {}, ingress=[{"from": [{"namespaceSelector": {"matchExpressions": [
        {"key": "ns", "operator": "In"}]}}]}]), "spec.ingress[0].from[0].namespaceSelector", ["values", "In"]),
    (netpol("p", {}, ingress=[{"from": [{"podSelector": {"matchExpressions": [
        {"key": "pod", "operator": "Exists", "values": ["a"]}]}}]}]),
     "spec.ingress[0].from[0].podSelector", ["values", "Exists"]),
    ({**netpol("p", {}), "apiVersion": "networking.k8s.io/v1beta1"}, "apiVersion", ["networking.k8s.io/v1"]),
], ids=["ipBlock+podSelector", "ipBlock+namespaceSelector", "empty-peer", "bad-cidr", "cidr-host-bits",
        "except-outside", "except-equal", "except-other-family", "port-70000", "port-0", "endPort-below",
        "endPort-without-port", "endPort-65536", "endPort-named", "bad-port-name", "port-number-as-string",
        "icmp", "unknown-rule-field", "unknown-peer-field", "unknown-spec-field", "podSelector-not-a-selector",
        "bad-policy-type", "bad-operator", "In-without-values", "Exists-with-values", "bad-apiVersion"])
def test_bad_network_policy_is_refused_naming_object_and_field(doc, field, words):
    err = refusal(doc)
    for p in err.problems:
        if p.object_ref == REF and p.field == field and all(w.lower() in p.problem.lower() for w in words):
            assert str(p).startswith(f"{REF}: {field}: ")
            assert "validation error" not in p.problem and "pydantic" not in p.problem   # no raw dumps
            return
    raise AssertionError(f"no problem at {field} with {words}: {[str(p) for p in err.problems]}")


def test_network_policy_in_a_missing_namespace_is_a_state_problem():
    state = DesiredState.from_objects(1, [parse_object(netpol("p", {}, ns="nowhere"))])
    problems = validate_state(state, ValidationSettings())
    assert [(p.object_ref, p.field) for p in problems] == [("NetworkPolicy nowhere/p", "metadata.namespace")]


# ------------------------------------------------------------------ served as applied

UPSTREAM_OBJECTS = [
    netpol("default-deny-ingress", {}, ns="x"),
    netpol("default-deny-ingress-explicit", {}, ns="x", types=["Ingress"], ingress=[]),
    netpol("default-deny-egress", {}, ns="x", types=["Egress"]),
    netpol("allow-all-ingress", {}, ns="x", ingress=[{}]),
    netpol("allow-all-egress", {}, ns="x", types=["Egress"], egress=[{}]),
    netpol("empty-egress-list", {}, ns="x", egress=[]),
    {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
     "metadata": {"name": "test-network-policy", "namespace": "default", "labels": {"app": "db"},
                  "annotations": {"owner": "team-db"}},
     "spec": {"podSelector": {"matchLabels": {"role": "db"}}, "policyTypes": ["Ingress", "Egress"],
              "ingress": [{"from": [{"ipBlock": {"cidr": "172.17.0.0/16", "except": ["172.17.1.0/24"]}},
                                    {"namespaceSelector": {"matchLabels": {"project": "myproject"}}},
                                    {"podSelector": {"matchLabels": {"role": "frontend"}}}],
                           "ports": [{"protocol": "TCP", "port": 6379}]}],
              "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}],
                          "ports": [{"protocol": "TCP", "port": 32000, "endPort": 32768}]}]}},
    netpol("named-and-sctp", pods("a"), ns="x", ingress=[{
        "from": [{"namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["x"]}]},
                  "podSelector": {"matchExpressions": [{"key": "pod", "operator": "Exists"}]}}],
        "ports": [{"port": "serve-80-tcp"}, {"protocol": "SCTP", "port": "serve-80-sctp"}, {"protocol": "UDP"}]}]),
    netpol("ipv6-egress", {"matchExpressions": [{"key": "pod", "operator": "DoesNotExist"}]}, ns="y",
           types=["Egress"], egress=[{"to": [{"ipBlock": {"cidr": "2001:db8::/32", "except": ["2001:db8:1::/48"]}}],
                                      "ports": [{"protocol": "UDP", "port": 53}]}]),
]


@pytest.mark.parametrize("doc", UPSTREAM_OBJECTS, ids=lambda d: d["metadata"]["name"])
def test_network_policy_is_served_back_exactly_as_applied(doc):
    original = copy.deepcopy(doc)
    obj = parse_object(doc)
    assert to_document(obj) == original
    assert doc == original   # parsing does not touch the input
    # the way the store and `get -o yaml` serve it: stored document → object → document
    assert to_document(parse_stored(to_document(obj))) == original


def test_network_policy_in_the_state_is_listed_and_found_by_key():
    np = parse(netpol("p", {}))
    state = world_state().with_changes(2, put=[np])
    assert state.get(ObjectKey("NetworkPolicy", "x", "p")) == np
    assert np in state.objects()
    assert state.with_changes(3, delete=[ObjectKey("NetworkPolicy", "x", "p")]).network_policies == {}


# ------------------------------------------------------------------ the truth tables, by trace

def world_state(*extra: dict[str, Any]) -> DesiredState:
    """The netpol world (x/y/z × a/b/c), plus extra documents (later ones replace earlier ones)."""
    state = DesiredState.from_objects(1, [parse_object(d) for d in world_docs()])
    if extra:
        state = state.with_changes(2, put=[parse_object(d) for d in extra])
    return state


def verdict(state: DesiredState, src: str, dst: str, protocol: str = "tcp", port: int = 80) -> str:
    s, d = tuple(src.split("/")), tuple(dst.split("/"))
    return trace_flow(state, Flow(s, d, protocol, port)).verdict  # type: ignore[arg-type]


def test_the_world_is_valid_and_open():
    state = world_state()
    assert validate_state(state, ValidationSettings(known_hosts=frozenset({"hv1", "hv2"}))) == []
    assert compare(Reachability(True), trace_matrix(state, Check("tcp", 80, Reachability())), "no policy") is None


CASES = cases()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_truth_table_case_by_trace(case: Case):
    state = world_state()
    problems = []
    for n, step in enumerate(case.steps, 1):
        state = state.with_changes(state.revision + 1, put=[parse_object(d) for d in step.put],
                                   delete=[ObjectKey(*k) for k in step.delete])
        assert validate_state(state, ValidationSettings()) == []
        for check in step.checks:
            diff = compare(check.expect, trace_matrix(state, check), f"{case.name} step {n} {check.label}")
            if diff:
                problems.append(diff)
    assert not problems, "\n\n".join(problems)


def test_cases_cover_the_upstream_features():
    names = " ".join(c.name for c in CASES)
    for feature in ("default-deny-ingress", "default-deny-egress", "default-deny-all", "podSelector",
                    "namespaceSelector", "AND", "OR", "named-port", "endPort", "add-up", "stacked", "update-policy",
                    "update-namespace", "update-pod", "deletion", "ipBlock-with-except", "egress", "udp", "sctp"):
        assert feature in names, feature
    protocols = {c.protocol for case in CASES for s in case.steps for c in s.checks}
    assert protocols == {"tcp", "udp", "sctp"}


def test_compare_shows_both_tables_and_the_differing_pairs():
    expected = Reachability().expect_all_ingress("x/a", False)
    observed: dict[tuple[str, str], bool | str] = dict(expected.expected)
    observed[("y/b", "x/a")] = True
    observed[("z/c", "x/b")] = "rejected"
    text = compare(expected, observed, "demo") or ""
    assert "demo: 2 of 72 pairs differ" in text
    assert "y/b -> x/a: expected denied, got allowed" in text and "z/c -> x/b: expected allowed, got 'rejected'" in text
    assert text.count("x/a x/b x/c y/a y/b y/c z/a z/b z/c") == 3
    assert compare(expected, dict(expected.expected), "same") is None


# ------------------------------------------------------------------ with native policy

def _policy(name: str, ns: str | None, tier: str, order: int, applies: dict[str, Any],
            ingress: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "stockade.io/v1", "kind": "Policy" if ns else "GlobalPolicy",
            "metadata": {"name": name, **({"namespace": ns} if ns else {})},
            "spec": {"tier": tier, "order": order, "appliesTo": applies, "ingress": ingress}}


ALLOW_Y_TO_A = netpol("allow-y", pods("a"), ingress=[{"from": [{"namespaceSelector": nss("y")}]}])
DENY_Y = [{"id": "no-y", "action": "deny", "from": [{"selector": {}, "namespaceSelector": nss("y")}]}]


def test_interplay_platform_deny_beats_a_network_policy_allow():
    platform = _policy("quarantine-y", None, "platform", 5000, {"selector": {}}, DENY_Y)
    state = world_state(ALLOW_Y_TO_A, platform)
    result = trace_flow(state, Flow(("y", "a"), ("x", "a"), "tcp", 80))
    assert result.verdict == "deny" and result.deciding_rule == "quarantine-y/no-y"


def test_interplay_application_tier_native_policies_before_order_1000_come_first():
    before = _policy("deny-y", "x", "application", 999, {"selector": pods("a")}, DENY_Y)
    after = _policy("deny-y", "x", "application", 1001, {"selector": pods("a")}, DENY_Y)
    first = trace_flow(world_state(ALLOW_Y_TO_A, before), Flow(("y", "a"), ("x", "a"), "tcp", 80))
    assert (first.verdict, first.deciding_rule) == ("deny", "x/deny-y/no-y")
    second = trace_flow(world_state(ALLOW_Y_TO_A, after), Flow(("y", "a"), ("x", "a"), "tcp", 80))
    assert (second.verdict, second.deciding_rule) == ("allow", "x/allow-y/ingress-0")


def test_interplay_at_equal_order_the_name_decides():
    aaa = _policy("aaa-deny-y", "x", "application", 1000, {"selector": pods("a")}, DENY_Y)
    zzz = _policy("zzz-deny-y", "x", "application", 1000, {"selector": pods("a")}, DENY_Y)
    assert verdict(world_state(ALLOW_Y_TO_A, aaa), "y/a", "x/a") == "deny"    # aaa… < allow-y
    assert verdict(world_state(ALLOW_Y_TO_A, zzz), "y/a", "x/a") == "allow"   # allow-y < zzz…


def test_interplay_platform_pass_hands_the_decision_to_the_network_policy():
    passing = _policy("hand-over", None, "platform", 100, {"selector": {}},
                      [{"id": "to-tenants", "action": "pass"}])
    state = world_state(ALLOW_Y_TO_A, passing)
    result = trace_flow(state, Flow(("y", "a"), ("x", "a"), "tcp", 80))
    assert (result.verdict, result.deciding_rule) == ("allow", "x/allow-y/ingress-0")
    assert [r["action"] for r in (result.ingress.rules if result.ingress else [])][0] == "pass"
    # not allowed by the NetworkPolicy: x/a is selected, so the namespace default denies
    assert trace_flow(state, Flow(("z", "a"), ("x", "a"), "tcp", 80)).deciding_rule == "x/default-deny/ingress"


def test_interplay_any_enforcing_native_policy_isolates_like_a_network_policy():
    # In an allowUntilSelected namespace a workload is open until *any* enforcing policy selects
    # it for a direction: a platform-tier deny-list selecting every workload closes x/a for
    # everything it does not allow, exactly as a NetworkPolicy would.
    platform = _policy("quarantine-y", None, "platform", 100, {"selector": pods("a")}, DENY_Y)
    state = world_state(platform)
    assert verdict(state, "z/b", "x/a") == "deny"
    assert verdict(state, "z/b", "x/b") == "allow"   # not selected: still open
    audit = copy.deepcopy(platform)
    audit["spec"]["mode"] = "audit"
    assert verdict(world_state(audit), "z/b", "x/a") == "allow"   # audit mode never isolates


def test_interplay_in_a_deny_namespace_a_network_policy_only_adds_allows():
    deny_ns = copy.deepcopy(namespace_doc("x"))
    deny_ns["spec"]["defaultAction"] = "deny"
    state = world_state(deny_ns, ALLOW_Y_TO_A)
    assert verdict(state, "y/a", "x/a") == "allow"
    assert verdict(state, "z/a", "x/a") == "deny"
    assert verdict(state, "y/a", "x/b") == "deny"    # selected by no policy: the namespace default denies
    assert trace_flow(state, Flow(("y", "a"), ("x", "b"), "tcp", 80)).deciding_rule == "x/default-deny/ingress"
    assert verdict(state, "x/a", "y/a") == "deny"    # egress of a deny namespace: denied, no egress policy
    # an egress-only NetworkPolicy in a deny namespace opens what it allows, nothing else
    egress = netpol("egress-to-y", pods("b"), types=["Egress"], egress=[{"to": [{"namespaceSelector": nss("y")}]}])
    state = world_state(deny_ns, egress)
    assert (verdict(state, "x/b", "y/a"), verdict(state, "x/b", "z/a")) == ("allow", "deny")


def test_policy_and_network_policy_of_the_same_name_keep_their_own_named_ports():
    # Both have rule ref x/same/ingress-0; each must resolve its named port on its own workloads.
    native = _policy("same", "x", "application", 10, {"selector": pods("a")},
                     [{"action": "allow", "ports": [{"port": "serve-81-tcp"}]}])
    np = netpol("same", pods("b"), ingress=[{"ports": [{"port": "serve-80-tcp"}]}])
    state = world_state(native, np)
    assert [verdict(state, "y/c", "x/a", "tcp", p) for p in (80, 81)] == ["deny", "allow"]
    assert [verdict(state, "y/c", "x/b", "tcp", p) for p in (80, 81)] == ["allow", "deny"]


def test_trace_names_the_network_policy_rule_that_allowed():
    result = trace_flow(world_state(ALLOW_Y_TO_A), Flow(("y", "b"), ("x", "a"), "tcp", 80))
    assert result.deciding_rule == "x/allow-y/ingress-0"
    assert result.egress.rules[-1]["rule"] == "y/default-allow/egress"


def test_selector_peers_cover_both_families_and_ip_blocks_only_their_own():
    selectors = world_state(ALLOW_Y_TO_A)
    for family in (4, 6):
        assert trace_flow(selectors, Flow(("y", "b"), ("x", "a"), "tcp", 80, family)).verdict == "allow"
        assert trace_flow(selectors, Flow(("z", "b"), ("x", "a"), "tcp", 80, family)).verdict == "deny"
    v4_block = world_state(netpol("p", pods("a"), ingress=[{"from": [{"ipBlock": {"cidr": "198.18.20.0/22"}}]}]))
    assert trace_flow(v4_block, Flow(("y", "b"), ("x", "a"), "tcp", 80, 4)).verdict == "allow"
    assert trace_flow(v4_block, Flow(("y", "b"), ("x", "a"), "tcp", 80, 6)).verdict == "deny"


def test_named_port_towards_an_ip_block_resolves_on_no_workload():
    # Egress names resolve on the workloads the `to` peers select; an ipBlock selects none.
    doc = netpol("p", pods("a"), types=["Egress"], egress=[{"to": [{"ipBlock": {"cidr": "198.18.20.0/22"}}],
                                                            "ports": [{"port": "serve-80-tcp"}]}])
    assert verdict(world_state(doc), "x/a", "y/a", "tcp", 80) == "deny"
    numeric = netpol("p", pods("a"), types=["Egress"], egress=[{"to": [{"ipBlock": {"cidr": "198.18.20.0/22"}}],
                                                                "ports": [{"port": 80}]}])
    assert verdict(world_state(numeric), "x/a", "y/a", "tcp", 80) == "allow"


def test_a_pod_a_network_policy_selects_is_decided_before_the_baseline_tier():
    """Upstream's order (issue 17): admin tier, then NetworkPolicy, then baseline, then the default.
    A pod a NetworkPolicy isolates is denied there what no NetworkPolicy allows: a baseline allow
    behind it never opens it again. A pod no NetworkPolicy selects is still the baseline's."""
    baseline = {"apiVersion": "stockade.io/v1", "kind": "GlobalPolicy", "metadata": {"name": "allow-from-z"},
                "spec": {"tier": "baseline", "appliesTo": {"selector": {}}, "types": [],
                         "ingress": [{"id": "from-z", "action": "allow",
                                      "from": [{"selector": {}, "namespaceSelector": nss("z")}]}]}}
    deny_rest = {**baseline, "metadata": {"name": "deny-from-y"},
                 "spec": {**baseline["spec"], "ingress": [{"id": "from-y", "action": "deny",
                                                          "from": [{"selector": {}, "namespaceSelector": nss("y")}]}]}}
    only_from_y = netpol("p", pods("a"), ingress=[{"from": [{"namespaceSelector": nss("y")}]}])
    state = world_state(only_from_y, baseline, deny_rest)
    assert verdict(state, "y/a", "x/a") == "allow"          # the NetworkPolicy allows, baseline deny unseen
    result = trace_flow(state, Flow(("z", "a"), ("x", "a"), "tcp", 80))
    assert result.verdict == "deny"                         # isolated: the baseline allow is not asked
    assert [s["rule"] for s in result.ingress.rules][-1] == "x/default-deny/ingress"  # type: ignore[union-attr]
    assert "allow-from-z/from-z" not in [s["rule"] for s in result.ingress.rules]  # type: ignore[union-attr]
    # x/b is selected by no NetworkPolicy: the baseline tier decides it, both ways.
    assert (verdict(state, "z/a", "x/b"), verdict(state, "y/a", "x/b")) == ("allow", "deny")
