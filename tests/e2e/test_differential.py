"""Differential test with real packets: trace, probe and the reference evaluator agree on random policies.

One lab (two hypervisors) with the fixed world of tests/policy_reference.py:
six workloads with fixed labels and addresses in two namespaces (`red`
denies by default, `blue` is allowUntilSelected) and a Tier ordered before
platform. Each hypothesis example removes the previous example's policies,
applies a small random set of Policies and GlobalPolicies (`apply --wait`) and
checks a handful of random flows (TCP, UDP, ICMP echo; IPv4 and IPv6; same and
cross host) three ways:

- `compile.trace.trace_flow` on the state the controller stores (the program the agents run);
- real sockets in the workloads' namespaces (`lab.probe`): allowed, denied (timeout), rejected;
- the reference evaluator in tests/policy_reference.py, written from the spec.

All three must agree on every flow (trace and the reference also on the rules
on the way). A disagreement shows the policies as YAML, the flow and the three
answers. No shrinking: every example costs real seconds, and the message
already carries the whole case. The pure variant, with many more examples, is
tests/compile/test_trace.py.
"""

from __future__ import annotations

import ipaddress
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from stockade.compile import trace as compiled
from stockade.lab.probe import probe
from tests import policy_reference as ref
from tests.e2e.conftest import Lab

pytestmark = pytest.mark.kernel

EXAMPLES = 15             # about 1.5 s each on two cores: the module takes about 28 s
FLOWS_PER_EXAMPLE = 8     # probed three at a time: more flows per policy set cost little
PROBE_TIMEOUT = 0.5       # a denied flow costs this much
SEEN = {"allowed": "allow", "denied": "deny", "rejected": "reject"}


@pytest.fixture(scope="module")
def world(lab: Lab) -> dict[tuple[str, str], dict[str, Any]]:
    """The fixed workloads, created once; their API objects by (namespace, name)."""
    lab.apply_text(yaml.safe_dump_all(ref.world_documents()), "--wait", "--timeout", "60")
    items = lab.json("get", "workloads", "-A")["items"]
    found = {(w["metadata"]["namespace"], w["metadata"]["name"]): w for w in items}
    assert set(found) == set(ref.WORKLOADS)
    return found


@pytest.fixture(scope="module")
def client(lab: Lab) -> Any:
    with lab.client() as c:
        yield c


def probe_flow(world: dict[tuple[str, str], dict[str, Any]], flow: ref.Flow) -> str:
    src, dst = world[flow.src]["status"], world[flow.dst]["status"]
    dst_ip = next(ip for ip in dst["ips"] if ipaddress.ip_address(ip).version == flow.family)
    assert dst_ip == ref.ips(flow.dst)[flow.family]
    result = probe(src["netns"], dst["netns"], dst_ip, flow.protocol, flow.port, timeout=PROBE_TIMEOUT)
    return SEEN.get(result.verdict, f"{result.verdict} ({result.detail})")


def steps(side: Any) -> list[tuple[str, str]] | None:
    if side is None:
        return None
    if isinstance(side, ref.Side):
        return side.steps
    return [(r["rule"], r["action"]) for r in side.rules]


@pytest.mark.timeout(400)  # one test for all examples; normally about 50 s
def test_trace_probe_and_reference_agree_on_random_policies(lab: Lab, world: dict, client: Any) -> None:
    tally: Counter[str] = Counter()
    previous: list[dict[str, Any]] = []
    started = time.monotonic()

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(policies=ref.policy_sets(max_size=3),
           # distinct (destination, protocol, port): the probes of one example run side by side,
           # each with a server of its own on the destination
           flows=st.lists(ref.flows(), min_size=FLOWS_PER_EXAMPLE, max_size=FLOWS_PER_EXAMPLE,
                          unique_by=lambda f: (f.dst, f.protocol, f.port)))
    def differential(policies: list[dict[str, Any]], flows: list[ref.Flow]) -> None:
        if previous:
            client.delete([{"kind": p["kind"], "namespace": p["metadata"].get("namespace"),
                            "name": p["metadata"]["name"]} for p in previous], message="differential: next example")
            previous.clear()
        lab.apply_text(ref.policy_yaml(policies), "--wait", "--timeout", "60")
        previous.extend(policies)
        # Established flows outlive a policy change by design (stateful); every example asks
        # about new connections, so none may ride on an entry an earlier example created.
        for host in ("hv1", "hv2"):
            subprocess.run(["ip", "netns", "exec", lab.hv_netns(host), "conntrack", "-F"],
                           capture_output=True, timeout=10)
        state = client.snapshot_state()
        tally["examples"] += 1
        with ThreadPoolExecutor(max_workers=3) as pool:
            seen = list(pool.map(lambda f: probe_flow(world, f), flows))
        for flow, real in zip(flows, seen):
            traced = compiled.trace_flow(state, compiled.Flow(
                flow.src, flow.dst, flow.protocol, flow.port, flow.family))  # type: ignore[arg-type]
            expected = ref.evaluate(policies, flow)
            tally["flows"] += 1
            tally[expected.verdict] += 1
            agree = (real == traced.verdict == expected.verdict
                     and steps(traced.egress) == steps(expected.egress)
                     and steps(traced.ingress) == steps(expected.ingress))
            assert agree, (
                f"disagreement on {flow}\n"
                f"  probe (real packets): {real}\n"
                f"  trace:                {traced.verdict}  egress {steps(traced.egress)}  "
                f"ingress {steps(traced.ingress)}\n"
                f"  reference evaluator:  {expected.verdict}  egress {steps(expected.egress)}  "
                f"ingress {steps(expected.ingress)}\n"
                f"policies (revision {state.revision}):\n{ref.policy_yaml(policies)}")

    differential()
    print(f"\ntrace vs probe vs reference: {tally['examples']} policy sets, {tally['flows']} flows "
          f"(allow {tally['allow']}, deny {tally['deny']}, reject {tally['reject']}) "
          f"in {time.monotonic() - started:.0f} s")
    assert tally["examples"] == EXAMPLES and tally["flows"] == EXAMPLES * FLOWS_PER_EXAMPLE
    assert tally["allow"] and tally["deny"] and tally["reject"], tally
