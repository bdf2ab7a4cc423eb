"""Validation that keeps tenants apart (issue 13): what a namespaced policy may select,
and which interface a workload may take on its host."""

from __future__ import annotations

from typing import Any

import pytest

from stockade.errors import FieldProblem
from stockade.lab import naming as lab_naming
from stockade.model.kinds import ObjectKey, parse_object
from stockade.model.naming import workload_interface
from stockade.model.state import DesiredState
from stockade.model.validation import DEFAULT_RESERVED_INTERFACES, ValidationSettings, validate_state

API = "stockade.io/v1"
SETTINGS = ValidationSettings()


def ns(name: str) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Namespace", "metadata": {"name": name, "labels": {"tenant": name}}}


def wl(name: str, namespace: str = "b", host: str = "hv1", ip: str = "198.18.10.1",
       interface: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"host": host, "ips": [ip]}
    if interface is not None:
        spec["interface"] = interface
    return {"apiVersion": API, "kind": "Workload",
            "metadata": {"name": name, "namespace": namespace, "labels": {"tier": "web"}}, "spec": spec}


def grp(namespace: str, name: str = "web") -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Group", "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"matchLabels": {"tier": "web"}}}}


def pol(spec: dict[str, Any], namespace: str = "a", name: str = "x") -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Policy", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def problems(*docs: dict[str, Any], settings: ValidationSettings = SETTINGS) -> list[FieldProblem]:
    state = DesiredState.from_objects(1, [parse_object(d) for d in (ns("a"), ns("b"), grp("a"), grp("b"), *docs)])
    return validate_state(state, settings)


def only_problem(*docs: dict[str, Any], settings: ValidationSettings = SETTINGS) -> FieldProblem:
    found = problems(*docs, settings=settings)
    assert len(found) == 1, found
    return found[0]


# ------------------------------------------------- what a namespaced policy selects

def test_policy_applying_to_a_group_of_another_namespace_is_refused_naming_object_and_field() -> None:
    p = only_problem(pol({"appliesTo": {"group": "b/web"}, "ingress": [{"action": "allow"}]}))
    assert (p.object_ref, p.field) == ("Policy a/x", "spec.appliesTo.group")
    assert "b/web" in p.problem and "own namespace 'a'" in p.problem
    assert str(p).startswith("Policy a/x: spec.appliesTo.group: ")


def test_policy_naming_its_own_namespace_explicitly_is_accepted() -> None:
    assert problems(pol({"appliesTo": {"group": "a/web"}, "ingress": [{"action": "allow"}]})) == []


@pytest.mark.parametrize("direction,peer_field", [("ingress", "from"), ("egress", "to")])
def test_group_of_another_namespace_as_a_peer_is_accepted(direction: str, peer_field: str) -> None:
    rule = {"action": "allow", peer_field: [{"group": "b/web"}]}
    assert problems(pol({"appliesTo": {"group": "web"}, direction: [rule]})) == []


def test_peer_namespace_selector_is_accepted() -> None:
    rule = {"action": "allow", "from": [{"selector": {}, "namespaceSelector": {"matchLabels": {"tenant": "b"}}}]}
    assert problems(pol({"appliesTo": {"selector": {}}, "ingress": [rule]})) == []


def test_policy_applies_to_namespace_selector_is_refused() -> None:
    p = only_problem(pol({"appliesTo": {"selector": {}, "namespaceSelector": {"matchLabels": {"tenant": "b"}}},
                          "ingress": [{"action": "allow"}]}))
    assert (p.object_ref, p.field) == ("Policy a/x", "spec.appliesTo.namespaceSelector")


def test_global_policy_may_still_apply_to_any_namespaces_group() -> None:
    gp = {"apiVersion": API, "kind": "GlobalPolicy", "metadata": {"name": "platform"},
          "spec": {"tier": "platform", "appliesTo": {"group": "b/web"}, "ingress": [{"action": "allow"}]}}
    assert problems(gp) == []


def test_network_policy_cannot_name_another_namespace_for_its_pods() -> None:
    # A NetworkPolicy selects pods of its own namespace by its shape: the only ways to widen
    # it are fields it does not have, and each is refused by name.
    from stockade.errors import ValidationError

    base = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "x", "namespace": "a"}, "spec": {"podSelector": {}, "ingress": [{}]}}
    for spec_change, field in (
            ({"podSelector": {"namespaceSelector": {"matchLabels": {"tenant": "b"}}}},
             "spec.podSelector.namespaceSelector"),
            ({"appliesTo": {"group": "b/web"}}, "spec.appliesTo")):
        doc = {**base, "spec": {**base["spec"], **spec_change}}
        with pytest.raises(ValidationError) as caught:
            parse_object(doc)
        assert [(p.object_ref, p.field) for p in caught.value.problems] == [("NetworkPolicy a/x", field)]


# ------------------------------------------------------------------- interfaces

def test_interface_of_another_workload_on_the_same_host_is_refused() -> None:
    found = problems(wl("w1", interface="tap1"), wl("w2", ip="198.18.10.2", interface="tap1"))
    assert sorted((p.object_ref, p.field) for p in found) == [("Workload b/w1", "spec.interface"),
                                                             ("Workload b/w2", "spec.interface")]
    assert all("already used on host 'hv1'" in p.problem for p in found)


def test_interface_another_workload_derives_is_refused() -> None:
    victim = wl("victim")
    derived = workload_interface(parse_object(victim))  # type: ignore[arg-type]
    state = DesiredState.from_objects(1, [parse_object(d) for d in (
        ns("a"), ns("b"), victim, wl("attack", namespace="a", ip="198.18.10.2", interface=derived))])
    # Checked as apply checks a new object: the one being written, against everything stored.
    [p] = validate_state(state, SETTINGS, only={ObjectKey("Workload", "a", "attack")})
    assert (p.object_ref, p.field) == ("Workload a/attack", "spec.interface")
    assert "Workload b/victim" in p.problem


def test_the_same_interface_on_two_hosts_is_accepted() -> None:
    assert problems(wl("w1", interface="tap1"), wl("w2", host="hv2", ip="198.18.10.2", interface="tap1")) == []


@pytest.mark.parametrize("iface", ["lo", "fab0"])
def test_interface_the_host_owns_is_refused(iface: str) -> None:
    p = only_problem(wl("w", interface=iface))
    assert (p.object_ref, p.field) == ("Workload b/w", "spec.interface")
    assert "belongs to the host" in p.problem


@pytest.mark.parametrize("iface", ["eth0", "ens3", "br0", "docker0", "hv1", "wg0"])
def test_interface_outside_the_workload_naming_scheme_is_refused(iface: str) -> None:
    p = only_problem(wl("w", interface=iface))
    assert (p.object_ref, p.field) == ("Workload b/w", "spec.interface")
    assert "not a workload interface name" in p.problem


@pytest.mark.parametrize("iface", ["tap0", "vnet12", "veth-db1", "vethab12cd34", "macvtap3", "stk0abc"])
def test_vm_and_container_ports_are_accepted(iface: str) -> None:
    assert problems(wl("w", interface=iface)) == []


def test_deployment_can_allow_other_names_but_never_a_reserved_one() -> None:
    wide = ValidationSettings(interface_pattern=r"eth[0-9]+|lo")
    assert problems(wl("w", interface="eth1"), settings=wide) == []
    assert "belongs to the host" in only_problem(wl("w", interface="lo"), settings=wide).problem
    custom = ValidationSettings(reserved_interfaces=frozenset({"lo", "uplink0"}), interface_pattern=".*")
    assert "belongs to the host" in only_problem(wl("w", interface="uplink0"), settings=custom).problem


def test_a_bad_interface_pattern_is_refused_when_the_settings_are_made() -> None:
    with pytest.raises(ValueError, match="not a regular expression"):
        ValidationSettings(interface_pattern="(")


def test_reserved_defaults_name_the_labs_uplink() -> None:
    # The model may not import the lab (layers.json): this keeps the two names equal.
    assert {lab_naming.FABRIC_IFACE, "lo"} <= DEFAULT_RESERVED_INTERFACES
