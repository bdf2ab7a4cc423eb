"""Figure — fqdn: what egress by domain name costs a lookup, and whether learned names cost packets.

A lab of 2 hypervisors with its outside world (lab/outside.py). In namespace `dns`, `client` on
hv1 may ask the lab's resolver (IPv4 and IPv6) and reach `*.bench.example` (an fqdn rule); one
external endpoint `target` is published under `names` names of that pattern.

- **Lookup latency**: `queries` A queries for distinct names from the client, each asked twice
  in alternation: to 198.19.0.53 — taken by the nat rule to hv1's DNS proxy, which asks the
  resolver, learns the answer into the kernel and answers — and to 2001:db8:e::53, the same
  dnsmasq over IPv6, which the lab does not intercept (direct resolution, the same hops and
  policy otherwise). Ratio = intercepted p50 / direct p50.
- **Per-packet cost of what was learned**: UDP round trips from the client to an echo server in
  `target`, admitted by the fqdn rule, with 1 name learned, then with every name learned (each
  other name has its own address, published without an endpoint: the sets then hold one element
  per name). Target: the round-trip p50 with all names learned within 1.25x of the
  one with one, and the lookup p99 through the proxy < 20 ms.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from bench.common import Figure, percentile
from bench.rollout import API, measure, timed_apply

ECHO_PORT = 7002
PATTERN = "*.bench.example"


def _world() -> list[dict[str, Any]]:
    return [
        {"apiVersion": API, "kind": "Namespace", "metadata": {"name": "dns"}, "spec": {"defaultAction": "deny"}},
        {"apiVersion": API, "kind": "Workload", "metadata": {"name": "client", "namespace": "dns",
                                                             "labels": {"role": "client"}}, "spec": {"host": "hv1"}},
        {"apiVersion": API, "kind": "Policy", "metadata": {"name": "out", "namespace": "dns"},
         "spec": {"appliesTo": {"selector": {"matchLabels": {"role": "client"}}}, "egress": [
             {"id": "resolver", "action": "allow", "to": [{"cidr": "198.19.0.53/32"}, {"cidr": "2001:db8:e::53/128"}],
              "ports": [{"protocol": "UDP", "port": 53}]},
             {"id": "bench-names", "action": "allow", "to": [{"fqdn": PATTERN}]},
         ]}},
    ]


def _name(i: int) -> str:
    return f"n{i}.bench.example"


def _lookups(names: int, queries: int, round_trips: int) -> Any:
    def then(client: Any, prefix: str, env: dict[str, str]) -> dict[str, Any]:
        import dns.message
        import dns.query

        from stockade.lab import naming, outside
        from stockade.lab import netns as ns
        from stockade.lab.state import LabSettings
        from stockade.lab.stream import echo_server

        settings = LabSettings.from_env()
        target = outside.add_external(settings, "target", [_name(0)], 300, [])
        target_ip = target.addresses()[0]
        # Every other name has its own address (198.19.128.0/17, no endpoint behind it), so that the
        # learned sets hold one element per name.
        outside.publish(settings, [(_name(i), f"198.19.{128 + i // 250}.{i % 250 + 1}",
                                    f"2001:db8:e:1::{i:x}") for i in range(1, names)])
        timed_apply(client, _world(), 2, timeout=60)
        netns = client.list("Workload", namespace="dns", name="client")["items"][0]["status"]["netns"]

        def ask(server: str, name: str) -> float:
            query = dns.message.make_query(name, "A")
            started = time.perf_counter()
            answer = dns.query.udp(query, server, timeout=2)
            took = time.perf_counter() - started
            if not answer.answer:
                raise RuntimeError(f"{name}: no answer from {server}")
            return took

        def lookups() -> tuple[list[float], list[float]]:
            via_proxy, direct = [], []
            for i in range(queries):
                name = _name(i % names)  # names 0..queries-1: each learned here, once via the proxy
                via_proxy.append(ask(naming.DNS_SERVER_V4, name))
                direct.append(ask(naming.DNS_SERVER_V6, name))
            return via_proxy, direct

        def round_trip_times() -> list[float]:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(1.0)
                sock.connect((target_ip, ECHO_PORT))
                out = []
                for i in range(round_trips):
                    started = time.perf_counter()
                    sock.send(i.to_bytes(4, "big"))
                    sock.recv(64)
                    out.append(time.perf_counter() - started)
                return out

        with echo_server(naming.external_netns(prefix, "target"), "udp", ECHO_PORT):
            ns.run_in(netns, lambda: ask(naming.DNS_SERVER_V4, _name(0)))  # one name learned
            ns.run_in(netns, round_trip_times)                            # warm-up, not counted
            one = ns.run_in(netns, round_trip_times)
            via_proxy, direct = ns.run_in(netns, lookups)
            for i in range(min(queries, names), names):  # every other name learned too, through the proxy
                ns.run_in(netns, lambda i=i: ask(naming.DNS_SERVER_V4, _name(i)))  # type: ignore[misc]
            learned = _learned_elements(prefix)
            every = ns.run_in(netns, round_trip_times)
        return {"via_proxy": via_proxy, "direct": direct, "rtt_one": one, "rtt_all": every, "learned": learned}
    return then


def _learned_elements(prefix: str) -> int:
    """Elements in hv1's learned-address sets (counted in the kernel's listing)."""
    import json
    import subprocess

    listing = json.loads(subprocess.run(["ip", "netns", "exec", f"{prefix}-hv1", "nft", "-j", "list", "sets", "inet"],
                                        capture_output=True, text=True, check=True).stdout)
    return sum(len(i["set"].get("elem", [])) for i in listing["nftables"]
               if "set" in i and i["set"]["name"].startswith("fqdn_"))


def run(names: int = 2000, queries: int = 300, round_trips: int = 2000) -> Figure:
    lab = measure(2, 0, 0, then=_lookups(names, queries, round_trips))
    ms = lambda xs, q: round(percentile(xs, q) * 1000, 3)  # noqa: E731
    proxy_p50, direct_p50 = percentile(lab["via_proxy"], 50), percentile(lab["direct"], 50)
    rtt_one, rtt_all = percentile(lab["rtt_one"], 50), percentile(lab["rtt_all"], 50)
    holds = rtt_all <= 1.25 * rtt_one
    return Figure(
        name="fqdn",
        title=f"egress by domain name: lookup through the DNS proxy vs direct, and UDP round trips with "
              f"1 vs {names} learned names",
        values={"queries": queries, "lookup_proxy_p50_ms": ms(lab["via_proxy"], 50),
                "lookup_proxy_p99_ms": ms(lab["via_proxy"], 99), "lookup_direct_p50_ms": ms(lab["direct"], 50),
                "lookup_direct_p99_ms": ms(lab["direct"], 99), "learned_names": names,
                "learned_elements": lab["learned"], "rtt_1_name_p50_ms": ms(lab["rtt_one"], 50),
                "rtt_all_names_p50_ms": ms(lab["rtt_all"], 50), "rtt_all_names_p99_ms": ms(lab["rtt_all"], 99),
                "rtt_ratio_all_vs_1": round(rtt_all / max(rtt_one, 1e-9), 3)},
        ratio=round(proxy_p50 / max(direct_p50, 1e-9), 2),
        target=f"lookup p99 via proxy < 20 ms; round-trip p50 with {names} names <= 1.25x with 1 "
               "(ratio = lookup p50 via proxy / direct)",
        met=percentile(lab["via_proxy"], 99) < 0.020 and holds,
        notes=[f"{lab['learned']} addresses in hv1's learned sets at the end; the per-packet figure "
               f"{'holds' if holds else 'does NOT hold'} at {names} learned names"],
    )
