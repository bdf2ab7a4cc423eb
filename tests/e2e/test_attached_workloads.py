"""Workloads on interfaces Stockade did not make (issue 16, item 1), in the real lab.

A "runtime" (this test, doing what a container runtime or hypervisor does) makes a veth in
hypervisor hv1 with its workload side in a namespace of its own, then registers the Workload
(`spec.interface`, addresses, the `stockade.io/attached-by` mark). Real packets show: before the
object exists the interface is dropped (fail closed, counted); once it exists the agent plumbs
the host side (woken by the link event) and the policy decides, both ways, IPv4 and IPv6, like
for any lab workload; after the object is deleted the host keeps nothing of it.

And a real QEMU virtual machine (issue 16, item 2) in the same lab: `stockade lab vm start`
(lab/vm: Debian's kernel, a busybox initramfs, TCG here where KVM does not run guests) registers
the Workload (marked `stockade.io/attached-by: lab-vm`, naming the tap and MAC, addresses from
IPAM) and boots QEMU on a tap in hypervisor hv1, as a hypervisor would; hv1's agent plumbs the
tap (link event) and enforces the same policy as on a namespace workload. `stockade probe`
reaches the guest through its control channel: real packets both ways, IPv4 and IPv6. A spoofed
source from inside the VM is dropped. `lab status` lists the VM (role vm).
"""

from __future__ import annotations

import json
import secrets
import subprocess
from typing import Any, Iterator

import pytest

from stockade.dataplane.attach import ROUTE_PROTO
from stockade.lab import vms
from stockade.lab.probe import probe, serve
from stockade.lab.state import LabSettings
from tests.e2e.conftest import Lab, ipv4, make_lab
from tests.waiting import wait_until

pytestmark = pytest.mark.kernel

WAIT = ("--wait", "--timeout", "60")
V4, V6 = "198.18.40.10", "2001:db8:40::10"
WORLD = """
apiVersion: stockade.io/v1
kind: Namespace
metadata: {name: att}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {name: client, namespace: att, labels: {role: client}}
spec: {host: hv2}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {name: stranger, namespace: att, labels: {role: stranger}}
spec: {host: hv2}
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: to-server, namespace: att}
spec:
  appliesTo: {selector: {matchLabels: {role: server}}}
  ingress: [{action: allow, from: [{selector: {matchLabels: {role: client}}}], ports: [{protocol: TCP, port: 8080}]}]
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: client-out, namespace: att}
spec:
  appliesTo: {selector: {matchLabels: {role: client}}}
  egress: [{action: allow, to: [{selector: {matchLabels: {role: server}}}], ports: [{protocol: TCP, port: 8080}]}]
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: server-out, namespace: att}
spec:
  appliesTo: {selector: {matchLabels: {role: server}}}
  egress: [{action: allow, to: [{selector: {matchLabels: {role: stranger}}}], ports: [{protocol: UDP, port: 5353}]}]
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: stranger-in, namespace: att}
spec:
  appliesTo: {selector: {matchLabels: {role: stranger}}}
  ingress: [{action: allow, from: [{selector: {matchLabels: {role: server}}}], ports: [{protocol: UDP, port: 5353}]}]
"""


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
    assert not check or res.returncode == 0, f"{' '.join(cmd)}: {res.stderr}"
    return res


def server_doc(interface: str) -> str:
    return f"""
apiVersion: stockade.io/v1
kind: Workload
metadata:
  name: server
  namespace: att
  labels: {{role: server}}
  annotations: {{stockade.io/attached-by: a-test-runtime}}
spec: {{host: hv1, interface: {interface}, ips: [{V4}, "{V6}"]}}
"""


def make_interface(hv: str, netns: str, iface: str) -> None:
    """What a runtime does: a veth in the hypervisor, its other end the workload's eth0 with the
    workload's addresses and default routes via the gateways the agent puts on the host side."""
    sh("ip", "netns", "add", netns)
    sh("ip", "-n", netns, "link", "set", "lo", "up")
    sh("ip", "-n", hv, "link", "add", iface, "type", "veth", "peer", "name", "eth0", "netns", netns)
    for cmd in (("link", "set", "eth0", "up"), ("addr", "add", f"{V4}/32", "dev", "eth0"),
                ("addr", "add", f"{V6}/128", "dev", "eth0", "nodad"),
                ("route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"),
                ("route", "add", "default", "via", "169.254.1.1", "dev", "eth0"),
                ("-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0")):
        sh("ip", "-n", netns, *cmd)
    sh("ip", "-n", hv, "link", "set", iface, "up")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    for made in make_lab(tmp_path_factory.mktemp("attach"), hosts=2):
        made.apply_text(WORLD, *WAIT)
        yield made


@pytest.fixture
def runtime(lab: Lab) -> Iterator[tuple[str, str]]:
    """A veth the runtime made in hv1, and the namespace of its workload side."""
    tag = secrets.token_hex(3)
    netns, iface = f"rt-{tag}", f"vethrt{tag}"
    hv = lab.hv_netns("hv1")
    try:
        make_interface(hv, netns, iface)
        yield netns, iface
    finally:
        lab.cli("delete", "workload", "server", "-n", "att", "--wait", check=False)
        sh("ip", "-n", hv, "link", "del", iface, check=False)
        sh("ip", "netns", "del", netns, check=False)


def _unknown_drops(lab: Lab) -> float:
    return lab.agent_metrics("hv1").get(("stockade_agent_unknown_interface_drops_total", ()), 0.0)


def test_an_attached_interface_is_dropped_until_its_object_then_enforced_like_any_workload(
        lab: Lab, runtime: tuple[str, str]) -> None:
    netns, iface = runtime
    client, stranger = lab.workload("att/client"), lab.workload("att/stranger")
    # Before its object: nothing of it passes, and the drops are counted. (The guest knows its
    # gateway's MAC already, as after a reboot of the VM on a warm host: no ARP answer is needed
    # for its packets to reach the host.)
    mac = json.loads(sh("ip", "-j", "-n", lab.hv_netns("hv1"), "link", "show", iface).stdout)[0]["address"]
    sh("ip", "-n", netns, "neigh", "replace", "169.254.1.1", "lladdr", mac, "dev", "eth0", "nud", "permanent")
    before = _unknown_drops(lab)
    assert probe(netns, client["status"]["netns"], ipv4(client), "tcp", 8080).verdict != "allowed"
    wait_until(lambda: _unknown_drops(lab) > before, "the unknown interface's drops to be counted", timeout=10)

    lab.apply_text(server_doc(iface), *WAIT)
    assert lab.workload("att/server")["status"]["interface"] == iface  # as hv1's agent reported it
    routes = sh("ip", "-n", lab.hv_netns("hv1"), "route", "show", "proto", str(ROUTE_PROTO)).stdout
    assert f"{V4} dev {iface}" in routes
    for dst in (V4, V6):
        assert probe(client["status"]["netns"], netns, dst, "tcp", 8080).verdict == "allowed", dst
        assert probe(stranger["status"]["netns"], netns, dst, "tcp", 8080).verdict == "denied", dst
        assert probe(client["status"]["netns"], netns, dst, "tcp", 9090).verdict == "denied", dst
    # Its own egress: nothing allows it (the namespace denies by default).
    assert probe(netns, client["status"]["netns"], ipv4(client), "tcp", 8080).verdict == "denied"

    # Deleted: dropped again, and the host keeps no route of it.
    lab.cli("delete", "workload", "server", "-n", "att", *WAIT)
    assert probe(client["status"]["netns"], netns, V4, "tcp", 8080).verdict != "allowed"
    assert V4 not in sh("ip", "-n", lab.hv_netns("hv1"), "route", "show", "proto", str(ROUTE_PROTO)).stdout


def test_an_object_before_its_interface_is_plumbed_when_the_interface_appears(lab: Lab) -> None:
    """The hypervisor makes the tap after the object (the usual order): the link event wakes the
    agent, which plumbs and reports it at once, not at its next resync (30 s)."""
    tag = secrets.token_hex(3)
    netns, iface = f"rt-{tag}", f"tapat{tag}"
    hv = lab.hv_netns("hv1")
    client = lab.workload("att/client")
    try:
        lab.apply_text(server_doc(iface), *WAIT)
        assert "interface" not in lab.workload("att/server")["status"]  # no interface yet
        make_interface(hv, netns, iface)
        wait_until(lambda: lab.workload("att/server")["status"].get("interface") == iface,
                   "hv1 to report the attached interface", timeout=5)
        wait_until(lambda: probe(client["status"]["netns"], netns, V4, "tcp", 8080).verdict == "allowed",
                   "the client to reach the server through the new interface", timeout=5)
    finally:
        lab.cli("delete", "workload", "server", "-n", "att", "--wait", check=False)
        sh("ip", "-n", hv, "link", "del", iface, check=False)
        sh("ip", "netns", "del", netns, check=False)


# ------------------------------------------------------------------ a real VM

@pytest.fixture(scope="module")
def vm(lab: Lab) -> Iterator[dict[str, Any]]:
    """`stockade lab vm start`: the Workload (IPAM's addresses), then QEMU on a tap of hv1."""
    try:
        started = lab.json("lab", "vm", "start", "vm", "-n", "att", "--host", "hv1", "-l", "role=server",
                           "-o", "json")
        yield started
    finally:
        lab.cli("lab", "vm", "stop", "vm", "-n", "att", check=False)


def verdict(lab: Lab, src: str, dst: str, port: int, family: int = 4, protocol: str = "tcp") -> str:
    return lab.json("probe", "--from", src, "--to", dst, "--port", str(port), "--protocol", protocol,
                    "--family", str(family), "-o", "json")["verdict"]


def test_the_vm_is_allowed_and_denied_exactly_as_a_namespace_workload(lab: Lab, vm: dict[str, Any]) -> None:
    assert vm["accel"] in ("kvm", "tcg") and len(vm["ips"]) == 2
    processes = {p["name"]: p for p in lab.json("lab", "status", "-o", "json")["processes"]}
    assert processes[vm["process"]]["role"] == "vm" and processes[vm["process"]]["alive"]
    # hv1's agent plumbs the tap once QEMU made it (link event): moments on a busy machine.
    wait_until(lambda: verdict(lab, "att/client", "att/vm", 8080) == "allowed",
               "the client to reach the VM", timeout=20)
    for family in (4, 6):
        assert verdict(lab, "att/client", "att/vm", 8080, family) == "allowed", family
        assert verdict(lab, "att/stranger", "att/vm", 8080, family) == "denied", family
        assert verdict(lab, "att/client", "att/vm", 9090, family) == "denied", family
        # From the VM: its egress allows the stranger's UDP 5353, nothing else.
        assert verdict(lab, "att/vm", "att/stranger", 5353, family, "udp") == "allowed", family
        assert verdict(lab, "att/vm", "att/client", 8080, family) == "denied", family
    assert lab.workload("att/vm")["status"]["interface"] == vm["interface"]  # as hv1's agent reported it


def test_a_spoofed_source_from_inside_the_vm_is_dropped(lab: Lab, vm: dict[str, Any]) -> None:
    client, stranger = lab.workload("att/client"), lab.workload("att/stranger")
    wait_until(lambda: verdict(lab, "att/vm", "att/stranger", 5353, 4, "udp") == "allowed",
               "the VM to reach the stranger", timeout=20)
    with serve(stranger["status"]["netns"], "udp", 5353), \
            vms.guest(LabSettings(lab.prefix, lab.state_dir, lab.state_dir / "unused-config.json"),
                      lab.workload("att/vm")) as running:
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
