"""A real QEMU virtual machine as a workload (issue 16, items 1 and 2), in the real lab.

The VM (lab/vm: Debian's kernel, a busybox initramfs, TCG here where KVM does not run guests)
boots on a tap in hypervisor hv1, as a hypervisor would make it; its Workload names the tap and
MAC, takes its addresses from IPAM and is marked `stockade.io/attached-by: lab-vm`. hv1's agent
plumbs the tap (link event) and enforces the same policy as on a namespace workload: real packets
both ways, IPv4 and IPv6, through the VM's control channel; a spoofed source from inside the VM
is dropped.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from stockade.lab.probe import probe, serve
from stockade.lab.vm import RunningVm, VmSpec, build_image, start_vm
from tests.e2e.conftest import Lab, ipv4, make_lab

pytestmark = pytest.mark.kernel

WAIT = ("--wait", "--timeout", "60")
WORLD = """
apiVersion: stockade.io/v1
kind: Namespace
metadata: {name: vms}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {name: client, namespace: vms, labels: {role: client}}
spec: {host: hv2}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {name: stranger, namespace: vms, labels: {role: stranger}}
spec: {host: hv2}
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: to-server, namespace: vms}
spec:
  appliesTo: {selector: {matchLabels: {role: server}}}
  ingress: [{action: allow, from: [{selector: {matchLabels: {role: client}}}], ports: [{protocol: TCP, port: 8080}]}]
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: client-out, namespace: vms}
spec:
  appliesTo: {selector: {matchLabels: {role: client}}}
  egress: [{action: allow, to: [{selector: {matchLabels: {role: server}}}], ports: [{protocol: TCP, port: 8080}]}]
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: server-out, namespace: vms}
spec:
  appliesTo: {selector: {matchLabels: {role: server}}}
  egress: [{action: allow, to: [{selector: {matchLabels: {role: stranger}}}], ports: [{protocol: UDP, port: 5353}]}]
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: stranger-in, namespace: vms}
spec:
  appliesTo: {selector: {matchLabels: {role: stranger}}}
  ingress: [{action: allow, from: [{selector: {matchLabels: {role: server}}}], ports: [{protocol: UDP, port: 5353}]}]
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    for made in make_lab(tmp_path_factory.mktemp("vmlab"), hosts=2):
        made.apply_text(WORLD, *WAIT)
        yield made


@pytest.fixture(scope="module")
def vm(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningVm, list[str]]]:
    tag = secrets.token_hex(3)
    tap, mac = f"tapvm{tag}", "52:54:00:" + ":".join(secrets.token_hex(1) for _ in range(3))
    lab.apply_text(f"""
apiVersion: stockade.io/v1
kind: Workload
metadata:
  name: server
  namespace: vms
  labels: {{role: server}}
  annotations: {{stockade.io/attached-by: lab-vm}}
spec: {{host: hv1, interface: {tap}, mac: "{mac}"}}
""", *WAIT)
    ips = lab.workload("vms/server")["status"]["ips"]  # from IPAM
    run_dir = Path(tempfile.mkdtemp(prefix="stkvm-"))  # short: QEMU's control socket lives here
    running: RunningVm | None = None
    try:
        image = build_image(tmp_path_factory.mktemp("vm-image"))
        running = start_vm(VmSpec("server", lab.hv_netns("hv1"), tap, mac, tuple(ips), gateway_v4="169.254.1.1"),
                           image, run_dir)
        yield running, ips
    finally:
        if running is not None:
            running.stop()
        lab.cli("delete", "workload", "server", "-n", "vms", *WAIT, check=False)
        shutil.rmtree(run_dir, ignore_errors=True)


def _until_reachable(lab: Lab, vm: RunningVm, ip: str) -> None:
    """The agent plumbs the tap once QEMU made it (link event): a few seconds on a busy machine."""
    client = lab.workload("vms/client")
    with vm.serving("tcp", 8080):
        for _ in range(20):
            if probe(client["status"]["netns"], None, ip, "tcp", 8080, reuse_server=True).verdict == "allowed":
                return
    raise AssertionError(f"the VM at {ip} never became reachable from its client")


def test_the_vm_is_allowed_and_denied_exactly_as_a_namespace_workload(lab: Lab,
                                                                     vm: tuple[RunningVm, list[str]]) -> None:
    running, ips = vm
    client, stranger = lab.workload("vms/client"), lab.workload("vms/stranger")
    _until_reachable(lab, running, ips[0])
    with running.serving("tcp", 8080), running.serving("tcp", 9090):
        for ip in ips:  # IPv4 and IPv6
            assert probe(client["status"]["netns"], None, ip, "tcp", 8080, reuse_server=True).verdict == "allowed", ip
            assert probe(stranger["status"]["netns"], None, ip, "tcp", 8080, reuse_server=True).verdict == "denied", ip
            assert probe(client["status"]["netns"], None, ip, "tcp", 9090, reuse_server=True).verdict == "denied", ip
    # From the VM: nothing allows its egress (the namespace denies by default).
    with serve(client["status"]["netns"], "tcp", 8080):
        assert running.connect(ipv4(client), "tcp", 8080, timeout=2.0).verdict == "denied"
    assert lab.workload("vms/server")["status"]["interface"] == running_tap(running)


def test_a_spoofed_source_from_inside_the_vm_is_dropped(lab: Lab, vm: tuple[RunningVm, list[str]]) -> None:
    running, ips = vm
    client = lab.workload("vms/client")
    _until_reachable(lab, running, ips[0])
    stranger = lab.workload("vms/stranger")
    with serve(stranger["status"]["netns"], "udp", 5353):
        # As itself, the VM may send to the stranger's port 5353 (server-out, stranger-in) ...
        assert running.connect(ipv4(stranger), "udp", 5353, timeout=2.0).verdict == "allowed"
        # ... but not as the client, whose address it forges: hv1's spoof check drops it (its
        # counter says so: without the check the datagram would reach the stranger, and only the
        # answer would go astray, to the client).
        before = _antispoof_drops(lab)
        spoofed = running.connect(ipv4(stranger), "udp", 5353, timeout=2.0, src_ip=ipv4(client))
    assert spoofed.verdict == "denied"
    assert _antispoof_drops(lab) > before


def _antispoof_drops(lab: Lab) -> int:
    """IPv4 packets hv1's spoof checks dropped (rules commented `antispoof` on `ip saddr`; the
    guest's own IPv6 multicast listener reports, from its link-local address, are not counted)."""
    listed = json.loads(lab.nft("hv1", "-j", "list", "table", "inet", "stockade").stdout)
    total = 0
    for item in listed["nftables"]:
        rule = item.get("rule")
        if not rule or rule.get("comment") != "antispoof":
            continue
        on_ipv4_source = any(e.get("match", {}).get("left", {}).get("payload", {}) == {"protocol": "ip", "field": "saddr"}
                             for e in rule["expr"])
        if on_ipv4_source:
            total += sum(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
    return total


def running_tap(running: RunningVm) -> str:
    return running.spec.tap
