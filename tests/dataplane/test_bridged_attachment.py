"""Bridged attachment (issue 16, item 1): workloads whose interfaces are ports of one Linux bridge,
filtered statefully through br_netfilter, in the real kernel.

Scratch namespaces: H is the host (a bridge `brgbr…` and the agent's table), A, B and C three
"VMs" on veth ports of that bridge, all in one subnet (198.18.66.0/24, 2001:db8:66::/64): their
traffic is switched, never routed, so a routed design would not see it at all. A and B are
workloads (A the client, B the server); C's port has a workload name but no object (fail closed).
O is outside, in 198.18.68.0/24: H routes between it and the bridge (H's gateway address on it).
The program is compiled from a real DesiredState and loaded by the real driver and reconciler;
every verdict comes from real packets. Every namespace is uniquely named (tag `brg`, random
suffix) and removed, also on failure.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from typing import Any, Iterator

import pytest

from stockade.agent.metrics import AgentMetrics
from stockade.agent.reconciler import Reconciler
from stockade.compile.program import CompileOptions
from stockade.dataplane.attach import BRIDGE_NF_SYSCTLS, AttachDriver, plan_attachments
from stockade.dataplane.netlink_events import in_netns
from stockade.dataplane.nft_driver import NftDriver, counters_by_comment, run_command
from stockade.lab.probe import probe, serve
from stockade.model.kinds import ObjectKey, parse_object
from stockade.model.state import DesiredState
from tests.waiting import wait_until

pytestmark = pytest.mark.kernel

HOST = "hv-brg"
A4, A6, B4, B6, C4, C6 = ("198.18.66.10", "2001:db8:66::10", "198.18.66.11", "2001:db8:66::11",
                          "198.18.66.12", "2001:db8:66::12")
GW4, GW6 = "198.18.66.1", "2001:db8:66::1"          # the host, on the bridge
OUT_GW4, OUT_GW6, OUT4, OUT6 = "198.18.68.1", "2001:db8:68::1", "198.18.68.2", "2001:db8:68::2"  # outside
MAC_A, MAC_B, MAC_C = "02:b6:00:00:00:0a", "02:b6:00:00:00:0b", "02:b6:00:00:00:0c"
PORT = 8080
OTHER_PORT = 9090


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=20)
    if check:
        assert res.returncode == 0, f"{' '.join(cmd)}: {res.stderr}"
    return res


@contextlib.contextmanager
def namespaces(*names: str) -> Iterator[None]:
    try:
        for name in names:
            sh("ip", "netns", "add", name)
            sh("ip", "-n", name, "link", "set", "lo", "up")
        yield
    finally:
        for name in names:
            sh("ip", "netns", "del", name, check=False)


def vm_on_bridge(host: str, bridge: str, netns: str, port: str, mac: str, v4: str, v6: str) -> None:
    """What a hypervisor does on a bridged network: the vNIC's host side a port of the bridge,
    the guest's address in the bridge's subnet (no gateway, no routes on the host)."""
    sh("ip", "-n", host, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", netns)
    sh("ip", "-n", host, "link", "set", port, "master", bridge, "up")
    sh("ip", "-n", netns, "link", "set", "eth0", "address", mac, "up")
    sh("ip", "-n", netns, "addr", "add", f"{v4}/24", "dev", "eth0")
    sh("ip", "-n", netns, "addr", "add", f"{v6}/64", "dev", "eth0", "nodad")


@pytest.fixture
def world() -> Iterator[dict[str, str]]:
    tag = "brg" + uuid.uuid4().hex[:5]
    names = {"host": f"{tag}-h", "a": f"{tag}-a", "b": f"{tag}-b", "c": f"{tag}-c", "out": f"{tag}-o",
             "bridge": f"{tag}br",
             "pa": f"tap{tag}a", "pb": f"tap{tag}b", "pc": f"tap{tag}c"}
    with namespaces(names["host"], names["a"], names["b"], names["c"], names["out"]):
        h = names["host"]
        sh("ip", "-n", h, "link", "add", names["bridge"], "type", "bridge")
        sh("ip", "-n", h, "link", "set", names["bridge"], "up")
        # Off to begin with: the attach driver must turn it on (and no program: no filtering).
        for key in BRIDGE_NF_SYSCTLS:
            sh("ip", "netns", "exec", h, "sysctl", "-qw", f"net.bridge.{key}=0")
        vm_on_bridge(h, names["bridge"], names["a"], names["pa"], MAC_A, A4, A6)
        vm_on_bridge(h, names["bridge"], names["b"], names["pb"], MAC_B, B4, B6)
        vm_on_bridge(h, names["bridge"], names["c"], names["pc"], MAC_C, C4, C6)
        # The host routes between the bridge's subnet (its gateway on the bridge) and an outside one.
        sh("ip", "-n", h, "addr", "add", f"{GW4}/24", "dev", names["bridge"])
        sh("ip", "-n", h, "addr", "add", f"{GW6}/64", "dev", names["bridge"], "nodad")
        sh("ip", "-n", h, "link", "add", f"{tag}up", "type", "veth", "peer", "name", "eth0", "netns", names["out"])
        sh("ip", "-n", h, "link", "set", f"{tag}up", "up")
        sh("ip", "-n", h, "addr", "add", f"{OUT_GW4}/24", "dev", f"{tag}up")
        sh("ip", "-n", h, "addr", "add", f"{OUT_GW6}/64", "dev", f"{tag}up", "nodad")
        sh("ip", "-n", names["out"], "link", "set", "eth0", "up")
        sh("ip", "-n", names["out"], "addr", "add", f"{OUT4}/24", "dev", "eth0")
        sh("ip", "-n", names["out"], "addr", "add", f"{OUT6}/64", "dev", "eth0", "nodad")
        for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
            sh("ip", "netns", "exec", h, "sysctl", "-qw", f"{key}=1")
        for ns, v4, v6 in ((names["out"], OUT_GW4, OUT_GW6), (names["a"], GW4, GW6), (names["b"], GW4, GW6)):
            sh("ip", "-n", ns, "route", "add", "default", "via", v4)
            sh("ip", "-n", ns, "-6", "route", "add", "default", "via", v6)
        yield names


def desired_state(world: dict[str, str], revision: int = 1) -> DesiredState:
    """A client A allowed to B's TCP 8080 (and ping, for ND checks), nothing else, in a
    default-deny namespace; B's egress is denied, so B's replies pass on conntrack alone."""
    def workload(name: str, role: str, port: str, mac: str, v4: str, v6: str) -> dict[str, Any]:
        return {"apiVersion": "stockade.io/v1", "kind": "Workload",
                "metadata": {"name": name, "namespace": "vms", "labels": {"role": role}},
                "spec": {"host": HOST, "ips": [v4, v6], "mac": mac, "interface": port, "attachment": "bridged"}}

    def group(name: str, role: str) -> dict[str, Any]:
        return {"apiVersion": "stockade.io/v1", "kind": "Group", "metadata": {"name": name, "namespace": "vms"},
                "spec": {"selector": {"matchLabels": {"role": role}}}}

    docs: list[dict[str, Any]] = [
        {"apiVersion": "stockade.io/v1", "kind": "Namespace", "metadata": {"name": "vms"},
         "spec": {"defaultAction": "deny"}},
        workload("a", "client", world["pa"], MAC_A, A4, A6),
        workload("b", "server", world["pb"], MAC_B, B4, B6),
        group("clients", "client"), group("servers", "server"),
        {"apiVersion": "stockade.io/v1", "kind": "Policy", "metadata": {"name": "client", "namespace": "vms"},
         "spec": {"appliesTo": {"group": "clients"},
                  "egress": [{"id": "to-servers", "action": "allow", "to": [{"group": "servers"}],
                              "ports": [{"protocol": "TCP", "port": PORT}]}]}},
        {"apiVersion": "stockade.io/v1", "kind": "Policy", "metadata": {"name": "server", "namespace": "vms"},
         "spec": {"appliesTo": {"group": "servers"},
                  "ingress": [{"id": "from-clients", "action": "allow", "from": [{"group": "clients"}],
                               "ports": [{"protocol": "TCP", "port": PORT}]},
                              {"id": "from-outside", "action": "allow",
                               "from": [{"cidr": "198.18.68.0/24"}, {"cidr": "2001:db8:68::/64"}],
                               "ports": [{"protocol": "TCP", "port": OTHER_PORT}]}]}},
    ]
    return DesiredState.from_objects(revision, [parse_object(d) for d in docs])


class HostTables:
    """The real driver and reconciler, run in the host namespace."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.driver = NftDriver(runner=self.runner)
        self.reconciler = Reconciler(self.driver, HOST, CompileOptions())

    def runner(self, cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_command(["ip", "netns", "exec", self.host, *cmd], stdin)

    def port_counter(self, comment: str) -> int:
        listing = self.driver.list_ports_table()
        assert listing is not None, "the bridge table is not in the kernel"
        return counters_by_comment(listing).get(comment, (0, 0))[0]


def tcp(src: str, dst_netns: str, ip: str, port: int = PORT, src_ip: str | None = None) -> str:
    return probe(src, dst_netns, ip, "tcp", port, timeout=1.0, src_ip=src_ip).verdict


def neighbour_mac(netns: str, ip: str) -> str:
    return sh("ip", "-n", netns, "neigh", "show", ip).stdout


# Sends one ARP request on eth0 from a raw socket, "who has TARGET? tell SENDER_IP at SENDER_MAC":
# the owner of TARGET learns the sender's claim from it (and answers it).
_ARP_REQUEST = """
import socket, sys
sender_ip, sender_mac, target = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", "")), sys.argv[3]
frame = (b"\\xff" * 6 + sender_mac + b"\\x08\\x06"
         + bytes.fromhex("0001080006040001") + sender_mac + socket.inet_aton(sender_ip)
         + b"\\x00" * 6 + socket.inet_aton(target))
with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
    s.bind(("eth0", 0))
    s.send(frame)
"""


def arp_request(netns: str, sender_ip: str, sender_mac: str, target: str) -> None:
    sh("ip", "netns", "exec", netns, sys.executable, "-c", _ARP_REQUEST, sender_ip, sender_mac, target)


def test_bridged_workloads_are_filtered_statefully_with_antispoofing_and_neighbours_working(
        world: dict[str, str]) -> None:
    h, a, b, c = world["host"], world["a"], world["b"], world["c"]
    # Without a program the bridge switches everything: B may open A, and C (no object) talks.
    assert tcp(b, a, A4) == "allowed"
    assert tcp(c, b, B6) == "allowed"
    assert tcp(world["out"], a, A4, OTHER_PORT) == "allowed"

    state = desired_state(world)
    endpoints = in_netns(h, lambda: AttachDriver().reconcile(plan_attachments(state, HOST)))
    assert endpoints == {"vms/a": {"interface": world["pa"], "mac": MAC_A},
                         "vms/b": {"interface": world["pb"], "mac": MAC_B}}
    for key in BRIDGE_NF_SYSCTLS:  # turned on by the attach driver, in the host's netns only
        assert sh("ip", "netns", "exec", h, "sysctl", "-n", f"net.bridge.{key}").stdout.strip() == "1"
    assert sh("ip", "-n", h, "route", "show", "proto", "77").stdout.strip() == ""  # no routes: the bridge's network
    tables = HostTables(h)
    outcome = tables.reconciler.reconcile(state)
    assert outcome.kind == "full" and outcome.not_programmed == ()

    # Allowed flows pass, both families; the replies of B (whose egress is denied) ride conntrack.
    for ip in (B4, B6):
        assert tcp(a, b, ip) == "allowed", ip
    # Denied: the other direction (B's egress, A's ingress), another port, and the port-less VM.
    for ip in (A4, A6):
        assert tcp(b, a, ip) == "denied", ip
    assert tcp(a, b, B4, OTHER_PORT) == "denied"
    assert tcp(c, b, B6) == "denied" and tcp(a, c, C4) == "denied"
    # C's port (a workload name, no object) is dropped on the bridge, counted in the agent's total.
    # (The counter first: C may still be retrying, and the total only grows.)
    dropped = tables.port_counter("unknown-interface")
    metrics = AgentMetrics(tables.reconciler).registry
    assert dropped > 0 and (metrics.get_sample_value("stockade_agent_unknown_interface_drops_total") or 0) >= dropped

    # Routed into the bridge by the host (from outside): B's ingress policy decides by address,
    # the reply rides conntrack; A's ingress denies. From A out of the bridge: A's egress denies.
    out = world["out"]
    assert tcp(out, b, B4, OTHER_PORT) == "allowed" and tcp(out, b, B6, OTHER_PORT) == "allowed"
    assert tcp(out, b, B4) == "denied" and tcp(out, a, A6, OTHER_PORT) == "denied"
    assert tcp(a, out, OUT4, OTHER_PORT) == "denied"

    # ARP and ND still resolve (flushed caches, then a new allowed connection each).
    for ns in (a, b):
        sh("ip", "-n", ns, "neigh", "flush", "all")
    assert tcp(a, b, B4) == "allowed" and MAC_B in neighbour_mac(a, B4)
    assert tcp(a, b, B6) == "allowed" and MAC_B in neighbour_mac(a, B6)

    # A spoofed source address from A's port is dropped and counted (its own address passes).
    before = tables.port_counter("antispoof")
    with serve(b, "tcp", PORT):
        assert probe(a, None, B4, "tcp", PORT, src_ip=C4, reuse_server=True).verdict == "denied"
        assert probe(a, None, B6, "tcp", PORT, src_ip=C6, reuse_server=True).verdict == "denied"
        assert probe(a, None, B4, "tcp", PORT, reuse_server=True).verdict == "allowed"
    spoofed_ip = tables.port_counter("antispoof")
    assert spoofed_ip > before

    # An ARP claim of another VM's address from A's port is dropped and counted; the same
    # request with A's own address reaches B (which learns it), so the frame is not lost otherwise.
    sh("ip", "-n", b, "neigh", "flush", "all")
    before = tables.port_counter("antispoof")
    arp_request(a, C4, MAC_A, B4)
    arp_request(a, A4, MAC_A, B4)
    wait_until(lambda: MAC_A in neighbour_mac(b, A4), "B to learn A's own claim", timeout=3,
               describe=lambda: neighbour_mac(b, A4))
    assert MAC_A not in neighbour_mac(b, C4) and tables.port_counter("antispoof") > before
    spoofed_ip = tables.port_counter("antispoof")

    # A spoofed source MAC (A takes C's) is dropped at layer 2, ARP included, and counted.
    sh("ip", "-n", a, "neigh", "flush", "all")
    sh("ip", "-n", a, "link", "set", "eth0", "address", MAC_C)
    try:
        assert tcp(a, b, B4) == "denied"
        assert tables.port_counter("antispoof") > spoofed_ip
    finally:
        sh("ip", "-n", a, "link", "set", "eth0", "address", MAC_A)
    assert tcp(a, b, B4) == "allowed"

    # A new revision with the same program sends nothing (the bridge table included).
    assert tables.reconciler.reconcile(state.with_changes(2)).kind == "none"
    # Both tables are the program: a hand edit of the bridge table is drift, repaired whole.
    assert tables.reconciler.in_sync()
    sh("ip", "netns", "exec", h, "nft", "delete", "table", "bridge", "stockade_ports")
    assert not tables.reconciler.in_sync()
    # Without its bridge table the inet table cannot tell the ports apart: ingress still holds (by
    # address), but egress policy and anti-spoofing are open until the drift check repairs it
    # (which is why the fingerprint covers both tables).
    assert tcp(b, a, A4) == "denied"
    assert tcp(a, world["out"], OUT4, OTHER_PORT) == "allowed"
    repaired = tables.reconciler.reconcile(state.with_changes(3))
    assert repaired.kind == "full" and repaired.drift_repaired
    assert tables.driver.list_ports_table() is not None and tables.reconciler.in_sync()
    assert tcp(a, b, B6) == "allowed" and tcp(b, a, A6) == "denied"
    assert tcp(a, world["out"], OUT4, OTHER_PORT) == "denied"

    # With no bridged workload left the bridge table goes, in the same transaction as the rest.
    gone = state.with_changes(4, delete=[ObjectKey("Workload", "vms", "a"), ObjectKey("Workload", "vms", "b")])
    assert tables.reconciler.reconcile(gone).kind == "full"
    assert tables.driver.list_ports_table() is None and tables.reconciler.in_sync()
