"""Validation that keeps tenants apart (issue 13): what a namespaced policy may select, and which
interface a workload may take on its host; and addresses that silently mean nothing, or something
else (IPv4-mapped IPv6, a range's or pool's network or broadcast address)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from stockade.controller.config import ControllerConfig
from stockade.controller.wiring import open_service
from stockade.errors import FieldProblem, ValidationError
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


# ------------------------------------------------- addresses that mean nothing, or something else
# Issue 13, item 12: addresses that silently mean nothing, or something else, are refused naming
# the object and field: IPv4-mapped IPv6 (::ffff:0:0/96) as a workload address or in a CIDR, and a
# workload range's or pool's network or broadcast address as a workload's.

V1 = "stockade.io/v1"


def _workload(*ips: str) -> dict[str, Any]:
    return {"apiVersion": V1, "kind": "Workload", "metadata": {"name": "w", "namespace": "a"},
            "spec": {"host": "hv1", "ips": list(ips)}}


def _field_and_problem(doc: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(ValidationError) as caught:
        parse_object(doc)
    [problem] = caught.value.problems
    return problem.field, problem.problem


@pytest.mark.parametrize("ip", ["::ffff:198.18.1.10", "::ffff:c612:10a"])
def test_an_ipv4_mapped_workload_address_is_refused(ip: str) -> None:
    field, problem = _field_and_problem(_workload("198.18.1.11", ip))
    assert field == "spec.ips" and "IPv4-mapped" in problem and "198.18.1.10" in problem


@pytest.mark.parametrize("cidr", ["::ffff:0:0/96", "::ffff:198.18.0.0/112", "::ffff:198.18.1.10/128"])
def test_an_ipv4_mapped_cidr_is_refused_in_groups_and_peers(cidr: str) -> None:
    group = {"apiVersion": V1, "kind": "Group", "metadata": {"name": "g", "namespace": "a"},
             "spec": {"cidrs": [cidr]}}
    field, problem = _field_and_problem(group)
    assert field.startswith("spec.cidrs") and "IPv4-mapped" in problem
    policy = {"apiVersion": V1, "kind": "Policy", "metadata": {"name": "p", "namespace": "a"},
              "spec": {"appliesTo": {"group": "g"}, "egress": [{"action": "allow", "to": [{"cidr": cidr}]}]}}
    field, problem = _field_and_problem(policy)
    assert field.startswith("spec.egress[0].to[0]") or field.startswith("spec.egress.0.to.0"), field
    assert "IPv4-mapped" in problem


def test_wider_ipv6_cidrs_that_only_contain_the_mapped_range_are_accepted() -> None:
    parse_object({"apiVersion": V1, "kind": "Group", "metadata": {"name": "g", "namespace": "a"},
                  "spec": {"cidrs": ["::/0", "2001:db8::/32"]}})


def _problems(ip: str, settings: ValidationSettings) -> list[str]:
    docs = [{"apiVersion": V1, "kind": "Namespace", "metadata": {"name": "a"}}, _workload(ip)]
    state = DesiredState.from_objects(1, (parse_object(d) for d in docs))
    return [f"{p.field}: {p.problem}" for p in validate_state(state, settings)]


def _with_pools() -> ValidationSettings:
    return ValidationSettings(pools=(ipaddress.ip_network("198.18.64.0/18"), ipaddress.ip_network("2001:db8:64::/64")))


@pytest.mark.parametrize("ip, what", [
    ("198.18.0.0", "the network address of 198.18.0.0/17"),       # the allowed range's
    ("198.18.64.0", "the network address of 198.18.64.0/18"),      # the IPAM pool's
    ("198.18.127.255", "the broadcast address of 198.18.0.0/17"),  # the pool's too: named once
    ("2001:db8:64::", "the network address of 2001:db8:64::/64"),
])
def test_a_network_or_broadcast_address_is_no_workloads(ip: str, what: str) -> None:
    problems = _problems(ip, _with_pools())
    assert any(p.startswith("spec.ips[0]:") and what in p for p in problems), problems


def test_host_addresses_and_host_routes_are_fine() -> None:
    assert _problems("198.18.64.1", _with_pools()) == []
    assert _problems("198.18.63.255", ValidationSettings()) == []  # inside the range, not its edge
    single = ValidationSettings(workload_ranges=(ipaddress.ip_network("198.18.5.5/32"),))
    assert _problems("198.18.5.5", single) == []  # a /32 has no network or broadcast address


def test_the_controller_refuses_its_pools_network_address_and_stores_nothing(tmp_path: Any) -> None:
    service = open_service(ControllerConfig(db_path=tmp_path / "s.db"))
    try:
        service.apply([{"apiVersion": V1, "kind": "Namespace", "metadata": {"name": "a"}}], "admin", "")
        with pytest.raises(ValidationError) as caught:
            service.apply([_workload("198.18.64.0")], "admin", "")
        [problem] = caught.value.problems
        assert (problem.object_ref, problem.field) == ("Workload a/w", "spec.ips[0]")
        assert service.revision() == 1
    finally:
        service.close()
