"""A real QEMU virtual machine as a workload (issue 16, items 1 and 2), in the real lab.

`stockade lab vm start` (lab/vm: Debian's kernel, a busybox initramfs, TCG here where KVM does
not run guests) registers the Workload (marked `stockade.io/attached-by: lab-vm`, naming the tap
and MAC, addresses from IPAM) and boots QEMU on a tap in hypervisor hv1, as a hypervisor would;
hv1's agent plumbs the tap (link event) and enforces the same policy as on a namespace workload.
`stockade probe` reaches the guest through its control channel: real packets both ways, IPv4 and
IPv6. A spoofed source from inside the VM is dropped. `lab status` lists the VM (role vm).
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest

from stockade.lab import vms
from stockade.lab.probe import serve
from stockade.lab.state import LabSettings
from tests.e2e.conftest import Lab, ipv4, make_lab
from tests.waiting import wait_until

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
def vm(lab: Lab) -> Iterator[dict[str, Any]]:
    """`stockade lab vm start`: the Workload (IPAM's addresses), then QEMU on a tap of hv1."""
    try:
        started = lab.json("lab", "vm", "start", "server", "-n", "vms", "--host", "hv1", "-l", "role=server",
                           "-o", "json")
        yield started
    finally:
        lab.cli("lab", "vm", "stop", "server", "-n", "vms", check=False)


def verdict(lab: Lab, src: str, dst: str, port: int, family: int = 4, protocol: str = "tcp") -> str:
    return lab.json("probe", "--from", src, "--to", dst, "--port", str(port), "--protocol", protocol,
                    "--family", str(family), "-o", "json")["verdict"]


def test_the_vm_is_allowed_and_denied_exactly_as_a_namespace_workload(lab: Lab, vm: dict[str, Any]) -> None:
    assert vm["accel"] in ("kvm", "tcg") and len(vm["ips"]) == 2
    processes = {p["name"]: p for p in lab.json("lab", "status", "-o", "json")["processes"]}
    assert processes[vm["process"]]["role"] == "vm" and processes[vm["process"]]["alive"]
    # hv1's agent plumbs the tap once QEMU made it (link event): moments on a busy machine.
    wait_until(lambda: verdict(lab, "vms/client", "vms/server", 8080) == "allowed",
               "the client to reach the VM", timeout=20)
    for family in (4, 6):
        assert verdict(lab, "vms/client", "vms/server", 8080, family) == "allowed", family
        assert verdict(lab, "vms/stranger", "vms/server", 8080, family) == "denied", family
        assert verdict(lab, "vms/client", "vms/server", 9090, family) == "denied", family
        # From the VM: its egress allows the stranger's UDP 5353, nothing else.
        assert verdict(lab, "vms/server", "vms/stranger", 5353, family, "udp") == "allowed", family
        assert verdict(lab, "vms/server", "vms/client", 8080, family) == "denied", family
    assert lab.workload("vms/server")["status"]["interface"] == vm["interface"]  # as hv1's agent reported it


def test_a_spoofed_source_from_inside_the_vm_is_dropped(lab: Lab, vm: dict[str, Any]) -> None:
    client, stranger = lab.workload("vms/client"), lab.workload("vms/stranger")
    wait_until(lambda: verdict(lab, "vms/server", "vms/stranger", 5353, 4, "udp") == "allowed",
               "the VM to reach the stranger", timeout=20)
    with serve(stranger["status"]["netns"], "udp", 5353), \
            vms.guest(LabSettings(lab.prefix, lab.state_dir, lab.state_dir / "unused-config.json"),
                      lab.workload("vms/server")) as running:
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
