"""Figure — migration: how long a workload that moves live is unreachable, against the rollout of
one policy change, measured in the same lab in one run.

A lab of 3 hypervisors (rollout's `measure`: its policy applies give the rollout time). Then, in
namespace `mig`, `peer` on hv3 sends a UDP datagram every 10 ms to `mover` (an echo server in the
mover's netns), on a flow the policy admitted once and admits no more (the admitting policy is
deleted: only the carried conntrack state keeps it going). `mover` moves between hv1 and hv2
`moves` times with `stockade lab migrate`; for each move a fresh flow measures:

- downtime: the longest time between two echoes, around the move (the time unreachable);
- datagrams lost during it;
- the move's own steps as `lab migrate` reports them (handoff, switch, plumbing).

Target: downtime p99 < 1 s, every flow carried on after every move. The ratio is downtime p50 /
policy-apply rollout p50: what a move costs, in rollouts of one policy change.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from bench.common import Figure, percentile, run as sh
from bench.rollout import API, measure, timed_apply

PORT = 7001


def _world() -> list[dict[str, Any]]:
    def group(name: str, role: str) -> dict[str, Any]:
        return {"apiVersion": API, "kind": "Group", "metadata": {"name": name, "namespace": "mig"},
                "spec": {"selector": {"matchLabels": {"role": role}}}}

    def workload(name: str, host: str) -> dict[str, Any]:
        return {"apiVersion": API, "kind": "Workload",
                "metadata": {"name": name, "namespace": "mig", "labels": {"role": name}}, "spec": {"host": host}}

    udp = [{"protocol": "UDP", "port": PORT}]
    return [
        {"apiVersion": API, "kind": "Namespace", "metadata": {"name": "mig"}, "spec": {"defaultAction": "deny"}},
        workload("peer", "hv3"), workload("mover", "hv1"), group("peers", "peer"), group("movers", "mover"),
        {"apiVersion": API, "kind": "Policy", "metadata": {"name": "peer-out", "namespace": "mig"},
         "spec": {"appliesTo": {"group": "peers"},
                  "egress": [{"id": "to-mover", "action": "allow", "to": [{"group": "movers"}], "ports": udp}]}},
    ]


def _admit() -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Policy", "metadata": {"name": "mover-in", "namespace": "mig"},
            "spec": {"appliesTo": {"group": "movers"},
                     "ingress": [{"id": "from-peer", "action": "allow", "from": [{"group": "peers"}],
                                  "ports": [{"protocol": "UDP", "port": PORT}]}]}}


def _wait_enforced(client: Any, revision: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not all((a.get("revision") or 0) >= revision and a.get("inSync")
                  for a in client.status().get("agents", [])):
        if time.monotonic() > deadline:
            raise TimeoutError(f"revision {revision} not enforced by every agent within {timeout:.0f} s")
        time.sleep(0.05)


def _moves(count: int) -> Any:
    def then(client: Any, prefix: str, env: dict[str, str]) -> dict[str, Any]:
        from stockade.lab.stream import Stream, echo_server

        timed_apply(client, _world(), 3, timeout=60)
        results = []
        for i in range(count):
            mover = client.list("Workload", namespace="mig", name="mover")["items"][0]
            peer = client.list("Workload", namespace="mig", name="peer")["items"][0]
            ip = next(a for a in mover["status"]["ips"] if ":" not in a)
            target = "hv2" if mover["spec"]["host"] == "hv1" else "hv1"
            timed_apply(client, [_admit()], 3)
            with echo_server(mover["status"]["netns"], "udp", PORT), \
                    Stream(peer["status"]["netns"], "udp", ip, PORT) as flow:
                if not flow.wait_answers(20):
                    raise RuntimeError("the UDP flow did not start while admitted")
                gone = client.delete([("Policy", "mig", "mover-in")], message="bench: admit no new connection")
                _wait_enforced(client, int(gone["revision"]))
                moved = json.loads(sh([sys.executable, "-m", "stockade", "lab", "migrate", "mig/mover", "--to",
                                       target, "-o", "json"], env=env, timeout=120).stdout)
                before = flow.answers
                carried = flow.wait_answers(before + 50, timeout=5.0)
                result = flow.stop()
            results.append({**moved, "downtime_ms": result.longest_gap_ms, "lost": result.lost,
                            "sent": result.sent, "carried": carried})
        return {"moves": results}
    return then


def run(moves: int = 6, applies: int = 10) -> Figure:
    lab = measure(3, applies, 0, then=_moves(moves))
    moved = lab["moves"]
    downtime = [m["downtime_ms"] / 1000 for m in moved]
    rollout_p50 = percentile(lab["full"], 50)
    ms = lambda xs, q: round(percentile(xs, q) * 1000, 1)  # noqa: E731
    carried = all(m["carried"] for m in moved)
    return Figure(
        name="migration",
        title=f"live migration: time unreachable, {moves} moves between 2 of 3 lab hosts, vs one policy rollout",
        values={"moves": moves, "downtime_p50_ms": ms(downtime, 50), "downtime_p99_ms": ms(downtime, 99),
                "lost_datagrams_p50": percentile([m["lost"] for m in moved], 50),
                "lost_datagrams_max": max(m["lost"] for m in moved),
                "handoff_p50_ms": ms([m["handoff_seconds"] for m in moved], 50),
                "switch_p50_ms": ms([m["switch_seconds"] for m in moved], 50),
                "plumbed_p50_ms": ms([m["plumbed_seconds"] for m in moved], 50),
                "connections_carried": [m["connections"] for m in moved],
                "rollout_apply_p50_ms": ms(lab["full"], 50), "rollout_apply_p99_ms": ms(lab["full"], 99)},
        ratio=round(percentile(downtime, 50) / max(rollout_p50, 1e-6), 2),
        target="downtime p99 < 1 s, every flow carried (ratio = downtime p50 / policy rollout p50)",
        met=percentile(downtime, 99) < 1.0 and carried,
        notes=[f"a UDP datagram every 10 ms across each move; {'every' if carried else 'NOT every'} flow "
               "carried on, on state no policy admits any more"],
    )
