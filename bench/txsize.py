"""Figure 4 — transaction size: the kernel transaction for a one-workload change.

On host bh1 (which runs the bench client), a new server workload appears on
another host and joins the `bench/servers` group that the client's egress
policy allows: the host program changes only in set elements, so the agent's
reconciler sends `set_delta` (element additions) instead of a table rewrite.
We count what that transaction sends (bytes of nft JSON and objects: commands
plus set elements) with a small policy and with a ten-times larger one, and
apply both for real in a namespace of our own to show the kernel takes them.
The ratio large/small should be 1: the size is O(1) in the rest of the policy.

For contrast we also size the transaction when the new workload lands on bh1
itself: that changes the program's structure (a new chain and map entries), so
the reconciler replaces the whole table, whose size grows with the policy.
"""

from __future__ import annotations

from typing import Any

from bench import synthetic
from bench.common import Figure, netns_driver, new_prefix, remove_netns, run as sh
from stockade.compile.host import CompileOptions, compile_host
from stockade.model.kinds import parse_object
from stockade.model.state import DesiredState
from stockade.nft.render import count_objects, full_replace, set_delta, to_json

OPTIONS = CompileOptions(log_group=100)
HOST = synthetic.BENCH_HOSTS[0]


def _new_server(host: str) -> Any:
    return parse_object({"apiVersion": synthetic.API, "kind": "Workload",
                         "metadata": {"name": "server-2", "namespace": synthetic.BENCH_NS,
                                      "labels": {"app": "bench-server", "env": "prod"}},
                         "spec": {"host": host, "ips": ["198.18.0.12", "2001:db8:0:ffff::12"]}})


def measure(state: DesiredState, netns: str) -> dict[str, int]:
    before = compile_host(state, HOST, OPTIONS)
    driver = netns_driver(netns)
    full = full_replace(before)
    driver.apply(full)
    remote = compile_host(state.with_changes(state.revision + 1, put=[_new_server("node-0")]), HOST, OPTIONS)
    delta = set_delta(before, remote)
    if delta is None:
        raise AssertionError("a remote workload joining a group changed the program's structure")
    driver.apply(delta)  # the kernel takes exactly this transaction
    local = compile_host(state.with_changes(state.revision + 1, put=[_new_server(HOST)]), HOST, OPTIONS)
    if set_delta(before, local) is not None:
        raise AssertionError("a new local workload was expected to change the structure")
    local_full = full_replace(local)
    return {"delta_bytes": len(to_json(delta)), "delta_objects": count_objects(delta),
            "full_table_bytes": len(to_json(full)), "full_table_objects": count_objects(full),
            "local_add_bytes": len(to_json(local_full)), "local_add_objects": count_objects(local_full)}


def run(small: tuple[int, int] = (1_000, 200), large: tuple[int, int] = (10_000, 2_000)) -> Figure:
    prefix = new_prefix()
    netns = f"{prefix}-tx"
    try:
        sh(["ip", "netns", "add", netns])
        a = measure(synthetic.state(*small), netns)
        b = measure(synthetic.state(*large), netns)
    finally:
        remove_netns(prefix)
    ratio = b["delta_bytes"] / a["delta_bytes"]
    values: dict[str, Any] = {"small_workloads": small[0], "large_workloads": large[0]}
    values.update({f"small_{k}": v for k, v in a.items()})
    values.update({f"large_{k}": v for k, v in b.items()})
    return Figure(
        name="txsize",
        title=f"one-workload change: transaction bytes, {large[0]:,} vs {small[0]:,} workloads",
        values=values, ratio=round(ratio, 3), target="<= 1.10 (O(1))",
        met=ratio <= 1.10 and b["delta_objects"] == a["delta_objects"],
        notes=["membership change: set-element delta, applied for real in a namespace",
               f"a workload added on bh1 itself changes the structure, so the table is replaced: "
               f"{a['local_add_bytes']:,} B vs {b['local_add_bytes']:,} B (the size of the host's program)"],
    )
