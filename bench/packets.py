"""Figure 1 — per-packet cost versus policy size: new TCP connections per second.

Two routed hosts (see `bench.topology`); the bench client on h1 opens HTTP
connections to nginx on the bench server on h2 with wrk, one request per
connection (`Connection: close`), so every request is a new connection whose
SYN walks the whole firewall path: h1's egress chain and h2's ingress chain.
wrk reports requests per second (= connections per second) and the latency
of each request on its fresh connection (p50/p99).

Configurations, measured in rounds (each round visits every configuration in
a rotated order, so slow drifts of a shared machine hit all of them alike):
- `none`:  no nftables table at all (no firewall, no conntrack);
- `conntrack`: a table that only tracks connections (`ct state established,related
  accept`, then accept): the cost of stateful filtering itself, without any policy;
- `small`: the program Stockade compiles for each host from the policy of 10 workloads;
- `large`: the same from the policy of 10,000 workloads (~2,000 policies, most not about these two);
- `naive`: the large policy written as a hand-written ruleset would be: one linear
  chain of address-pair rules per host (its first NAIVE_CAP rules, the pair's own rule
  in the middle of the chain), stateful like Stockade's.
The figures are medians over the rounds; ratios large/small and large/none.
wrk runs on CPU 0 and nginx on CPU 1 so that the two do not take turns on one core.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench import synthetic, topology
from bench.common import Figure, in_netns, median, netns_driver, new_prefix, remove_netns, stop, wait_until
from stockade.compile.host import CompileOptions, compile_host, ordered_policies
from stockade.compile.selection import Selection
from stockade.model.naming import workload_interface  # noqa: F401 - documents where interface names come from
from stockade.model.objects import PortSpec
from stockade.model.state import DesiredState
from stockade.nft.render import Json, full_replace

NAIVE_TABLE = "naive"
NAIVE_CAP = 10_000
OPTIONS = CompileOptions(log_group=None)  # no NFLOG reader runs here; logging would only cost syscalls
CONFIGS = ("none", "conntrack", "small", "large", "naive")
CT_TABLE = "ctonly"

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    keepalive_timeout 0;
    server {{
        listen {ip}:{port} backlog=4096;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


# --------------------------------------------------------------- naive ruleset

def _port_matches(port: PortSpec, state: DesiredState, dst: tuple[str, str] | None) -> list[Json] | None:
    proto = port.protocol.lower()
    if proto not in ("tcp", "udp"):
        return None
    if isinstance(port.port, str):  # named: what the destination workload calls it
        wl = state.workloads.get(dst) if dst else None
        found = [p.port for p in (wl.spec.ports if wl else []) if p.name == port.port]
        if not found:
            return None
        value: Any = found[0]
    elif port.port is None:
        return [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": proto}}]
    elif port.endPort is not None:
        value = {"range": [port.port, port.endPort]}
    else:
        value = port.port
    return [{"match": {"op": "==", "left": {"payload": {"protocol": proto, "field": "dport"}}, "right": value}}]


def _addr_match(field: str, value: str) -> Json:
    if "/" in value:
        addr, length = value.split("/")
        right: Any = {"prefix": {"addr": addr, "len": int(length)}}
    else:
        right = value
    return {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": field}}, "right": right}}


def naive_rules(state: DesiredState, cap: int = NAIVE_CAP) -> tuple[list[list[Json]], int]:
    """The policy as address-pair rules, in evaluation order: (the first `cap` rules, how many
    the full expansion has). IPv4 only; exceptions of CIDRs are left out (fewer rules, so the
    baseline errs on the fast side)."""
    sel = Selection(state)
    v4 = {k: [ip for ip in state.workload_ips(w) if ":" not in ip] for k, w in state.workloads.items()}
    rules: list[list[Json]] = []
    total = 0
    for policy in ordered_policies(state, state.tier_order()):
        applied = [k for k in sel.applied(policy) if v4[k]]
        for direction in ("egress", "ingress"):
            for rule in (policy.spec.egress if direction == "egress" else policy.spec.ingress):
                verdict: Json = {"accept": None} if rule.action == "allow" else {"drop": None}
                if rule.action not in ("allow", "deny"):
                    continue
                peers: list[tuple[str, tuple[str, str] | None]] = []
                for peer in (rule.to if direction == "egress" else rule.from_) or []:
                    if peer.cidr is not None:
                        if ":" not in peer.cidr:
                            peers.append((peer.cidr, None))
                        continue
                    peers += [(v4[k][0], k) for k in sel.peer_workloads(policy.metadata.namespace, peer) if v4[k]]
                    if peer.group is not None:
                        from stockade.model.validation import group_ref
                        group = state.groups.get(group_ref(policy.metadata.namespace or "", peer.group))
                        peers += [(c, None) for c in (group.spec.cidrs if group else []) if ":" not in c]
                if not (rule.to if direction == "egress" else rule.from_):
                    peers = [("0.0.0.0/0", None)]
                ports = rule.ports or [None]
                total += len(applied) * len(peers) * len(ports)
                if len(rules) >= cap:
                    continue
                for k in applied:
                    for peer_addr, peer_key in peers:
                        src, dst = (v4[k][0], peer_addr) if direction == "egress" else (peer_addr, v4[k][0])
                        dst_key = peer_key if direction == "egress" else k
                        for port in ports:
                            pm = [] if port is None else _port_matches(port, state, dst_key)
                            if pm is None or len(rules) >= cap:
                                continue
                            rules.append([_addr_match("saddr", src), _addr_match("daddr", dst), *pm, verdict])
    return rules, total


def naive_program(state: DesiredState, cap: int = NAIVE_CAP) -> tuple[Json, int, int]:
    """One table, one forward chain: stateful accept, then the pair rules, the bench pair's rule in
    the middle (a typical flow of a linear list walks half of it), then drop."""
    rules, total = naive_rules(state, cap)
    client, server = synthetic.BENCH_IPS
    pair = [_addr_match("saddr", client), _addr_match("daddr", server),
            {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                       "right": synthetic.BENCH_PORT}}, {"accept": None}]
    rules.insert(len(rules) // 2, pair)
    table = {"family": "inet", "name": NAIVE_TABLE}
    chain = {"family": "inet", "table": NAIVE_TABLE, "name": "forward"}
    cmds: list[Json] = [{"add": {"table": table}}, {"delete": {"table": table}}, {"add": {"table": table}},
                        {"add": {"chain": {**chain, "type": "filter", "hook": "forward", "prio": 0,
                                           "policy": "accept"}}}]
    ct = [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}},
          {"accept": None}]
    body = [ct, *rules, [{"drop": None}]]
    cmds += [{"add": {"rule": {"family": "inet", "table": NAIVE_TABLE, "chain": "forward", "expr": r}}} for r in body]
    return {"nftables": cmds}, len(body), total


def conntrack_only() -> Json:
    """A stateful table with no policy: what any conntrack-based firewall costs per connection."""
    table = {"family": "inet", "name": CT_TABLE}
    chain = {"family": "inet", "table": CT_TABLE, "name": "forward"}
    ct = [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}},
          {"accept": None}]
    return {"nftables": [
        {"add": {"table": table}}, {"delete": {"table": table}}, {"add": {"table": table}},
        {"add": {"chain": {**chain, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}}},
        {"add": {"rule": {**{k: chain[k] for k in ("family", "table")}, "chain": "forward", "expr": ct}}},
        {"add": {"rule": {**{k: chain[k] for k in ("family", "table")}, "chain": "forward", "expr": [{"accept": None}]}}},
    ]}


# ------------------------------------------------------------------ measuring

_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not m:
        raise ValueError(f"wrk latency {text!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


def parse_wrk(out: str) -> dict[str, float]:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if not (rps and p50 and p99):
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"conn_per_s": float(rps.group(1)), "p50_ms": _ms(p50.group(1)), "p99_ms": _ms(p99.group(1)),
            "errors": float(sum(int(x) for x in errors.groups()) if errors else 0) + (int(non2xx.group(1)) if non2xx else 0)}


def wrk(client_ns: str, seconds: float, connections: int) -> dict[str, float]:
    url = f"http://{synthetic.BENCH_IPS[1]}:{synthetic.BENCH_PORT}/"
    res = in_netns(client_ns, ["taskset", "-c", "0", "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s",
                               "--latency", "-H", "Connection: close", url], timeout=seconds + 30)
    return parse_wrk(res.stdout)


def load(pair: topology.Pair, config: str, programs: dict[str, tuple[Json, Json]]) -> None:
    for i, host in enumerate(pair.hosts):
        netns_driver(host, "stockade").delete() if _has_table(host, "stockade") else None
        for other in (NAIVE_TABLE, CT_TABLE):
            if _has_table(host, other):
                netns_driver(host, other).delete()
        if config != "none":
            netns_driver(host).apply(programs[config][i])


def _has_table(netns: str, table: str) -> bool:
    return in_netns(netns, ["nft", "list", "table", "inet", table], check=False).returncode == 0


def run(small: tuple[int, int] = (10, 2), large: tuple[int, int] = (10_000, 2_000), rounds: int = 3,
        seconds: float = 4.0, connections: int = 8, naive_cap: int = NAIVE_CAP) -> Figure:
    small_state = synthetic.state(*small)
    large_state = synthetic.state(*large)
    naive, naive_rules_n, naive_total = naive_program(large_state, naive_cap)
    programs = {
        "small": tuple(full_replace(compile_host(small_state, h, OPTIONS)) for h in synthetic.BENCH_HOSTS),
        "large": tuple(full_replace(compile_host(large_state, h, OPTIONS)) for h in synthetic.BENCH_HOSTS),
        "naive": (naive, naive),
        "conntrack": (conntrack_only(), conntrack_only()),
    }
    prefix = new_prefix()
    nginx: subprocess.Popen[bytes] | None = None
    samples: dict[str, list[dict[str, float]]] = {c: [] for c in CONFIGS}
    with tempfile.TemporaryDirectory(prefix=f"stockade-{prefix}-") as tmp:
        try:
            pair = topology.build(prefix, large_state)
            conf = Path(tmp) / "nginx.conf"
            conf.write_text(NGINX_CONF.format(dir=tmp, ip=synthetic.BENCH_IPS[1], port=synthetic.BENCH_PORT))
            nginx = subprocess.Popen(["ip", "netns", "exec", pair.workloads[1], "taskset", "-c", "1",
                                      "nginx", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            wait_until(lambda: nginx is not None and nginx.poll() is None and bool(in_netns(
                pair.workloads[1], ["ss", "-ltnH", f"sport = :{synthetic.BENCH_PORT}"]).stdout.strip()),
                10, what="nginx to listen")
            wrk(pair.workloads[0], 1, connections)  # the path works, with no firewall
            for r in range(rounds):
                order = CONFIGS[r % len(CONFIGS):] + CONFIGS[:r % len(CONFIGS)]
                for config in order:
                    load(pair, config, programs)
                    wrk(pair.workloads[0], 1, connections)  # warm-up: caches, conntrack, nginx
                    samples[config].append(wrk(pair.workloads[0], seconds, connections))
        finally:
            stop(nginx)
            remove_netns(prefix)
    med = {c: {k: median([s[k] for s in samples[c]]) for k in ("conn_per_s", "p50_ms", "p99_ms")} for c in CONFIGS}
    errors = {c: sum(s["errors"] for s in samples[c]) for c in CONFIGS}
    vs_small = med["large"]["conn_per_s"] / med["small"]["conn_per_s"]
    vs_none = med["large"]["conn_per_s"] / med["none"]["conn_per_s"]
    naive_vs = med["naive"]["conn_per_s"] / med["small"]["conn_per_s"]
    values: dict[str, Any] = {}
    for c in CONFIGS:
        values[f"{c}_conn_per_s"] = round(med[c]["conn_per_s"], 1)
        values[f"{c}_p50_ms"] = round(med[c]["p50_ms"], 3)
        values[f"{c}_p99_ms"] = round(med[c]["p99_ms"], 3)
    ct_vs_none = med["conntrack"]["conn_per_s"] / med["none"]["conn_per_s"]
    values.update({"large_vs_none": round(vs_none, 3), "naive_vs_small": round(naive_vs, 3),
                   "conntrack_only_vs_none": round(ct_vs_none, 3),
                   "small_workloads": small[0], "large_workloads": large[0], "large_policies": large[1],
                   "naive_rules_loaded": naive_rules_n, "naive_rules_full_expansion": naive_total,
                   "socket_errors": errors, "rounds": rounds, "seconds_per_run": seconds,
                   "connections": connections})
    return Figure(
        name="packets",
        title=f"new TCP conn/s, policy of {large[0]:,} vs {small[0]:,} workloads (and vs no firewall)",
        values=values, ratio=round(vs_small, 3), target=">= 0.95 vs small; >= 0.90 vs none",
        met=vs_small >= 0.95 and vs_none >= 0.90,
        notes=[f"vs no firewall: large {vs_none:.2f}x; a table that only tracks connections (no policy) "
               f"{ct_vs_none:.2f}x: that much is the cost of conntrack itself",
               f"naive linear chain ({naive_rules_n:,} of {naive_total:,} address-pair rules): "
               f"{naive_vs:.2f}x the small policy's rate"],
    )
