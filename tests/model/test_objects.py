"""parse_object / resolve_kind (model.kinds) and cross-object validation (model.validation).

Every refusal must name the object, the field and the problem (DESIGN.md, "Errors and bad input").
"""

from __future__ import annotations

import copy
import ipaddress
import re
from pathlib import Path

import pytest
import yaml

from stockade.errors import FieldProblem, ValidationError
from stockade.model.kinds import ObjectKey, parse_object, resolve_kind
from stockade.model.objects import GlobalPolicy, Group, Namespace, Policy, Workload
from stockade.model.state import DesiredState
from stockade.model.validation import ValidationSettings, referrers_of_group, validate_state

DESIGN = Path("/work/shared/DESIGN.md")

POLICY = {
    "apiVersion": "stockade.io/v1",
    "kind": "Policy",
    "metadata": {"name": "web-ingress", "namespace": "shop"},
    "spec": {
        "appliesTo": {"group": "web"},
        "ingress": [{"id": "https", "action": "allow", "from": [{"group": "lb"}],
                     "ports": [{"protocol": "TCP", "port": 443}]}],
        "egress": [{"action": "allow", "to": [{"group": "app"}]}],
    },
}
POLICY_REF = "Policy shop/web-ingress"


def policy(**changes) -> dict:
    """POLICY with `spec` keys replaced; `rule=` replaces the first ingress rule's keys."""
    doc = copy.deepcopy(POLICY)
    rule = changes.pop("rule", None)
    if rule is not None:
        doc["spec"]["ingress"][0].update(rule)
    doc["spec"].update(changes)
    return doc


def refusal(raw) -> ValidationError:
    with pytest.raises(ValidationError) as e:
        parse_object(raw)
    return e.value


def assert_problem(err: ValidationError, ref: str, field: str, *words: str) -> FieldProblem:
    """One problem names `ref`, a field at or below `field`, and all `words`."""
    for p in err.problems:
        if p.object_ref.startswith(ref) and (p.field == field or p.field.startswith(field + ".")) \
                and all(w.lower() in p.problem.lower() for w in words):
            assert str(p).startswith(ref)
            return p
    raise AssertionError(f"no problem for {ref} at {field} with {words}: {err.problems}")


# ------------------------------------------------------------- the shapes of DESIGN.md

def _design_documents() -> list[dict]:
    text = DESIGN.read_text()
    block = re.search(r"### Object shapes.*?```yaml\n(.*?)```", text, re.S)
    assert block, "DESIGN.md lost its object-shapes example"
    return [d for d in yaml.safe_load_all(block.group(1)) if d]


def test_every_design_example_shape_parses():
    docs = _design_documents()
    objects = [parse_object(d, i) for i, d in enumerate(docs)]
    assert [o.kind for o in objects] == ["Namespace", "Workload", "Group", "Policy"]
    ns, wl, grp, pol = objects
    assert isinstance(ns, Namespace) and ns.spec.defaultAction == "deny"
    assert ns.effective_labels()["kubernetes.io/metadata.name"] == "shop"
    assert isinstance(wl, Workload) and wl.spec.ips == ["198.18.10.11", "2001:db8:10::11"]
    assert wl.spec.ports[0].port == 443
    assert isinstance(grp, Group) and grp.spec.except_ == ["198.19.5.0/24"]
    assert isinstance(pol, Policy)
    rule = pol.spec.ingress[0]
    assert rule.id == "https-from-lb" and rule.action == "allow"
    assert [p.group for p in rule.from_ or []][0] == "lb"
    assert rule.from_[2].cidr == "198.19.0.0/16" and rule.from_[2].except_ == ["198.19.5.0/24"]
    assert [(p.protocol, p.port, p.endPort, p.type) for p in rule.ports or []] == [
        ("TCP", 443, None, None), ("TCP", 8000, 8100, None), ("TCP", "https", None, None), ("ICMP", None, None, 8)]
    assert pol.spec.egress[0].to[0].group == "app"


def test_global_policy_is_a_policy_without_namespace():
    doc = copy.deepcopy(POLICY)
    doc["kind"] = "GlobalPolicy"
    del doc["metadata"]["namespace"]
    doc["spec"]["appliesTo"] = {"selector": {"matchLabels": {"tier": "web"}}, "namespaceSelector": {}}
    obj = parse_object(doc)
    assert isinstance(obj, GlobalPolicy) and obj.metadata.namespace is None


def test_defaults_of_policy_spec():
    spec = parse_object(policy()).spec
    assert (spec.tier, spec.order, spec.mode) == ("application", 1000, "enforce")


def test_default_namespace_fills_a_missing_namespace():
    doc = copy.deepcopy(POLICY)
    del doc["metadata"]["namespace"]
    assert parse_object(doc, default_namespace="shop").metadata.namespace == "shop"


def test_status_from_input_is_ignored():
    doc = {**policy(), "status": {"enforced": True}}
    assert parse_object(doc).status is None


# ------------------------------------------------------------- refusals

def test_unknown_field_at_top_is_refused():
    err = refusal({**policy(), "specs": {}})
    assert_problem(err, POLICY_REF, "specs", "unknown field")


def test_unknown_field_in_spec_is_refused():
    err = refusal(policy(priority=3))
    assert_problem(err, POLICY_REF, "spec.priority", "unknown field")


def test_unknown_field_in_rule_is_refused():
    err = refusal(policy(rule={"verdict": "allow"}))
    assert_problem(err, POLICY_REF, "spec.ingress[0].verdict", "unknown field")


def test_unknown_field_in_metadata_is_refused():
    doc = copy.deepcopy(POLICY)
    doc["metadata"]["label"] = {"a": "b"}
    assert_problem(refusal(doc), POLICY_REF, "metadata.label", "unknown field")


def test_bad_selector_is_refused_with_its_field():
    err = refusal(policy(appliesTo={"selector": {"matchExpressions": [{"key": "tier", "operator": "Like"}]}}))
    p = assert_problem(err, POLICY_REF, "spec.appliesTo.selector", "Like")
    assert "operator" in str(p)


def test_bad_peer_selector_is_refused_with_its_field():
    err = refusal(policy(rule={"from": [{"selector": {"matchLabels": {"bad key": "x"}}}]}))
    assert_problem(err, POLICY_REF, "spec.ingress[0].from[0].selector", "bad key")


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_port_out_of_range_is_refused(port):
    err = refusal(policy(rule={"ports": [{"protocol": "TCP", "port": 80}, {"protocol": "TCP", "port": port}]}))
    assert_problem(err, POLICY_REF, "spec.ingress[0].ports[1]", str(port), "out of range")


def test_port_65535_and_1_are_accepted():
    obj = parse_object(policy(rule={"ports": [{"port": 1}, {"port": 65535}, {"port": 1, "endPort": 65535}]}))
    assert [p.port for p in obj.spec.ingress[0].ports] == [1, 65535, 1]


def test_end_port_out_of_range_is_refused():
    err = refusal(policy(rule={"ports": [{"port": 80, "endPort": 65536}]}))
    assert_problem(err, POLICY_REF, "spec.ingress[0].ports[0]", "endPort", "out of range")


def test_end_port_below_port_is_refused():
    err = refusal(policy(rule={"ports": [{"protocol": "TCP", "port": 8100, "endPort": 8000}]}))
    assert_problem(err, POLICY_REF, "spec.ingress[0].ports[0]", "endPort", "below")


def test_end_port_with_named_port_is_refused():
    err = refusal(policy(rule={"ports": [{"protocol": "TCP", "port": "https", "endPort": 500}]}))
    assert_problem(err, POLICY_REF, "spec.ingress[0].ports[0]", "endPort", "named port")


def test_end_port_without_port_is_refused():
    err = refusal(policy(rule={"ports": [{"protocol": "TCP", "endPort": 500}]}))
    assert_problem(err, POLICY_REF, "spec.ingress[0].ports[0]", "endPort", "needs port")


def test_invalid_port_name_is_refused():
    err = refusal(policy(rule={"ports": [{"protocol": "TCP", "port": "HTTPS_PORT"}]}))
    assert_problem(err, POLICY_REF, "spec.ingress[0].ports[0]", "HTTPS_PORT")


@pytest.mark.parametrize("cidr", ["198.19.0.1/16", "198.19.0.0/33", "not-a-net", "2001:db8::/129"])
def test_bad_cidr_is_refused(cidr):
    err = refusal(policy(rule={"from": [{"cidr": cidr}]}))
    assert_problem(err, POLICY_REF, "spec.ingress[0].from[0].cidr", cidr, "not a valid CIDR")


@pytest.mark.parametrize("exc", ["198.20.0.0/24", "198.18.0.0/15", "2001:db8::/64"])
def test_except_outside_cidr_is_refused(exc):
    err = refusal(policy(rule={"from": [{"cidr": "198.19.0.0/16", "except": ["198.19.5.0/24", exc]}]}))
    assert_problem(err, POLICY_REF, "spec.ingress[0].from[0]", exc, "not inside", "198.19.0.0/16")


def test_except_without_cidr_is_refused():
    err = refusal(policy(rule={"from": [{"group": "lb", "except": ["198.19.5.0/24"]}]}))
    assert_problem(err, POLICY_REF, "spec.ingress[0].from[0]", "except", "only allowed with cidr")


def test_peer_with_group_and_cidr_is_refused():
    err = refusal(policy(rule={"from": [{"group": "lb", "cidr": "198.19.0.0/16"}]}))
    assert_problem(err, POLICY_REF, "spec.ingress[0].from[0]", "group and cidr")


def test_empty_peer_is_refused():
    err = refusal(policy(rule={"from": [{}]}))
    assert_problem(err, POLICY_REF, "spec.ingress[0].from[0]", "got none")


@pytest.mark.parametrize("proto", ["ICMP", "ICMPv6"])
def test_icmp_with_port_is_refused(proto):
    err = refusal(policy(rule={"ports": [{"protocol": proto, "port": 8}]}))
    assert_problem(err, POLICY_REF, "spec.ingress[0].ports[0]", proto, "no ports")


def test_type_on_tcp_is_refused():
    err = refusal(policy(rule={"ports": [{"protocol": "TCP", "type": 8}]}))
    assert_problem(err, POLICY_REF, "spec.ingress[0].ports[0]", "type", "TCP")


def test_icmp_code_without_type_is_refused():
    err = refusal(policy(rule={"ports": [{"protocol": "ICMP", "code": 0}]}))
    assert_problem(err, POLICY_REF, "spec.ingress[0].ports[0]", "code", "needs a type")


@pytest.mark.parametrize("name", ["Web", "web_1", "-web", "web-", "w" * 64, ""])
def test_bad_object_name_is_refused(name):
    doc = copy.deepcopy(POLICY)
    doc["metadata"]["name"] = name
    err = refusal(doc)
    assert_problem(err, "Policy shop/", "metadata.name", "not a valid name")


def test_bad_namespace_name_is_refused():
    doc = copy.deepcopy(POLICY)
    doc["metadata"]["namespace"] = "Shop"
    assert_problem(refusal(doc), "Policy Shop/web-ingress", "metadata.namespace", "Shop")


def test_bad_rule_id_is_refused():
    err = refusal(policy(rule={"id": "Https From LB"}))
    assert_problem(err, POLICY_REF, "spec.ingress[0].id", "not a valid rule id")


def test_unknown_kind_is_refused():
    err = refusal({**policy(), "kind": "Pod"})
    assert_problem(err, "Pod shop/web-ingress", "kind", "unknown kind", "Pod")


def test_unknown_api_version_is_refused():
    err = refusal({**policy(), "apiVersion": "stockade.io/v2"})
    assert_problem(err, POLICY_REF, "apiVersion", "stockade.io/v2", "stockade.io/v1")


def test_document_position_is_named():
    with pytest.raises(ValidationError) as e:
        parse_object({**policy(), "kind": "Pod"}, index=2)
    assert e.value.problems[0].object_ref == "Pod shop/web-ingress (document 3)"


def test_non_mapping_document_is_refused():
    with pytest.raises(ValidationError) as e:
        parse_object(["not", "a", "mapping"], index=0)
    assert e.value.problems[0].object_ref == "document 1"


@pytest.mark.parametrize("kind", ["Workload", "Group", "Policy"])
def test_namespaced_kind_without_namespace_is_refused(kind):
    doc = {"apiVersion": "stockade.io/v1", "kind": kind, "metadata": {"name": "x"}, "spec": {}}
    err = refusal(doc)
    assert_problem(err, f"{kind} x", "metadata.namespace", "required")


@pytest.mark.parametrize("kind", ["GlobalPolicy", "Namespace"])
def test_cluster_scoped_kind_with_namespace_is_refused(kind):
    doc = copy.deepcopy(POLICY)
    doc["kind"] = kind
    if kind == "Namespace":
        doc["spec"] = {}
    err = refusal(doc)
    assert_problem(err, f"{kind} shop/web-ingress", "metadata.namespace", "not namespaced")


def test_duplicate_rule_ids_are_refused():
    doc = policy()
    doc["spec"]["ingress"].append({"id": "https", "action": "deny"})
    err = refusal(doc)
    assert_problem(err, POLICY_REF, "spec", "ingress", "'https'", "used twice")


def test_same_rule_id_in_ingress_and_egress_is_accepted():
    doc = policy()
    doc["spec"]["egress"][0]["id"] = "https"
    assert parse_object(doc).spec.egress[0].id == "https"


def test_ingress_rule_with_to_is_refused():
    err = refusal(policy(rule={"to": [{"group": "app"}]}))
    assert_problem(err, POLICY_REF, "spec", "ingress[0]", "'from'", "not 'to'")


def test_egress_rule_with_from_is_refused():
    doc = policy()
    doc["spec"]["egress"][0] = {"action": "allow", "from": [{"group": "app"}]}
    assert_problem(refusal(doc), POLICY_REF, "spec", "egress[0]", "'to'", "not 'from'")


def test_bad_action_and_tier_name_and_mode_are_refused():
    err = refusal(policy(tier="Gold!", mode="dry-run", rule={"action": "permit"}))
    assert_problem(err, POLICY_REF, "spec.tier", "Gold!")
    assert_problem(err, POLICY_REF, "spec.mode")
    assert_problem(err, POLICY_REF, "spec.ingress[0].action")


def test_applies_to_needs_exactly_one_target():
    err = refusal(policy(appliesTo={"group": "web", "selector": {}}))
    assert_problem(err, POLICY_REF, "spec.appliesTo", "exactly one")
    err = refusal(policy(appliesTo={}))
    assert_problem(err, POLICY_REF, "spec.appliesTo", "exactly one")


def test_all_problems_of_one_object_are_reported_together():
    err = refusal(policy(priority=1, rule={"ports": [{"port": 0}], "from": [{"cidr": "bogus"}]}))
    fields = {p.field for p in err.problems}
    assert {"spec.priority", "spec.ingress[0].ports[0]", "spec.ingress[0].from[0].cidr"} <= fields


WORKLOAD = {"apiVersion": "stockade.io/v1", "kind": "Workload",
            "metadata": {"name": "web-1", "namespace": "shop", "labels": {"tier": "web"}},
            "spec": {"host": "hv1", "ips": ["198.18.10.11"]}}


@pytest.mark.parametrize("spec_change, field, words", [
    ({"ips": ["198.18.10.300"]}, "spec.ips", ["not an IPv4 or IPv6 address"]),
    ({"ips": ["198.18.10.1", "198.18.10.2"]}, "spec.ips", ["at most one IPv4"]),
    ({"mac": "02:00:00:00:00"}, "spec.mac", ["MAC"]),
    ({"interface": "a-very-long-interface"}, "spec.interface", ["interface name"]),
    ({"ports": [{"name": "http", "port": 80}, {"name": "http", "port": 81}]}, "spec", ["'http'", "twice"]),
    ({"ports": [{"name": "http", "port": 0}]}, "spec.ports[0].port", []),
    ({"ports": [{"name": "Http", "port": 80}]}, "spec.ports[0].name", ["not a valid port name"]),
])
def test_bad_workload_is_refused_with_its_field(spec_change, field, words):
    doc = copy.deepcopy(WORKLOAD)
    doc["spec"].update(spec_change)
    assert_problem(refusal(doc), "Workload shop/web-1", field, *words)


def test_bad_workload_label_is_refused():
    doc = copy.deepcopy(WORKLOAD)
    doc["metadata"]["labels"] = {"tier": "web tier"}
    assert_problem(refusal(doc), "Workload shop/web-1", "metadata.labels", "web tier")


def test_workload_addresses_are_normalized():
    doc = copy.deepcopy(WORKLOAD)
    doc["spec"]["ips"] = ["2001:DB8:10:0::11"]
    assert parse_object(doc).spec.ips == ["2001:db8:10::11"]


def test_bad_group_cidr_is_refused():
    doc = {"apiVersion": "stockade.io/v1", "kind": "Group", "metadata": {"name": "g", "namespace": "shop"},
           "spec": {"cidrs": ["198.19.0.0/16"], "except": ["198.19.5.1/24"]}}
    assert_problem(refusal(doc), "Group shop/g", "spec.except", "not a valid CIDR")


# ------------------------------------------------------------- resolve_kind

@pytest.mark.parametrize("text, kind", [
    ("workload", "Workload"), ("Workloads", "Workload"), ("wl", "Workload"), ("WORKLOAD", "Workload"),
    ("workload.stockade.io", "Workload"), ("policies", "Policy"), ("policy", "Policy"), ("pol", "Policy"),
    ("globalpolicy", "GlobalPolicy"), ("GlobalPolicies", "GlobalPolicy"), ("gp", "GlobalPolicy"),
    ("ns", "Namespace"), ("namespaces", "Namespace"), ("groups", "Group"), (" Group ", "Group"),
])
def test_resolve_kind_accepts_kubectl_spellings(text, kind):
    assert resolve_kind(text).name == kind


def test_resolve_kind_refuses_unknown_kind_and_lists_known():
    with pytest.raises(ValidationError) as e:
        resolve_kind("pods")
    p = e.value.problems[0]
    assert p.field == "kind" and "pods" in p.problem and "workload" in p.problem


# ------------------------------------------------------------- validate_state

SETTINGS = ValidationSettings()


def _ns(name: str) -> dict:
    return {"apiVersion": "stockade.io/v1", "kind": "Namespace", "metadata": {"name": name}}


def _wl(name: str, ns: str = "shop", host: str = "hv1", ips=("198.18.10.11",)) -> dict:
    return {"apiVersion": "stockade.io/v1", "kind": "Workload", "metadata": {"name": name, "namespace": ns},
            "spec": {"host": host, "ips": list(ips)}}


def _grp(name: str, ns: str = "shop") -> dict:
    return {"apiVersion": "stockade.io/v1", "kind": "Group", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"matchLabels": {"tier": name}}}}


def state_of(*docs: dict) -> DesiredState:
    return DesiredState.from_objects(1, [parse_object(d) for d in docs])


def problems_of(state: DesiredState, settings: ValidationSettings = SETTINGS, only=None) -> list[FieldProblem]:
    return validate_state(state, settings, only)


def test_consistent_state_has_no_problems():
    state = state_of(_ns("shop"), _wl("web-1"), _grp("web"), _grp("lb"), _grp("app"), policy())
    assert problems_of(state) == []


def test_missing_namespace_is_a_problem():
    state = state_of(_wl("web-1"))
    (p,) = problems_of(state)
    assert (p.object_ref, p.field) == ("Workload shop/web-1", "metadata.namespace")
    assert "'shop'" in p.problem and "does not exist" in p.problem


def test_missing_group_in_applies_to_is_a_problem():
    state = state_of(_ns("shop"), _grp("lb"), _grp("app"), policy())
    (p,) = problems_of(state)
    assert (p.object_ref, p.field) == (POLICY_REF, "spec.appliesTo.group")
    assert "shop/web" in p.problem and "does not exist" in p.problem


def test_missing_group_in_peer_is_a_problem():
    state = state_of(_ns("shop"), _grp("web"), _grp("app"), policy())
    (p,) = problems_of(state)
    assert (p.object_ref, p.field) == (POLICY_REF, "spec.ingress[0].from[0].group")
    assert "shop/lb" in p.problem


def test_missing_group_in_egress_peer_is_a_problem():
    state = state_of(_ns("shop"), _grp("web"), _grp("lb"), policy())
    (p,) = problems_of(state)
    assert p.field == "spec.egress[0].to[0].group" and "shop/app" in p.problem


def test_group_in_another_namespace_is_found_by_namespace_and_name():
    # As a peer: appliesTo may only name the policy's own namespace (tests/model/test_validation.py).
    doc = policy(rule={"from": [{"group": "ops/bastion"}]})
    state = state_of(_ns("shop"), _ns("ops"), _grp("bastion", "ops"), _grp("web"), _grp("app"), doc)
    assert problems_of(state) == []
    # Missing, it is no problem of a namespaced policy: another tenant's groups are that tenant's
    # business, and an error would tell which exist (validation._foreign_peer).
    state = state_of(_ns("shop"), _grp("web"), _grp("app"), doc)
    assert problems_of(state) == []
    # The platform's references are checked.
    glob = _global("shop/web")
    glob["spec"]["ingress"] = [{"action": "allow", "from": [{"group": "ops/bastion"}]}]
    (p,) = problems_of(state_of(_ns("shop"), _grp("web"), glob))
    assert p.field == "spec.ingress[0].from[0].group" and "ops/bastion" in p.problem


def _global(applies_group: str) -> dict:
    doc = copy.deepcopy(POLICY)
    doc["kind"] = "GlobalPolicy"
    doc["metadata"] = {"name": "platform"}
    doc["spec"]["appliesTo"] = {"group": applies_group}
    doc["spec"]["ingress"][0]["from"] = [{"group": "shop/lb"}]
    doc["spec"]["egress"] = []
    return doc


def test_global_policy_group_ref_needs_namespace_and_name():
    state = state_of(_ns("shop"), _grp("web"), _grp("lb"), _global("web"))
    (p,) = problems_of(state)
    assert (p.object_ref, p.field) == ("GlobalPolicy platform", "spec.appliesTo.group")
    assert "namespace/name" in p.problem and "'web'" in p.problem
    assert problems_of(state_of(_ns("shop"), _grp("web"), _grp("lb"), _global("shop/web"))) == []


def test_ip_outside_allowed_range_is_a_problem():
    state = state_of(_ns("shop"), _wl("web-1", ips=("198.18.10.11", "2001:db9::1")))
    (p,) = problems_of(state)
    assert (p.object_ref, p.field) == ("Workload shop/web-1", "spec.ips[1]")
    assert "2001:db9::1" in p.problem and "outside" in p.problem


def test_allowed_ranges_come_from_settings():
    state = state_of(_ns("shop"), _wl("web-1", ips=("10.0.0.1",)))
    assert problems_of(state)
    assert problems_of(state, ValidationSettings(workload_ranges=(ipaddress.ip_network("10.0.0.0/8"),))) == []


def test_duplicate_ip_across_workloads_is_a_problem():
    state = state_of(_ns("shop"), _wl("web-1", ips=("198.18.10.11",)), _wl("web-2", ips=("198.18.10.12",)),
                     _wl("web-3", host="hv2", ips=("198.18.10.11",)))
    probs = problems_of(state)
    assert {(p.object_ref, p.field) for p in probs} == {("Workload shop/web-1", "spec.ips[0]"),
                                                        ("Workload shop/web-3", "spec.ips[0]")}
    assert all("198.18.10.11" in p.problem and "already used" in p.problem for p in probs)


def test_duplicate_ip_from_assigned_status_is_a_problem():
    assigned = parse_object(_wl("web-2", ips=())).model_copy(update={"status": {"ips": ["198.18.10.11"]}})
    state = DesiredState.from_objects(1, [parse_object(_ns("shop")), parse_object(_wl("web-1")), assigned])
    probs = problems_of(state)
    assert any(p.object_ref == "Workload shop/web-2" and "web-1" in p.problem for p in probs)


def test_unknown_host_is_a_problem_only_when_hosts_are_known():
    state = state_of(_ns("shop"), _wl("web-1", host="hv9"))
    assert problems_of(state) == []
    (p,) = problems_of(state, ValidationSettings(known_hosts=frozenset({"hv1", "hv2"})))
    assert (p.object_ref, p.field) == ("Workload shop/web-1", "spec.host")
    assert "hv9" in p.problem and "hv1, hv2" in p.problem


def test_group_except_outside_its_cidrs_is_a_problem():
    doc = {"apiVersion": "stockade.io/v1", "kind": "Group", "metadata": {"name": "ext", "namespace": "shop"},
           "spec": {"cidrs": ["198.19.0.0/16"], "except": ["198.19.5.0/24", "198.20.0.0/24"]}}
    (p,) = problems_of(state_of(_ns("shop"), doc))
    assert (p.object_ref, p.field) == ("Group shop/ext", "spec.except[1]")


def test_only_limits_validation_to_the_given_objects():
    state = state_of(_wl("web-1"), _wl("web-2", ips=("198.18.10.12",)))
    probs = problems_of(state, only={ObjectKey("Workload", "shop", "web-2")})
    assert [p.object_ref for p in probs] == ["Workload shop/web-2"]


def test_referrers_of_group_lists_policies_that_name_it():
    other = copy.deepcopy(POLICY)
    other["metadata"]["name"] = "lb-egress"
    other["spec"] = {"appliesTo": {"group": "lb"}, "egress": [{"action": "allow", "to": [{"group": "web"}]}]}
    unrelated = copy.deepcopy(POLICY)
    unrelated["metadata"]["name"] = "app-only"
    unrelated["spec"] = {"appliesTo": {"group": "app"}}
    state = state_of(_ns("shop"), _grp("web"), _grp("lb"), _grp("app"), policy(), other, unrelated,
                     _global("shop/web"))
    assert referrers_of_group(state, ("shop", "web")) == [
        "GlobalPolicy platform", "Policy shop/lb-egress", "Policy shop/web-ingress"]
    assert referrers_of_group(state, ("shop", "lb")) == [
        "GlobalPolicy platform", "Policy shop/lb-egress", "Policy shop/web-ingress"]
    assert referrers_of_group(state, ("shop", "app")) == ["Policy shop/app-only", "Policy shop/web-ingress"]
    assert referrers_of_group(state, ("ops", "web")) == []


def _tier(name: str, order: int) -> dict:
    return {"apiVersion": "stockade.io/v1", "kind": "Tier", "metadata": {"name": name}, "spec": {"order": order}}


def test_policy_in_a_tier_that_does_not_exist_is_a_problem():
    state = state_of(_ns("shop"), _grp("web"), _grp("lb"), _grp("app"), policy(tier="security"))
    (p,) = problems_of(state)
    assert (p.object_ref, p.field) == (POLICY_REF, "spec.tier")
    assert "'security'" in p.problem and "does not exist" in p.problem


def test_a_tier_object_makes_its_tier_usable_and_takes_its_place_by_order():
    state = state_of(_tier("security", 50), _tier("late", 950), _ns("shop"), _grp("web"), _grp("lb"),
                     _grp("app"), policy(tier="security"))
    assert problems_of(state) == []
    assert state.tier_order() == ("security", "platform", "application", "baseline", "late")


def test_a_builtin_tier_cannot_be_redefined():
    err = refusal(_tier("platform", 1))
    assert_problem(err, "Tier platform", "", "built-in")


def test_a_bridged_workload_must_name_its_bridge_port():
    raw = {"apiVersion": "stockade.io/v1", "kind": "Workload", "metadata": {"name": "vm", "namespace": "a"},
           "spec": {"host": "hv1", "ips": ["198.18.10.1"], "attachment": "bridged"}}
    assert_problem(refusal(raw), "Workload a/vm", "spec", "attachment", "spec.interface", "bridge port")
    raw["spec"]["interface"] = "vnet3"
    assert parse_object(raw).spec.attachment == "bridged"
    raw["spec"]["attachment"] = "switched"
    assert_problem(refusal(raw), "Workload a/vm", "spec.attachment", "routed", "bridged")
