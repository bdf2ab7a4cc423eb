"""Issue 13, item 12: addresses that silently mean nothing, or something else, are refused naming
the object and field: IPv4-mapped IPv6 (::ffff:0:0/96) as a workload address or in a CIDR, and a
workload range's or pool's network or broadcast address as a workload's."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from stockade.controller.config import ControllerConfig
from stockade.controller.wiring import open_service
from stockade.errors import ValidationError
from stockade.model.kinds import parse_object
from stockade.model.state import DesiredState
from stockade.model.validation import ValidationSettings, validate_state

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
