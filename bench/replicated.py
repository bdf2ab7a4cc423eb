"""Figure — replicated: `apply` → every agent enforces on a 3-member etcd cluster with 3
controller replicas, against the embedded SQLite store, in one run; and failover time.

Two labs of the same size, one after the other, each measured as `rollout` measures
(`rollout.measure`: policy applies and label changes, to the moment the last agent had
programmed its kernel). On the etcd lab, after those: the etcd leader is killed with SIGKILL
and the time from the kill to the next acknowledged apply (the CLI's client tries every
controller replica; the controller every etcd member) is the failover time.

Target: on etcd, policy applies are enforced everywhere with p99 < 1 s (rollout's target), and
a write is acknowledged again within 5 s of losing the leader. The ratio is etcd p99 / SQLite p99:
what replication costs a rollout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import Figure, percentile
from bench.rollout import API, measure

MEMBERS = 3


def _leader_pid(prefix: str, env: dict[str, str]) -> int:
    """The pid of the etcd leader of the lab `prefix` (its pid file, found by `endpoint status`)."""
    endpoints = ",".join(f"http://198.18.254.{240 + j}:2379" for j in range(1, MEMBERS + 1))
    out = subprocess.run(["nsenter", f"--net=/run/netns/{prefix}-cp", "etcdctl", "--endpoints", endpoints,
                          "-w", "json", "endpoint", "status"], capture_output=True, text=True, timeout=30,
                         env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}, check=True).stdout
    for status in json.loads(out):
        if status["Status"]["header"]["member_id"] == status["Status"]["leader"]:
            member = int(status["Endpoint"].rsplit(":", 1)[0].rsplit(".", 1)[1]) - 240
            pid_file = Path(env["STOCKADE_STATE_DIR"]) / "run" / f"etcd-{member}.pid"
            return int(pid_file.read_text())
    raise RuntimeError("the lab's etcd cluster has no leader")


def _failover(client: Any, prefix: str, env: dict[str, str]) -> dict[str, Any]:
    """Kill the etcd leader; seconds until the next apply is acknowledged (bounded: 60 s)."""
    os.kill(_leader_pid(prefix, env), signal.SIGKILL)
    killed = time.monotonic()
    n = 0
    while time.monotonic() - killed < 60:
        n += 1
        doc = {"apiVersion": API, "kind": "Namespace", "metadata": {"name": f"failover-{n}"}, "spec": {}}
        try:
            client.apply([doc], message="bench failover")
            return {"failover_s": time.monotonic() - killed, "failover_attempts": n}
        except Exception:  # noqa: BLE001 - refused or unanswered while etcd elects: try again
            time.sleep(0.05)
    raise TimeoutError("no apply was acknowledged within 60 s of killing the etcd leader")


def run(hosts: int = 4, applies: int = 20, relabels: int = 20) -> Figure:
    sqlite = measure(hosts, applies, relabels)
    etcd = measure(hosts, applies, relabels, ("--store", "etcd", "--controllers", "3"), then=_failover)
    ms = lambda xs, q: round(percentile(xs, q) * 1000, 1)  # noqa: E731
    ratio = percentile(etcd["full"], 99) / max(percentile(sqlite["full"], 99), 1e-6)
    failover = etcd["failover_s"]
    return Figure(
        name="replicated",
        title=f"apply -> every agent enforces, {hosts} hosts: etcd (3 members, 3 replicas) vs SQLite",
        values={"hosts": hosts, "applies": applies, "relabels": relabels,
                "sqlite_apply_p50_ms": ms(sqlite["full"], 50), "sqlite_apply_p99_ms": ms(sqlite["full"], 99),
                "etcd_apply_p50_ms": ms(etcd["full"], 50), "etcd_apply_p99_ms": ms(etcd["full"], 99),
                "sqlite_label_p50_ms": ms(sqlite["label"], 50), "sqlite_label_p99_ms": ms(sqlite["label"], 99),
                "etcd_label_p50_ms": ms(etcd["label"], 50), "etcd_label_p99_ms": ms(etcd["label"], 99),
                "failover_s": round(failover, 2), "failover_attempts": etcd["failover_attempts"],
                "etcd_lab_up_s": round(etcd["lab_up_s"], 1), "sqlite_lab_up_s": round(sqlite["lab_up_s"], 1)},
        ratio=round(ratio, 3),
        target="etcd apply p99 < 1 s; failover < 5 s (ratio = etcd p99 / SQLite p99)",
        met=percentile(etcd["full"], 99) < 1.0 and failover < 5.0,
        notes=[f"etcd leader killed: the next apply was acknowledged {failover:.2f} s later "
               f"({etcd['failover_attempts']} attempts)"],
    )
