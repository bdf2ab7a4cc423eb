"""plan_endpoints: which endpoints a hypervisor must have, and its routes to the others (pure)."""

from __future__ import annotations

from stockade.lab import naming
from stockade.lab.endpoints import plan_endpoints
from stockade.model.kinds import parse_object
from stockade.model.naming import workload_interface
from stockade.model.state import DesiredState
from tests.lab.helpers import DB1, SHOP, WEB1, state, workload


def test_local_workloads_become_endpoints_and_remote_ones_routes_via_their_node() -> None:
    plan = plan_endpoints(state(1, *SHOP), "hv1", "stk")
    assert [ep.key for ep in plan.local] == ["shop/web-1", "shop/web-2"]
    web1 = plan.local[0]
    assert web1.netns == "stk-hv1.shop.web-1"
    assert web1.interface == workload_interface(parse_object(WEB1))  # type: ignore[arg-type]
    assert web1.ips == ("198.18.10.11", "2001:db8:10::11")
    assert dict(plan.remote_routes) == {"198.18.10.21": "198.18.254.2", "2001:db8:10::21": "2001:db8:ffff::2"}


def test_spec_mac_and_interface_are_used_and_a_mac_is_derived_otherwise() -> None:
    wl = workload("w", "hv1", ["198.18.10.5"], mac="02:aa:bb:cc:dd:ee", interface="custom0")
    plan = plan_endpoints(state(1, wl, WEB1), "hv1", "stk")
    by_key = {ep.key: ep for ep in plan.local}
    assert (by_key["shop/w"].mac, by_key["shop/w"].interface) == ("02:aa:bb:cc:dd:ee", "custom0")
    assert by_key["shop/web-1"].mac == naming.derived_mac("shop/web-1")


def test_workloads_on_hosts_outside_the_lab_get_no_route() -> None:
    plan = plan_endpoints(state(1, WEB1, workload("ext", "rack7-node3", ["198.18.10.99"])), "hv2", "stk")
    assert plan.local == ()
    assert "198.18.10.99" not in plan.remote_routes
    assert "198.18.10.11" in plan.remote_routes


def test_two_workloads_asking_for_one_interface_leave_the_second_out_with_a_problem() -> None:
    a = workload("a", "hv1", ["198.18.10.1"], interface="same0")
    b = workload("b", "hv1", ["198.18.10.2"], interface="same0")
    plan = plan_endpoints(state(1, a, b), "hv1", "stk")
    assert [ep.key for ep in plan.local] == ["shop/a"]
    assert len(plan.problems) == 1 and "shop/b" in plan.problems[0] and "same0" in plan.problems[0]


def test_addresses_assigned_by_the_controller_are_used_when_the_spec_has_none() -> None:
    wl = parse_object(workload("auto", "hv1"))
    assigned = wl.model_copy(update={"status": {"ips": ["2001:db8:64::7", "198.18.64.7"]}})
    desired = DesiredState.from_objects(1, [parse_object(
        {"apiVersion": "stockade.io/v1", "kind": "Namespace", "metadata": {"name": "shop"}}), assigned])
    plan = plan_endpoints(desired, "hv1", "stk")
    assert plan.local[0].ips == ("198.18.64.7", "2001:db8:64::7")  # IPv4 first


def test_the_plan_is_deterministic() -> None:
    assert plan_endpoints(state(1, *SHOP), "hv2", "stk") == plan_endpoints(state(1, *reversed(SHOP)), "hv2", "stk")
    assert plan_endpoints(state(1, DB1), "hv2", "stk").local[0].netns == "stk-hv2.shop.db-1"
