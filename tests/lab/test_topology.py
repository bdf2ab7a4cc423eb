"""The lab topology in the real kernel: build is idempotent and additive, teardown leaves nothing."""

from __future__ import annotations

import subprocess

import pytest

from stockade.lab import naming, netns, probe, topology
from tests.lab.conftest import new_prefix
from tests.lab.helpers import kernel, sh

pytestmark = kernel


def _uplink_index(prefix: str, host: str) -> str:
    return sh(naming.host_netns(prefix, host), "ip", "-o", "link", "show", "dev", naming.FABRIC_IFACE).split(":")[0]


def test_build_is_idempotent_and_adds_missing_hypervisors_keeping_the_others(prefix: str) -> None:
    first = topology.build(prefix, 2)
    assert first.fabric and first.host_names == ("hv1", "hv2")
    hv1_uplink = _uplink_index(prefix, "hv1")

    assert topology.build(prefix, 2) == first
    grown = topology.build(prefix, 3)
    assert grown.host_names == ("hv1", "hv2", "hv3")
    assert _uplink_index(prefix, "hv1") == hv1_uplink        # kept, not rebuilt
    assert topology.build(prefix, 1).host_names == ("hv1", "hv2", "hv3")  # never removes
    assert netns.list_netns(naming.lab_netns_prefix(prefix)) == sorted(
        [f"{prefix}-cp", f"{prefix}-fab", f"{prefix}-hv1", f"{prefix}-hv2", f"{prefix}-hv3"])
    for host in grown.hosts:
        v4, v6 = naming.node_addresses(host.name)
        assert host.uplink_up
        assert host.node_addresses == (f"{v4}/24", f"{v6}/64")


def test_hypervisors_reach_each_other_over_the_fabric(prefix: str) -> None:
    topology.build(prefix, 2)
    for ip in naming.node_addresses("hv2"):
        result = probe.probe(naming.host_netns(prefix, "hv1"), None, ip, "icmp", None)
        assert result.verdict == "allowed", result


def test_a_hypervisor_routes_and_owns_the_gateway_address(prefix: str) -> None:
    topology.build(prefix, 1)
    hv = naming.host_netns(prefix, "hv1")
    assert netns.read_sysctl(hv, "net.ipv4.ip_forward") == "1"
    assert netns.read_sysctl(hv, "net.ipv6.conf.all.forwarding") == "1"
    assert f"inet {naming.GATEWAY_V4}/32" in sh(hv, "ip", "-4", "addr", "show", "dev", "lo")
    assert "UP" in sh(hv, "ip", "link", "show", "dev", "lo")
    # ... and only inside the lab: the machine's own netns is untouched.
    assert naming.GATEWAY_V4 not in subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout


def test_teardown_removes_every_lab_netns_and_stops_what_runs_inside(prefix: str) -> None:
    topology.build(prefix, 2)
    extra = [naming.workload_netns(prefix, "hv1", "shop", "x"), f"{prefix}-stray"]
    for name in extra:
        netns.create(name)
    sleeper = subprocess.Popen(["nsenter", f"--net=/run/netns/{prefix}-hv2", "sleep", "60"])
    try:
        assert topology.inspect(prefix).other_netns == (f"{prefix}-stray",)
        removed = topology.teardown(prefix)
        assert sorted(removed) == sorted([f"{prefix}-cp", f"{prefix}-fab", f"{prefix}-hv1", f"{prefix}-hv2", *extra])
        assert netns.list_netns(f"{prefix}-") == []
        assert not topology.inspect(prefix).exists
        assert sleeper.wait(timeout=5) == -9
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()


def test_teardown_leaves_a_lab_whose_prefix_merely_starts_alike(prefix: str) -> None:
    other = prefix + "0"
    topology.build(prefix, 1)
    try:
        topology.build(other, 1)
        topology.teardown(prefix)
        assert netns.list_netns(f"{prefix}-") == []
        assert netns.list_netns(f"{other}-") == [f"{other}-cp", f"{other}-fab", f"{other}-hv1"]
    finally:
        topology.teardown(other)
    assert netns.list_netns(f"{other}-") == []


def test_prefixes_are_unique_per_test() -> None:
    assert len({new_prefix() for _ in range(50)}) == 50


@pytest.mark.parametrize("hosts", [0, naming.MAX_HOSTS + 1])
def test_build_refuses_an_impossible_host_count(prefix: str, hosts: int) -> None:
    from stockade.errors import LabError

    with pytest.raises(LabError):
        topology.build(prefix, hosts)
    assert netns.list_netns(f"{prefix}-") == []
