"""Workload endpoints in the real kernel: created from a DesiredState, reachable, repaired, removed
(marker `kernel`); and, without a kernel, the plan they are built from (`plan_endpoints`).

No firewall is installed here, so every probe between existing workloads must
be allowed; the sockets in the workloads' netns decide, not the code under test.
"""

from __future__ import annotations

import secrets
import subprocess
import threading
import time
from typing import Callable, Iterator

import pytest

from stockade.lab import endpoints, naming, netns, topology
from stockade.lab.endpoints import plan_endpoints
from stockade.lab.probe import probe
from stockade.model.kinds import ObjectKey, parse_object
from stockade.model.naming import workload_interface
from stockade.model.state import DesiredState
from tests.lab.conftest import Lab, make_lab
from tests.lab.helpers import DB1, SHOP, WEB1, needs_root, sh, state, workload

PLACES = {"same-host": ("web-1", "hv1", "web-2", "hv1"), "cross-host": ("web-1", "hv1", "db-1", "hv2")}
IPS = {"web-2": ("198.18.10.12", "2001:db8:10::12"), "db-1": ("198.18.10.21", "2001:db8:10::21")}


@pytest.mark.kernel
@needs_root
@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("protocol", ["tcp", "udp", "icmp"])
@pytest.mark.parametrize("place", list(PLACES))
def test_probe_between_workloads_is_allowed_without_a_firewall(shared_lab: Lab, place: str, protocol: str,
                                                              family: int) -> None:
    src, src_host, dst, dst_host = PLACES[place]
    ip = IPS[dst][0 if family == 4 else 1]
    result = probe(shared_lab.netns(src, src_host), shared_lab.netns(dst, dst_host), ip, protocol, 8080)
    assert result.verdict == "allowed", result


@pytest.mark.kernel
@needs_root
def test_reconcile_reports_each_endpoint_with_the_mac_its_nic_really_has(shared_lab: Lab) -> None:
    plan = endpoints.plan_endpoints(shared_lab.state, "hv1", shared_lab.prefix)
    statuses = endpoints.reconcile_endpoints(plan, shared_lab.prefix, "hv1")
    assert sorted(statuses) == ["shop/web-1", "shop/web-2"]
    web2 = statuses["shop/web-2"]
    assert web2.netns == shared_lab.netns("web-2", "hv1")
    assert web2.mac == "02:00:00:00:10:12"   # from the spec
    for st in statuses.values():
        assert f"link/ether {st.mac}" in sh(st.netns, "ip", "link", "show", "dev", naming.WORKLOAD_IFACE)
        assert "UP" in sh(shared_lab.hv("hv1"), "ip", "link", "show", "dev", st.interface)


@pytest.mark.kernel
@needs_root
def test_workload_netns_has_its_addresses_and_routes_to_the_gateway(shared_lab: Lab) -> None:
    ns = shared_lab.netns("web-1", "hv1")
    addrs = sh(ns, "ip", "-o", "addr", "show", "dev", "eth0")
    assert "inet 198.18.10.11/32" in addrs and "inet6 2001:db8:10::11/128" in addrs
    assert "default via 198.18.255.1 dev eth0" in sh(ns, "ip", "-4", "route")
    assert "default via fe80::1 dev eth0" in sh(ns, "ip", "-6", "route")
    routes = sh(shared_lab.hv("hv1"), "ip", "route", "show", "proto", str(naming.ROUTE_PROTO))
    assert "198.18.10.21 via 198.18.254.2 dev fab0" in routes
    assert "198.18.10.11 dev stk" in routes


class LinkMonitor:
    """`ip monitor` of link, address and route events in a netns, with a marker to sync on.

    The kernel delivers a netns's rtnetlink events in order, so once the monitor has printed a
    marker (a veth pair added and removed by the test), it has printed every event before it:
    no sleep is needed to know that "nothing happened" or that it has subscribed.
    """

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.lines: list[str] = []
        self.proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{ns}", "ip", "monitor", "link", "address",
                                      "route"], stdout=subprocess.PIPE, text=True)
        out = self.proc.stdout
        assert out is not None
        threading.Thread(target=lambda: self.lines.extend(iter(out.readline, "")), daemon=True).start()

    def mark(self) -> int:
        """Add and remove a veth pair until the monitor shows it; return the index of the
        marker's first line (everything before it happened before the marker)."""
        name = f"mk{secrets.token_hex(4)}"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # repeated: the first may come before `ip monitor` subscribed
            subprocess.run(["ip", "-n", self.ns, "link", "add", name, "type", "veth", "peer", "name", f"{name}p"],
                           check=True)  # veth: this kernel has no dummy links
            subprocess.run(["ip", "-n", self.ns, "link", "del", name], check=True)
            for _ in range(20):
                found = next((i for i, line in enumerate(list(self.lines)) if name in line), None)
                if found is not None:
                    return found
                time.sleep(0.01)
        raise AssertionError(f"ip monitor in {self.ns} never showed the marker link {name}")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def monitor() -> Iterator[Callable[[str], LinkMonitor]]:
    """start(netns) -> a LinkMonitor there, subscribed; every monitor is stopped after the test."""
    started: list[LinkMonitor] = []

    def start(ns: str) -> LinkMonitor:
        mon = LinkMonitor(ns)
        started.append(mon)
        mon.mark()  # subscribed from here on
        mon.lines.clear()
        return mon

    yield start
    for mon in started:
        mon.stop()


@pytest.mark.kernel
@needs_root
def test_second_reconcile_with_no_change_sends_no_mutating_request(
        lab: Lab, monitor: Callable[[str], LinkMonitor]) -> None:
    plan = endpoints.plan_endpoints(lab.state, "hv1", lab.prefix)
    mon = monitor(lab.hv("hv1"))
    report = endpoints.reconcile(plan, lab.prefix, "hv1")
    assert report.changes == ()
    assert report.errors == {}
    assert sorted(report.endpoints) == ["shop/web-1", "shop/web-2"]
    assert mon.lines[:mon.mark()] == []  # the kernel saw no change either
    # Control: the monitor does see a change the reconcile makes.
    mon.lines.clear()
    lab.apply(lab.state.with_changes(2, delete=[ObjectKey("Workload", "shop", "web-2")]))
    assert mon.lines[:mon.mark()] != []


@pytest.mark.kernel
@needs_root
def test_removing_a_workload_removes_its_netns_veth_and_routes_everywhere(lab: Lab) -> None:
    web2 = endpoints.plan_endpoints(lab.state, "hv1", lab.prefix).local[1]
    assert web2.key == "shop/web-2"
    reports = lab.apply(lab.state.with_changes(2, delete=[ObjectKey("Workload", "shop", "web-2")]))
    assert any("remove netns" in c for c in reports["hv1"].changes)
    assert not netns.exists(web2.netns)
    assert web2.interface not in sh(lab.hv("hv1"), "ip", "link")
    assert "198.18.10.12" not in sh(lab.hv("hv1"), "ip", "route")
    assert "2001:db8:10::12" not in sh(lab.hv("hv1"), "ip", "-6", "route")
    assert "198.18.10.12" not in sh(lab.hv("hv2"), "ip", "route")
    assert "2001:db8:10::12" not in sh(lab.hv("hv2"), "ip", "-6", "route")
    assert [h.workloads for h in topology.inspect(lab.prefix).hosts] == [
        (lab.netns("web-1", "hv1"),), (lab.netns("db-1", "hv2"),)]
    # What remains still works.
    assert probe(lab.netns("db-1", "hv2"), lab.netns("web-1", "hv1"), "198.18.10.11", "tcp", 8080).verdict == "allowed"


@pytest.mark.kernel
@needs_root
def test_changed_addresses_are_applied_in_the_workload_and_on_both_hosts(lab: Lab) -> None:
    moved = workload("web-1", "hv1", ["198.18.10.111", "2001:db8:10::111"])
    reports = lab.apply(lab.state.with_changes(2, put=[state(2, moved).workloads[("shop", "web-1")]]))
    assert reports["hv1"].changes and reports["hv2"].changes
    addrs = sh(lab.netns("web-1", "hv1"), "ip", "-o", "addr", "show", "dev", "eth0")
    assert "198.18.10.111/32" in addrs and "2001:db8:10::111/128" in addrs
    assert "198.18.10.11/" not in addrs and "2001:db8:10::11/" not in addrs
    db1 = lab.netns("db-1", "hv2")
    for ip in ("198.18.10.111", "2001:db8:10::111"):
        assert probe(db1, lab.netns("web-1", "hv1"), ip, "tcp", 8080).verdict == "allowed"
    assert probe(db1, None, "198.18.10.11", "icmp", None).verdict == "unreachable"
    # The old addresses' routes are gone from the workload's own hypervisor too (a link-scope
    # IPv4 route is deleted only when the delete asks for any scope).
    for family, old in (("-4", "198.18.10.11"), ("-6", "2001:db8:10::11")):
        assert sh(lab.hv("hv1"), "ip", family, "route", "show", old).strip() == "", old


@pytest.mark.kernel
@needs_root
def test_a_veth_or_route_deleted_by_hand_is_put_back(lab: Lab) -> None:
    web1 = endpoints.plan_endpoints(lab.state, "hv1", lab.prefix).local[0]
    sh(lab.hv("hv1"), "ip", "link", "del", web1.interface)
    sh(lab.hv("hv1"), "ip", "route", "del", "198.18.10.21/32")
    report = lab.apply(lab.state)["hv1"]
    assert any(f"create veth {web1.interface}" in c for c in report.changes)
    assert any("add route 198.18.10.21/32" in c for c in report.changes)
    assert probe(web1.netns, lab.netns("db-1", "hv2"), "198.18.10.21", "udp", 5353).verdict == "allowed"
    assert lab.apply(lab.state)["hv1"].changes == ()


@pytest.mark.kernel
@needs_root
def test_a_route_the_lab_does_not_own_is_left_alone(lab: Lab) -> None:
    hv1 = lab.hv("hv1")
    sh(hv1, "ip", "route", "add", "198.18.99.0/24", "via", "198.18.254.2")       # someone else's
    assert lab.apply(lab.state)["hv1"].changes == ()
    assert "198.18.99.0/24 via 198.18.254.2" in sh(hv1, "ip", "route")


@pytest.mark.kernel
@needs_root
def test_only_the_hypervisor_of_a_workload_creates_its_netns(prefix: str) -> None:
    lab = make_lab(prefix, desired=state(1, WEB1, DB1))
    assert [h.workloads for h in topology.inspect(prefix).hosts] == [
        (lab.netns("web-1", "hv1"),), (lab.netns("db-1", "hv2"),)]


@pytest.mark.kernel
@needs_root
def test_reconcile_on_a_missing_hypervisor_is_a_clear_error(prefix: str) -> None:
    from stockade.errors import LabError

    plan = endpoints.plan_endpoints(state(1, WEB1), "hv1", prefix)
    with pytest.raises(LabError, match="does not exist"):
        endpoints.reconcile(plan, prefix, "hv1")


@pytest.mark.kernel
@needs_root
def test_building_and_reconciling_never_fork(prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The agent is a threaded asyncio process: a forked child that gets SIGTERM would
    # wake the agent's own signal handler and stop it. subprocess (fork+exec) is fine.
    import os

    def no_fork() -> int:
        raise AssertionError("the lab forked")

    monkeypatch.setattr(os, "fork", no_fork)
    lab = make_lab(prefix)
    lab.apply(lab.state.with_changes(2, delete=[ObjectKey("Workload", "shop", "web-2")]))
    assert probe(lab.netns("web-1", "hv1"), lab.netns("db-1", "hv2"), "198.18.10.21", "tcp", 8080).verdict == "allowed"


# ------------------------------------------------- plan_endpoints (pure, no kernel)
# plan_endpoints: which endpoints a hypervisor must have, and its routes to the others (pure).

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
