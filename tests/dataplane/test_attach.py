"""Workloads on interfaces a hypervisor or runtime made (issue 16, item 1), in the real kernel.

Scratch namespaces: H is the host (the agent's namespace), A and B two workloads whose veths
"someone else" made, the way a container runtime does. The workloads route everything through
a gateway on the link (IPv4 169.254.1.1, which only proxy ARP answers; IPv6 fe80::1), so packets
between them flow only once `AttachDriver` plumbed H. Link events are read from H as the agent
reads them. Every namespace is uniquely named and removed, also on failure.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import uuid
from typing import Iterator

import pytest

from stockade.dataplane.attach import ROUTE_PROTO, AttachDriver, Attachment
from stockade.dataplane.link_events import LinkEventReader
from stockade.dataplane.netlink_events import in_netns
from tests.waiting import wait_until

pytestmark = pytest.mark.kernel



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


def make_workload(host: str, netns: str, iface: str, v4: str, v6: str) -> None:
    """What a runtime does: a veth, its workload side with the addresses and a gateway on the link."""
    sh("ip", "-n", host, "link", "add", iface, "type", "veth", "peer", "name", "eth0", "netns", netns)
    sh("ip", "-n", netns, "link", "set", "eth0", "up")
    sh("ip", "-n", netns, "addr", "add", f"{v4}/32", "dev", "eth0")
    sh("ip", "-n", netns, "addr", "add", f"{v6}/128", "dev", "eth0", "nodad")
    sh("ip", "-n", netns, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
    sh("ip", "-n", netns, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
    sh("ip", "-n", netns, "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0")


def ping(netns: str, address: str) -> bool:
    return sh("ip", "netns", "exec", netns, "ping", "-c", "1", "-W", "1", address, check=False).returncode == 0


@pytest.fixture
def world() -> Iterator[dict[str, str]]:
    tag = uuid.uuid4().hex[:6]
    names = {"host": f"att-h-{tag}", "a": f"att-a-{tag}", "b": f"att-b-{tag}",
             "ifa": f"tapa{tag}", "ifb": f"vethb{tag}"}
    with namespaces(names["host"], names["a"], names["b"]):
        for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
            sh("ip", "netns", "exec", names["host"], "sysctl", "-qw", f"{key}=1")
        yield names


A4, A6, B4, B6 = "198.18.77.10", "2001:db8:77::10", "198.18.77.11", "2001:db8:77::11"


def test_interfaces_made_by_someone_else_are_plumbed_and_carry_packets(world: dict[str, str]) -> None:
    h = world["host"]
    a = Attachment("pods/a", world["ifa"], (A4, A6))
    b = Attachment("pods/b", world["ifb"], (B4, B6))
    driver = AttachDriver()
    # The objects exist before the interfaces: nothing to plumb yet, nothing reported.
    assert in_netns(h, lambda: driver.reconcile((a, b))) == {}
    make_workload(h, world["a"], world["ifa"], A4, A6)
    make_workload(h, world["b"], world["ifb"], B4, B6)
    assert not ping(world["a"], B4)  # no route, no one answers ARP for the gateway
    # Someone else's route on the host must survive every pass.
    sh("ip", "-n", h, "route", "add", "blackhole", "198.18.99.0/24", "proto", "static")

    assert in_netns(h, lambda: driver.reconcile((a, b))) == {"pods/a": {"interface": world["ifa"]},
                                                             "pods/b": {"interface": world["ifb"]}}
    for src, dst in ((world["a"], B4), (world["a"], B6), (world["b"], A4), (world["b"], A6)):
        # Within a few seconds: the failed ping above left a neighbour entry the kernel retries.
        wait_until(lambda: ping(src, dst), f"a ping {src} -> {dst}", timeout=5)
    ours = sh("ip", "-n", h, "route", "show", "proto", str(ROUTE_PROTO)).stdout
    assert f"{A4} dev {world['ifa']}" in ours and f"{B4} dev {world['ifb']}" in ours
    assert sh("ip", "netns", "exec", h, "cat", f"/proc/sys/net/ipv4/conf/{world['ifa']}/proxy_arp").stdout.strip() == "1"
    # Idempotent: a second pass changes nothing (same routes).
    in_netns(h, lambda: driver.reconcile((a, b)))
    assert sh("ip", "-n", h, "route", "show", "proto", str(ROUTE_PROTO)).stdout == ours

    # b's object is gone: its routes go, a's and the foreign route stay, b's link is not ours to delete.
    in_netns(h, lambda: driver.reconcile((a,)))
    left = sh("ip", "-n", h, "route", "show", "proto", str(ROUTE_PROTO)).stdout
    assert B4 not in left and A4 in left
    assert "198.18.99.0/24" in sh("ip", "-n", h, "route", "show").stdout
    assert sh("ip", "-n", h, "link", "show", world["ifb"], check=False).returncode == 0
    assert not ping(world["a"], B4)
    # The last one gone too: everything of ours is removed.
    in_netns(h, lambda: driver.reconcile(()))
    assert sh("ip", "-n", h, "route", "show", "proto", str(ROUTE_PROTO)).stdout.strip() == ""


def test_link_events_announce_an_interface_as_it_comes_and_goes(world: dict[str, str]) -> None:
    h = world["host"]
    seen: list[tuple[str, str]] = []
    halt = threading.Event()
    with LinkEventReader(h) as reader:
        thread = threading.Thread(target=reader.run, args=(halt, seen.append, 0.2))
        thread.start()
        try:
            make_workload(h, world["a"], world["ifa"], A4, A6)
            wait_until(lambda: ("new", world["ifa"]) in seen, "the new link's event", timeout=5)
            sh("ip", "-n", h, "link", "del", world["ifa"])
            wait_until(lambda: ("gone", world["ifa"]) in seen, "the removed link's event", timeout=5)
        finally:
            halt.set()
            thread.join(5)
    assert not thread.is_alive()


def test_a_bridge_port_is_left_as_it_is(world: dict[str, str]) -> None:
    """A routed workload whose tap is enslaved to a bridge gets no address, route or proxy ARP (they
    would take the VM's packets off the bridge), and is not reported attached. (Bridged workloads:
    tests/dataplane/test_bridged_attachment.py.)"""
    h = world["host"]
    make_workload(h, world["a"], world["ifa"], A4, A6)
    sh("ip", "-n", h, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", h, "link", "set", world["ifa"], "master", "br0")
    assert in_netns(h, lambda: AttachDriver().reconcile((Attachment("pods/a", world["ifa"], (A4, A6)),))) == {}
    assert sh("ip", "-n", h, "route", "show", "proto", str(ROUTE_PROTO)).stdout.strip() == ""
    assert "169.254.1.1" not in sh("ip", "-n", h, "addr", "show", "dev", world["ifa"]).stdout


def test_a_bridged_workload_off_a_bridge_is_not_attached(world: dict[str, str]) -> None:
    """`attachment: bridged` on an interface that is no bridge port: nothing is plumbed for it, not
    even as a routed workload (its object says something else than the host)."""
    h = world["host"]
    make_workload(h, world["a"], world["ifa"], A4, A6)
    plan = (Attachment("pods/a", world["ifa"], (A4, A6), bridged=True),)
    assert in_netns(h, lambda: AttachDriver().reconcile(plan)) == {}
    assert sh("ip", "-n", h, "route", "show", "proto", str(ROUTE_PROTO)).stdout.strip() == ""
    assert "169.254.1.1" not in sh("ip", "-n", h, "addr", "show", "dev", world["ifa"]).stdout
