"""Figure 3 — rollout: `apply` → every agent enforces, across a lab of 20 hosts.

`stockade lab up --hosts 20` (its own state directory, prefix and CLI config),
one workload per host in namespace `roll`, groups `a` and `b` by label and a
policy between them. Then, measured from just before the apply request to the
moment the controller's status shows every agent enforcing the new revision in
sync (polled every 50 ms through the same client the CLI uses: the poller shares the
two CPUs with the controller and agents it measures, and `enforced` below does not
depend on the interval), see below:
- policy applies: the policy's port changes, so every host's program changes
  structure and every agent replaces its table;
- label changes: one workload's `role` label flips between a and b, which only
  moves it between the groups' sets: each agent must apply it as set-element
  updates. We show that it is one by the agents' own metric
  (`stockade_agent_transactions_total{kind="delta"}` rises by one per change on
  every host and `kind="full"` not at all).
The latency is taken to the moment the last agent had programmed its kernel (the
`appliedAt` it reports; one clock, one machine); the time until the controller's
status showed it (our polling included) is reported beside it as `*_observed_*`.
Targets: policy applies p99 < 1 s; label changes p99 < 100 ms, as element updates.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from bench.common import Figure, cli_client, in_netns, new_prefix, percentile, remove_netns, run as sh

API = "stockade.io/v1"
NS = "roll"
POLL_INTERVAL = 0.05
METRICS_PORT = 9301  # the lab agents' /metrics port (lab.commands.AGENT_METRICS_PORT)
ENV_KEYS = ("STOCKADE_STATE_DIR", "STOCKADE_LAB_PREFIX", "STOCKADE_CONFIG", "STOCKADE_CONTROLLER",
            "STOCKADE_TOKEN", "STOCKADE_CA", "STOCKADE_CONTEXT")


def base_documents(hosts: int) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = [{"apiVersion": API, "kind": "Namespace", "metadata": {"name": NS}, "spec": {}}]
    for i in range(1, hosts + 1):
        docs.append({"apiVersion": API, "kind": "Workload",
                     "metadata": {"name": f"r{i}", "namespace": NS,
                                  "labels": {"app": "roll", "role": "a" if i % 2 else "b"}},
                     "spec": {"host": f"hv{i}"}})
    for g in ("a", "b"):
        docs.append({"apiVersion": API, "kind": "Group", "metadata": {"name": g, "namespace": NS},
                     "spec": {"selector": {"matchLabels": {"role": g}}}})
    docs.append(policy(80))
    return docs


def policy(port: int) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Policy", "metadata": {"name": "ab", "namespace": NS},
            "spec": {"appliesTo": {"selector": {"matchLabels": {"app": "roll"}}},
                     "ingress": [{"id": "from-a", "action": "allow", "from": [{"group": "a"}],
                                  "ports": [{"protocol": "TCP", "port": port}]}],
                     "egress": [{"id": "to-b", "action": "allow", "to": [{"group": "b"}],
                                 "ports": [{"protocol": "TCP", "port": port}]}]}}


def relabel(role: str) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Workload",
            "metadata": {"name": "r1", "namespace": NS, "labels": {"app": "roll", "role": role}},
            "spec": {"host": "hv1"}}


def timed_apply(client: Any, docs: list[dict[str, Any]], hosts: int, timeout: float = 30) -> tuple[float, float]:
    """(enforced, observed) seconds after the apply request: `enforced` when the last of `hosts`
    agents had programmed its kernel (the `appliedAt` each agent reports, same machine clock),
    `observed` when the controller's status first showed all of them in sync (this includes our
    polling, every POLL_INTERVAL)."""
    wall, started = time.time(), time.monotonic()
    revision = int(client.apply(docs, message="bench rollout")["revision"])
    while True:
        agents = [a for a in client.status().get("agents", []) if a.get("reporting", True)]
        done = [a for a in agents if (a.get("revision") or 0) >= revision and a.get("inSync")]
        if len(done) >= hosts:
            observed = time.monotonic() - started
            applied = [dt.datetime.fromisoformat(a["appliedAt"]).timestamp() for a in done if a.get("appliedAt")]
            enforced = max(applied) - wall if len(applied) == len(done) else observed
            return max(0.0, enforced), observed
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"revision {revision}: {len(done)}/{hosts} agents after {timeout:.0f} s")
        time.sleep(POLL_INTERVAL)


def transactions(prefix: str, hosts: int) -> dict[str, int]:
    """Sum over the lab's agents of their successful transactions by kind (their /metrics)."""
    total = {"full": 0, "delta": 0}
    for i in range(1, hosts + 1):
        text = in_netns(f"{prefix}-hv{i}", ["curl", "-s", "--max-time", "5",
                                            f"http://198.18.254.{i}:{METRICS_PORT}/metrics"]).stdout
        for kind in total:
            m = re.search(r'^stockade_agent_transactions_total\{kind="%s",result="ok"\} ([\d.e+]+)' % kind, text, re.M)
            total[kind] += int(float(m.group(1))) if m else 0
    return total


def measure(hosts: int, applies: int, relabels: int, up_args: tuple[str, ...] = (),
            then: Callable[[Any, str, dict[str, str]], dict[str, Any]] | None = None) -> dict[str, Any]:
    """One lab of `hosts` hypervisors (`lab up` with `up_args`), from `lab up` to `lab down` (also
    on failure); `then(client, prefix, env)`, if given, measures more before the lab goes down."""
    prefix = new_prefix()
    saved = {k: os.environ.get(k) for k in ENV_KEYS}
    with tempfile.TemporaryDirectory(prefix=f"stockade-{prefix}-") as tmp:
        for k in ENV_KEYS:
            os.environ.pop(k, None)
        os.environ.update({"STOCKADE_STATE_DIR": str(Path(tmp) / "state"), "STOCKADE_LAB_PREFIX": prefix,
                           "STOCKADE_CONFIG": str(Path(tmp) / "config.json")})
        env = dict(os.environ)
        try:
            started = time.monotonic()
            sh([sys.executable, "-m", "stockade", "lab", "up", "--hosts", str(hosts), *up_args], env=env, timeout=600)
            lab_up_s = time.monotonic() - started
            client = cli_client(timeout=60)
            timed_apply(client, base_documents(hosts), hosts, timeout=120)  # workloads appear: not timed
            full = [timed_apply(client, [policy(81 + i)], hosts) for i in range(applies)]
            before = transactions(prefix, hosts)
            label = [timed_apply(client, [relabel("b" if i % 2 == 0 else "a")], hosts) for i in range(relabels)]
            after = transactions(prefix, hosts)
            extra = then(client, prefix, env) if then is not None else {}
        finally:
            sh([sys.executable, "-m", "stockade", "lab", "down"], env=dict(os.environ), timeout=300, check=False)
            remove_netns(prefix)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return {"full": [e for e, _ in full], "label": [e for e, _ in label],
            "full_observed": [o for _, o in full], "label_observed": [o for _, o in label],
            "deltas": after["delta"] - before["delta"],
            "fulls": after["full"] - before["full"], "lab_up_s": lab_up_s, **extra}


def run(hosts: int = 20, applies: int = 15, relabels: int = 15, small_hosts: int = 2) -> Figure:
    """The lab of `hosts`, and beside it one of `small_hosts`: on this 2-core machine every lab
    agent shares the same two CPUs, so the small lab shows what one agent takes when it is not
    queueing behind nineteen others (on real hosts, each agent has its host's CPU).
    `small_hosts=0` skips it (the smoke test)."""
    big = measure(hosts, applies, relabels)
    small = measure(small_hosts, applies, relabels) if small_hosts else big
    p99_full, p99_label = percentile(big["full"], 99), percentile(big["label"], 99)
    element_updates = big["deltas"] == relabels * hosts and big["fulls"] == 0
    ms = lambda xs, q: round(percentile(xs, q) * 1000, 1)  # noqa: E731
    return Figure(
        name="rollout",
        title=f"apply -> every agent enforces, {hosts} lab hosts",
        values={"hosts": hosts, "applies": applies, "relabels": relabels,
                "apply_p50_ms": ms(big["full"], 50), "apply_p99_ms": ms(big["full"], 99),
                "label_p50_ms": ms(big["label"], 50), "label_p99_ms": ms(big["label"], 99),
                "label_delta_transactions": big["deltas"], "label_full_transactions": big["fulls"],
                "apply_observed_p50_ms": ms(big["full_observed"], 50),
                "apply_observed_p99_ms": ms(big["full_observed"], 99),
                "label_observed_p50_ms": ms(big["label_observed"], 50),
                "label_observed_p99_ms": ms(big["label_observed"], 99),
                f"apply_p50_ms_{small_hosts}_hosts": ms(small["full"], 50),
                f"apply_p99_ms_{small_hosts}_hosts": ms(small["full"], 99),
                f"label_p50_ms_{small_hosts}_hosts": ms(small["label"], 50),
                f"label_p99_ms_{small_hosts}_hosts": ms(small["label"], 99),
                "lab_up_s": round(big["lab_up_s"], 1)},
        ratio=round(p99_full / 1.0, 3),
        target="apply p99 < 1 s (ratio = p99 / 1 s); label change p99 < 100 ms as set-element updates",
        met=p99_full < 1.0 and p99_label < 0.1 and element_updates,
        notes=[f"label changes: {big['deltas']} delta and {big['fulls']} full transactions over {hosts} agents "
               f"(expected {relabels * hosts} and 0)",
               f"same runs on a {small_hosts}-host lab: apply p50/p99 {ms(small['full'], 50)}/{ms(small['full'], 99)} ms, "
               f"label change p50/p99 {ms(small['label'], 50)}/{ms(small['label'], 99)} ms"],
    )
