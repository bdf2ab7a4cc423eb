"""Probes report what the kernel did: an nft drop is "denied", a closed port or a reject "rejected"
(marker `kernel`); and, without a kernel, that a probe enters only its workload's netns."""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from stockade.errors import LabError, ValidationError
from stockade.lab import naming
from stockade.lab.probe import probe, serve
from tests.lab.conftest import Lab
from tests.lab.helpers import needs_root, sh

DB1_V4, DB1_V6 = "198.18.10.21", "2001:db8:10::21"
TABLE = "labtest"


@pytest.fixture
def blocked(shared_lab: Lab) -> Iterator[Lab]:
    """hv2 drops or rejects a few ports in its forward hook (the firewall-to-be's place)."""
    hv2 = shared_lab.hv("hv2")
    sh(hv2, "nft", "-f", "-", input=f"""
table inet {TABLE} {{
  chain forward {{
    type filter hook forward priority 0; policy accept;
    ip saddr 198.18.10.99 counter
    tcp dport 9001 drop
    udp dport 9001 drop
    tcp dport 9002 reject with tcp reset
    udp dport 9002 reject
    ip daddr {DB1_V4} icmp type echo-request drop
    ip6 daddr {DB1_V6} icmpv6 type echo-request reject
  }}
}}
""")
    try:
        yield shared_lab
    finally:
        sh(hv2, "nft", "delete", "table", "inet", TABLE)


def _from_web1(lab: Lab, ip: str, protocol: str, port: int | None, **kw: object) -> str:
    return probe(lab.netns("web-1", "hv1"), lab.netns("db-1", "hv2"), ip, protocol, port, **kw).verdict  # type: ignore[arg-type]


@pytest.mark.kernel
@needs_root
@pytest.mark.parametrize("ip", [DB1_V4, DB1_V6])
@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_port_dropped_by_nft_in_the_hypervisor_is_denied(blocked: Lab, protocol: str, ip: str) -> None:
    assert _from_web1(blocked, ip, protocol, 9001, timeout=0.5) == "denied"
    assert _from_web1(blocked, ip, protocol, 9003) == "allowed"  # control: the rule is what blocks


@pytest.mark.kernel
@needs_root
@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_port_rejected_by_nft_is_rejected(blocked: Lab, protocol: str) -> None:
    assert _from_web1(blocked, DB1_V4, protocol, 9002) == "rejected"


@pytest.mark.kernel
@needs_root
def test_icmp_drop_is_denied_and_icmp_reject_is_rejected(blocked: Lab) -> None:
    assert _from_web1(blocked, DB1_V4, "icmp", None, timeout=0.5) == "denied"
    assert _from_web1(blocked, DB1_V6, "icmp", None) == "rejected"


@pytest.mark.kernel
@needs_root
@pytest.mark.parametrize("ip", [DB1_V4, DB1_V6])
@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_port_with_no_server_is_rejected(shared_lab: Lab, protocol: str, ip: str) -> None:
    assert _from_web1(shared_lab, ip, protocol, 9004, reuse_server=True) == "rejected"


@pytest.mark.kernel
@needs_root
def test_a_destination_with_no_route_is_unreachable(shared_lab: Lab) -> None:
    assert _from_web1(shared_lab, "198.18.10.77", "tcp", 80) == "unreachable"


@pytest.mark.kernel
@needs_root
def test_one_server_serves_many_probes_and_is_gone_afterwards(shared_lab: Lab) -> None:
    with serve(shared_lab.netns("db-1", "hv2"), "tcp", 9005) as server:
        for ip in (DB1_V4, DB1_V6, DB1_V4):
            assert _from_web1(shared_lab, ip, "tcp", 9005, reuse_server=True) == "allowed"
        pid = server.pid
    assert not os.path.exists(f"/proc/{pid}")
    assert _from_web1(shared_lab, DB1_V4, "tcp", 9005, reuse_server=True) == "rejected"


@pytest.mark.kernel
@needs_root
def test_src_ip_sets_the_source_even_for_an_address_the_workload_does_not_have(blocked: Lab) -> None:
    assert _from_web1(blocked, DB1_V4, "udp", 9006, src_ip="198.18.10.11") == "allowed"
    # A spoofed source leaves (hv2 counts it), but the echo cannot come back to it.
    assert _from_web1(blocked, DB1_V4, "udp", 9006, src_ip="198.18.10.99", timeout=0.3) == "denied"
    assert "packets 1 " in sh(blocked.hv("hv2"), "nft", "list", "table", "inet", TABLE)


@pytest.mark.kernel
@needs_root
def test_probe_into_a_missing_netns_is_a_lab_error(shared_lab: Lab) -> None:
    with pytest.raises(LabError, match="does not exist"):
        probe(shared_lab.netns("web-1", "hv1"), f"{shared_lab.prefix}-hv9.x.y", DB1_V4, "tcp", 80)


@pytest.mark.kernel
@needs_root
def test_a_port_already_in_use_is_a_clear_error(shared_lab: Lab) -> None:
    db1 = shared_lab.netns("db-1", "hv2")
    with serve(db1, "tcp", 9007):
        with pytest.raises(LabError, match="did not start"):
            with serve(db1, "tcp", 9007):
                pass


# ------------------------------------------------- which netns a probe enters (no kernel)
# Issue 13: `probe` enters only the network namespace this lab gives a workload, whatever netns
# an agent reported for it (it runs as root, with nsenter). No root needed.

def test_probe_enters_only_this_labs_netns_for_the_workload() -> None:
    from stockade.lab.probe import check_workload_netns

    good = naming.workload_netns("stk", "hv1", "shop", "web-1")
    assert check_workload_netns(good, "stk", "hv1", "shop", "web-1") == good
    for reported in ("/proc/1/ns/net", "../../proc/1/ns/net", "stk-hv1", "stk-fab",
                     naming.workload_netns("stk", "hv1", "shop", "db-1"),     # another workload's
                     naming.workload_netns("other", "hv1", "shop", "web-1"),  # another lab's
                     naming.workload_netns("stk", "hv2", "shop", "web-1"),    # another host's
                     ""):
        with pytest.raises(ValidationError) as caught:
            check_workload_netns(reported, "stk", "hv1", "shop", "web-1")
        [problem] = caught.value.problems
        assert (problem.object_ref, problem.field) == ("Workload shop/web-1", "status.netns")


def test_probe_never_joins_a_path_as_a_netns_name() -> None:
    from stockade.lab.probe import _nsenter

    for name in ("/proc/1/ns/net", "../x", ".hidden", ""):
        with pytest.raises(LabError, match="not a network namespace name"):
            _nsenter(name, ["true"])
