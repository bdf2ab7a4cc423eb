"""Two routed hosts with one workload each, built like the lab's (a veth per workload, host
routes, the gateway address on the host's loopback), in namespaces named `<prefix>-...`.

    <p>-w1 (eth0 198.18.0.10) ── veth ── <p>-h1 ── fab0 (198.18.254.1/24 ↔ .2/24) ── <p>-h2 ── veth ── <p>-w2 (198.18.0.11)

The workload-side of each veth is eth0; the host side carries the interface name
the compiler derives for the workload, so the compiled program dispatches on it.
IPv4 only: the packet benchmark sends IPv4. `build()` cleans up after itself on
failure; `remove_netns(prefix)` removes everything afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench import synthetic
from bench.common import in_netns, remove_netns, run
from stockade.model.naming import workload_interface
from stockade.model.state import DesiredState

GATEWAY = "198.18.255.1"
NODE = ("198.18.254.1", "198.18.254.2")


@dataclass(frozen=True)
class Pair:
    prefix: str

    @property
    def hosts(self) -> tuple[str, str]:
        return f"{self.prefix}-h1", f"{self.prefix}-h2"

    @property
    def workloads(self) -> tuple[str, str]:
        return f"{self.prefix}-w1", f"{self.prefix}-w2"


def build(prefix: str, state: DesiredState) -> Pair:
    pair = Pair(prefix)
    try:
        _build(pair, state)
    except BaseException:
        remove_netns(prefix)
        raise
    return pair


def _build(pair: Pair, state: DesiredState) -> None:
    h1, h2 = pair.hosts
    w1, w2 = pair.workloads
    for ns in (h1, h2, w1, w2):
        run(["ip", "netns", "add", ns])
        in_netns(ns, ["ip", "link", "set", "lo", "up"])
    # Fabric: one veth between the two hosts.
    run(["ip", "link", "add", f"{pair.prefix}f1", "netns", h1, "type", "veth",
         "peer", "name", f"{pair.prefix}f2", "netns", h2])
    for ns, dev, addr in ((h1, f"{pair.prefix}f1", NODE[0]), (h2, f"{pair.prefix}f2", NODE[1])):
        in_netns(ns, ["ip", "link", "set", dev, "name", "fab0"])
        in_netns(ns, ["ip", "addr", "add", f"{addr}/24", "dev", "fab0"])
        in_netns(ns, ["ip", "link", "set", "fab0", "up"])
        in_netns(ns, ["ip", "addr", "add", f"{GATEWAY}/32", "dev", "lo"])
        in_netns(ns, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        # Short conntrack timeouts for closed connections: the benchmark opens tens of
        # thousands per second, and 2 minutes of TIME_WAIT entries would fill the table.
        for key, value in (("nf_conntrack_tcp_timeout_time_wait", "1"), ("nf_conntrack_tcp_timeout_close_wait", "1"),
                           ("nf_conntrack_tcp_timeout_fin_wait", "1"), ("nf_conntrack_tcp_timeout_last_ack", "1")):
            in_netns(ns, ["sysctl", "-qw", f"net.netfilter.{key}={value}"], check=False)
    keys = (synthetic.BENCH_CLIENT, synthetic.BENCH_SERVER)
    for i, (host, wl_ns, key, ip) in enumerate(zip(pair.hosts, pair.workloads, keys, synthetic.BENCH_IPS)):
        iface = workload_interface(state.workloads[key])
        tmp = f"{pair.prefix}v{i}"
        run(["ip", "link", "add", iface, "netns", host, "type", "veth", "peer", "name", tmp, "netns", wl_ns])
        in_netns(host, ["ip", "link", "set", iface, "up"])
        in_netns(host, ["ip", "route", "add", f"{ip}/32", "dev", iface])
        in_netns(wl_ns, ["ip", "link", "set", tmp, "name", "eth0"])
        in_netns(wl_ns, ["ip", "addr", "add", f"{ip}/32", "dev", "eth0"])
        in_netns(wl_ns, ["ip", "link", "set", "eth0", "up"])
        in_netns(wl_ns, ["ip", "route", "add", GATEWAY, "dev", "eth0", "scope", "link"])
        in_netns(wl_ns, ["ip", "route", "add", "default", "via", GATEWAY])
        in_netns(wl_ns, ["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000"])
    # Each host routes the other's workload over the fabric.
    in_netns(h1, ["ip", "route", "add", f"{synthetic.BENCH_IPS[1]}/32", "via", NODE[1]])
    in_netns(h2, ["ip", "route", "add", f"{synthetic.BENCH_IPS[0]}/32", "via", NODE[0]])
