"""A real QEMU VM as a lab workload: booted on a tap in a scratch hypervisor netns, routed as the
lab routes a namespace workload, exchanging real packets with a peer netns (marker `kernel`).

    peer netns  vmhp…  198.18.200.2/24 2001:db8:200::2/64 ── veth ── vmhv… 198.18.200.1/24 …  hv netns
    hv netns    lo 198.18.255.1/32;  tap vmht… fe80::1/64, routes to the guest's /32 and /128
    guest       eth0 198.18.201.10/32 2001:db8:201::10/128, default via 198.18.255.1 / fe80::1

The VM side speaks through the control channel (vm.serve, vm.connect), the peer side through the
namespace probe (stockade.lab.probe), and both report the same verdicts. One VM serves the whole
module (a TCG boot takes seconds); the lifecycle test boots its own.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from stockade.errors import LabError
from stockade.lab import netns as ns
from stockade.lab.probe import probe, serve
from stockade.lab.vm import GuestClient, GuestImage, RunningVm, VmSpec, build_image, configure_routed_tap, start_vm
from tests.lab.helpers import sh
from tests.waiting import process_gone, wait_until

pytestmark = pytest.mark.kernel

GUEST_V4, GUEST_V6 = "198.18.201.10", "2001:db8:201::10"
PEER_V4, PEER_V6 = "198.18.200.2", "2001:db8:200::2"
HV_V4, HV_V6 = "198.18.200.1", "2001:db8:200::1"
SPOOF_V4, SPOOF_V6 = "198.18.201.99", "2001:db8:201::99"
TABLE = "vmhtest"
# For an answer that is expected: returned as soon as it comes, but an emulated (TCG) guest on a
# busy machine can take more than the probe's default second to answer.
SURE = 3.0


@dataclass
class VmLab:
    hv: str
    peer: str
    vm: RunningVm
    image: GuestImage
    run_root: Path


def _build_hypervisor_and_peer(hv: str, peer: str, suffix: str) -> None:
    """The hypervisor's routed side (as lab/topology.py gives a hypervisor) and a routed peer."""
    for name in (hv, peer):
        ns.create(name)
        ns.write_sysctls(name, {"net.ipv6.conf.all.accept_dad": "0", "net.ipv6.conf.default.accept_dad": "0"})
        sh(name, "ip", "link", "set", "lo", "up")
    ns.write_sysctls(hv, {"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1"})
    sh(hv, "ip", "addr", "add", "198.18.255.1/32", "dev", "lo")
    hv_if, peer_if = f"vmhv{suffix}", f"vmhp{suffix}"
    sh(hv, "ip", "link", "add", hv_if, "type", "veth", "peer", "name", peer_if, "netns", peer)
    sh(hv, "ip", "addr", "add", f"{HV_V4}/24", "dev", hv_if)
    sh(hv, "ip", "addr", "add", f"{HV_V6}/64", "dev", hv_if, "nodad")
    sh(hv, "ip", "link", "set", hv_if, "up")
    sh(peer, "ip", "addr", "add", f"{PEER_V4}/24", "dev", peer_if)
    sh(peer, "ip", "addr", "add", f"{PEER_V6}/64", "dev", peer_if, "nodad")
    sh(peer, "ip", "link", "set", peer_if, "up")
    sh(peer, "ip", "route", "add", "default", "via", HV_V4)
    sh(peer, "ip", "-6", "route", "add", "default", "via", HV_V6)


def _suffix() -> str:
    return secrets.token_hex(2)


@pytest.fixture(scope="module")
def vm_lab() -> Iterator[VmLab]:
    suffix = _suffix()
    hv, peer = f"vmh-hv-{suffix}", f"vmh-peer-{suffix}"
    run_root = Path(tempfile.mkdtemp(prefix="vmh-"))
    vm: RunningVm | None = None
    try:
        _build_hypervisor_and_peer(hv, peer, suffix)
        image = build_image(run_root / "image")
        spec = VmSpec("vmh-guest", hv, f"vmht{suffix}", "52:54:00:18:20:10", (GUEST_V4, GUEST_V6))
        vm = start_vm(spec, image, run_root / "vm")
        configure_routed_tap(hv, spec.tap, spec.ips)
        print(f"\nVM booted in {vm.boot_seconds:.2f} s with {vm.accel.upper()} (QEMU pid {vm.pid})")
        yield VmLab(hv, peer, vm, image, run_root)
    finally:
        if vm is not None:
            vm.stop()
        for name in (hv, peer):
            ns.remove(name)
        shutil.rmtree(run_root, ignore_errors=True)


@pytest.fixture
def nft_in_hv(vm_lab: VmLab) -> Iterator[str]:
    """An empty inet table of this test's in the hypervisor netns; removed after the test."""
    sh(vm_lab.hv, "nft", "add", "table", "inet", TABLE)
    try:
        yield TABLE
    finally:
        sh(vm_lab.hv, "nft", "delete", "table", "inet", TABLE)


# ------------------------------------------------------------------ the VM itself

def test_vm_runs_qemu_in_the_hypervisor_netns_with_its_tap(vm_lab: VmLab) -> None:
    vm = vm_lab.vm
    assert vm.accel in ("kvm", "tcg")
    assert vm.boot_seconds < 60
    assert int((vm.run_dir / "qemu.pid").read_text()) == vm.pid
    assert Path(f"/proc/{vm.pid}/cmdline").read_bytes().split(b"\0")[0] == b"qemu-system-x86_64"
    assert os.stat(f"/proc/{vm.pid}/ns/net").st_ino == os.stat(ns.netns_path(vm_lab.hv)).st_ino
    link = sh(vm_lab.hv, "ip", "-d", "link", "show", vm.spec.tap)
    assert "tun type tap" in link and "UP" in link
    assert sorted(vm.addresses()) == sorted([f"{GUEST_V4}/32", f"{GUEST_V6}/128"])


# ------------------------------------------------------------------ VM → peer

@pytest.mark.parametrize("ip", [PEER_V4, PEER_V6])
@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_vm_reaches_a_peer_server_and_is_refused_on_a_closed_port(vm_lab: VmLab, protocol: str, ip: str) -> None:
    with serve(vm_lab.peer, protocol, 7001):
        result = vm_lab.vm.connect(ip, protocol, 7001, timeout=SURE)
        assert result.verdict == "allowed", result
        closed = vm_lab.vm.connect(ip, protocol, 7002, timeout=SURE)
        assert closed.verdict == "rejected", closed


@pytest.mark.parametrize("ip", [PEER_V4, PEER_V6])
def test_vm_pings_the_peer(vm_lab: VmLab, ip: str) -> None:
    result = vm_lab.vm.connect(ip, "icmp", timeout=SURE)
    assert result.verdict == "allowed", result


@pytest.mark.parametrize("ip", [PEER_V4, PEER_V6])
@pytest.mark.parametrize("protocol", ["tcp", "udp", "icmp"])
def test_vm_sees_a_drop_as_denied_and_a_reject_as_rejected(vm_lab: VmLab, nft_in_hv: str, protocol: str,
                                                            ip: str) -> None:
    match = {"tcp": "tcp dport 7003", "udp": "udp dport 7003",
             "icmp": "icmp type echo-request" if ":" not in ip else "icmpv6 type echo-request"}[protocol]
    sh(vm_lab.hv, "nft", "add", "chain", "inet", nft_in_hv, "vmhforward",
       "{ type filter hook forward priority 0; policy accept; }")
    sh(vm_lab.hv, "nft", "add", "rule", "inet", nft_in_hv, "vmhforward", *match.split(), "drop")
    with serve(vm_lab.peer, protocol, 7003):
        assert vm_lab.vm.connect(ip, protocol, 7003, timeout=0.5).verdict == "denied"
        sh(vm_lab.hv, "nft", "flush", "chain", "inet", nft_in_hv, "vmhforward")
        # As tests/lab/test_probe.py: a TCP reset, a UDP port unreachable, a prohibited ping.
        reject = {"tcp": "reject with tcp reset", "udp": "reject",
                  "icmp": "reject with icmpx admin-prohibited"}[protocol]
        sh(vm_lab.hv, "nft", "add", "rule", "inet", nft_in_hv, "vmhforward", *match.split(), *reject.split())
        assert vm_lab.vm.connect(ip, protocol, 7003, timeout=SURE).verdict == "rejected"
        sh(vm_lab.hv, "nft", "flush", "chain", "inet", nft_in_hv, "vmhforward")
        assert vm_lab.vm.connect(ip, protocol, 7003, timeout=SURE).verdict == "allowed"  # control: the rule decided


# ------------------------------------------------------------------ peer → VM

@pytest.mark.parametrize("ip", [GUEST_V4, GUEST_V6])
@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_peer_reaches_a_server_in_the_vm_until_it_stops(vm_lab: VmLab, protocol: str, ip: str) -> None:
    with vm_lab.vm.serving(protocol, 8001):
        result = probe(vm_lab.peer, None, ip, protocol, 8001, reuse_server=True, timeout=SURE)
        assert result.verdict == "allowed", result
    after = probe(vm_lab.peer, None, ip, protocol, 8001, reuse_server=True, timeout=SURE)
    assert after.verdict == "rejected", after


@pytest.mark.parametrize("ip", [GUEST_V4, GUEST_V6])
def test_peer_pings_the_vm(vm_lab: VmLab, ip: str) -> None:
    result = probe(vm_lab.peer, None, ip, "icmp", None, timeout=SURE)
    assert result.verdict == "allowed", result


def test_a_second_server_on_the_same_port_is_an_error(vm_lab: VmLab) -> None:
    with vm_lab.vm.serving("tcp", 8002):
        with pytest.raises(LabError, match="already serving tcp/8002"):
            vm_lab.vm.serve("tcp", 8002)


# ------------------------------------------------------------------ spoofed sources

@pytest.fixture
def nft_in_peer(vm_lab: VmLab) -> Iterator[str]:
    """An inet table of this test's in the peer netns, with an input chain to count arrivals."""
    sh(vm_lab.peer, "nft", "add", "table", "inet", TABLE)
    sh(vm_lab.peer, "nft", "add", "chain", "inet", TABLE, "arrivals",
       "{ type filter hook input priority 0; policy accept; }")
    try:
        yield TABLE
    finally:
        sh(vm_lab.peer, "nft", "delete", "table", "inet", TABLE)


def _packets(netns: str, table: str, chain: str) -> int:
    listing = sh(netns, "nft", "list", "chain", "inet", table, chain)
    found = re.search(r"counter packets (\d+)", listing)
    assert found, listing
    return int(found.group(1))


@pytest.mark.parametrize(("spoof", "peer_ip"), [(SPOOF_V4, PEER_V4), (SPOOF_V6, PEER_V6)])
def test_vm_sends_from_a_spoofed_source_and_a_source_check_drops_it(vm_lab: VmLab, nft_in_hv: str,
                                                                     nft_in_peer: str, spoof: str,
                                                                     peer_ip: str) -> None:
    """The peer counts what arrives from the spoofed address (no reply can come back: nobody
    routes that address to the VM); a source check on the tap, as anti-spoofing does, stops it."""
    family, own = ("ip6", GUEST_V6) if ":" in spoof else ("ip", GUEST_V4)
    sh(vm_lab.peer, "nft", "add", "rule", "inet", nft_in_peer, "arrivals", family, "saddr", spoof,
       "udp", "dport", "7004", "counter")
    vm_lab.vm.connect(peer_ip, "udp", 7004, src_ip=spoof, timeout=0.3)
    wait_until(lambda: _packets(vm_lab.peer, nft_in_peer, "arrivals") == 1,
               f"the datagram from {spoof} to reach the peer")
    sh(vm_lab.hv, "nft", "add", "chain", "inet", nft_in_hv, "pre",
       "{ type filter hook prerouting priority -300; policy accept; }")
    sh(vm_lab.hv, "nft", "add", "rule", "inet", nft_in_hv, "pre", "iifname", vm_lab.vm.spec.tap,
       family, "saddr", "!=", own, "udp", "dport", "7004", "counter", "drop")  # not the guest's ND
    assert vm_lab.vm.connect(peer_ip, "udp", 7004, src_ip=spoof, timeout=0.3).verdict == "denied"
    wait_until(lambda: _packets(vm_lab.hv, nft_in_hv, "pre") == 1, "the source check to drop the datagram")
    assert _packets(vm_lab.peer, nft_in_peer, "arrivals") == 1
    with serve(vm_lab.peer, "udp", 7004):
        assert vm_lab.vm.connect(peer_ip, "udp", 7004, timeout=SURE).verdict == "allowed"  # its own source passes


def test_vm_pings_from_an_added_address(vm_lab: VmLab) -> None:
    sh(vm_lab.hv, "ip", "route", "add", f"{SPOOF_V4}/32", "dev", vm_lab.vm.spec.tap)
    vm_lab.vm.add_address(SPOOF_V4)
    try:
        assert f"{SPOOF_V4}/32" in vm_lab.vm.addresses()
        assert vm_lab.vm.connect(PEER_V4, "icmp", src_ip=SPOOF_V4, timeout=SURE).verdict == "allowed"
    finally:
        vm_lab.vm.remove_address(SPOOF_V4)
        sh(vm_lab.hv, "ip", "route", "del", f"{SPOOF_V4}/32", "dev", vm_lab.vm.spec.tap)
    assert f"{SPOOF_V4}/32" not in vm_lab.vm.addresses()


# ------------------------------------------------------------------ lifecycle

def test_another_process_probes_through_the_socket_once_the_starter_lets_go(vm_lab: VmLab) -> None:
    """QEMU serves one client: the starter releases the channel, a client (as `stockade probe`
    in its own process would) opens it, and the starter takes it back afterwards."""
    vm = vm_lab.vm
    vm.release_control()
    try:
        with GuestClient.open(vm.run_dir, vm.spec.name) as guest:
            assert guest.connect(PEER_V4, "icmp", timeout=SURE).verdict == "allowed"
        with GuestClient.open(vm.run_dir, vm.spec.name) as again:  # a second client after the first
            assert sorted(again.addresses()) == sorted([f"{GUEST_V4}/32", f"{GUEST_V6}/128"])
    finally:
        vm.retake_control()
    assert vm.connect(PEER_V6, "icmp", timeout=SURE).verdict == "allowed"


def test_stop_ends_qemu_and_removes_its_tap_socket_and_pid_file(vm_lab: VmLab) -> None:
    tap = f"vmhs{_suffix()}"
    run_dir = vm_lab.run_root / "second"
    vm = start_vm(VmSpec("vmh-second", vm_lab.hv, tap, "52:54:00:18:20:11", ("198.18.201.11",)),
                  vm_lab.image, run_dir)
    try:
        assert tap in sh(vm_lab.hv, "ip", "-o", "link", "show")
        assert vm.connect(GUEST_V4, "icmp", timeout=0.5).verdict == "denied"  # no host side configured: no route out
    finally:
        vm.stop()
    wait_until(lambda: process_gone(vm.pid), f"QEMU pid {vm.pid} to end")
    assert tap not in sh(vm_lab.hv, "ip", "-o", "link", "show")
    assert not (run_dir / "control.sock").exists() and not (run_dir / "qemu.pid").exists()
    vm.stop()  # a second stop is harmless
    with pytest.raises(LabError, match="control channel closed"):
        vm.connect(GUEST_V4, "icmp")


def test_a_vm_in_a_missing_netns_is_refused(vm_lab: VmLab) -> None:
    with pytest.raises(LabError, match="does not exist"):
        start_vm(VmSpec("vmh-nowhere", f"vmh-none-{_suffix()}", "vmhx0", "52:54:00:18:20:12", ()),
                 vm_lab.image, vm_lab.run_root / "nowhere")
