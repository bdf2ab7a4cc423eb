"""Kubernetes NetworkPolicy truth tables, with real packets: the upstream netpol e2e suite's way.

One lab with two hosts holds the world of kubernetes/test/e2e/network/netpol
(tests/netpol_world.py): namespaces x, y, z (`allowUntilSelected`, labelled
`ns: x` ...), pods a, b, c in each (labelled `pod: a` ...), spread over hv1 and
hv2, each serving TCP and UDP on 80 and 81 (named ports `serve-80-tcp` ...).
Each case applies its NetworkPolicies (and relabels) with `apply --wait`, probes
the whole matrix with real sockets — 72 pairs: as upstream (`ignoreLoopback`), a
pod talking to itself is not probed, that traffic never leaves its own network
stack — and compares it with the expected `Reachability`, printing both tables on
a mismatch. Then it deletes its policies and restores the labels it changed.

Every matrix is also evaluated by trace (`trace_flow` on the controller's
snapshot: exactly what `stockade trace` runs) and must agree with the packets.
SCTP cannot be probed here — the kernel of these machines has no SCTP sockets —
so SCTP matrices are proven by trace alone, on the same compiled program the
agents load, and the kernel's table is checked to carry the SCTP matches.

Speed: one set of long-running servers (`serve`) per pod and port for the whole
module; 16 probes at a time (each is one client subprocess in the source pod);
a short client timeout, and — as upstream's second try — only the pairs that
disagree are probed once more, with a longer timeout, so a loaded machine does
not fail a case while a real difference still shows twice.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Iterator

import pytest
import yaml

from stockade.client import ControllerClient
from stockade.compile.host import compile_host
from stockade.lab.probe import probe, serve
from tests.e2e.conftest import Lab
from tests.netpol_world import (
    HOSTS,
    PAIRS,
    PODS,
    SERVED,
    Case,
    Check,
    Observed,
    Reachability,
    cases,
    compare,
    netpol,
    nss,
    pod_ip,
    pods,
    trace_matrix,
    world_docs,
)

pytestmark = pytest.mark.kernel

WORKERS = 16
PROBE_TIMEOUT = 0.6
RETRY_TIMEOUT = 1.5
SEEN = {"allowed": True, "denied": False}
CASES = cases()


@dataclass
class World:
    lab: Lab
    netns: dict[str, str]           # pod → its network namespace
    client: ControllerClient
    probes: int = 0                 # probes sent, retries included
    matrices: int = 0               # matrices compared (probed or, for SCTP, traced)


@pytest.fixture(scope="module")
def world(lab: Lab) -> Iterator[World]:
    started = time.monotonic()
    lab.apply_text(yaml.safe_dump_all(world_docs()), "--wait", "--timeout", "90")
    items = lab.json("get", "workloads", "-A")["items"]
    netns = {f"{w['metadata']['namespace']}/{w['metadata']['name']}": w["status"]["netns"] for w in items}
    assert set(PODS) <= set(netns), netns
    with ExitStack() as stack:
        client = stack.enter_context(lab.client())
        for pod in PODS:
            for protocol, port in SERVED:
                stack.enter_context(serve(netns[pod], protocol, port, lifetime=1800))
        w = World(lab, netns, client)
        yield w
        print(f"\nnetpol truth tables: {w.matrices} matrices, {w.probes} probes, "
              f"{time.monotonic() - started:.0f} s with the world's setup")


def _probe_matrix(world: World, check: Check) -> Observed:
    def one(pair: tuple[str, str], timeout: float) -> tuple[tuple[str, str], bool | str]:
        src, dst = pair
        result = probe(world.netns[src], None, pod_ip(dst), check.protocol, check.port,
                       timeout=timeout, reuse_server=True)
        return pair, SEEN.get(result.verdict, result.verdict)

    with ThreadPoolExecutor(WORKERS) as pool:
        observed: Observed = dict(pool.map(lambda p: one(p, PROBE_TIMEOUT), PAIRS))
        again = [p for p in PAIRS if observed[p] is not check.expect.expected[p]]
        observed.update(pool.map(lambda p: one(p, RETRY_TIMEOUT), again))
    world.probes += len(PAIRS) + len(again)
    return observed


def _kernel_carries_sctp(world: World) -> list[str]:
    """Hosts whose compiled program matches SCTP but whose kernel table does not show it."""
    state = world.client.snapshot_state()
    missing = []
    for host in HOSTS:
        compiled = compile_host(state, host)
        if any("sctp" in repr(r) for c in compiled.chains for r in c.rules) or \
                any("sctp" in repr(s.elements) for s in compiled.sets):
            listing = world.lab.nft(host, "list", "table", "inet", "stockade").stdout
            if "sctp" not in listing:
                missing.append(host)
    return missing


def _cleanup(world: World, case: Case) -> None:
    left = case.network_policies_left()
    if left:
        refs = [{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                 "metadata": {"name": name, "namespace": ns}} for ns, name in left]
        path = world.lab.state_dir.parent / f"cleanup-{case.name}.yaml"
        path.write_text(yaml.safe_dump_all(refs))
        world.lab.cli("delete", "-f", str(path), "--wait", "--timeout", "60")
    touched = case.world_docs_touched()
    if touched:
        world.lab.apply_text(yaml.safe_dump_all(touched), "--wait", "--timeout", "60")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_netpol_truth_table(world: World, case: Case) -> None:
    problems: list[str] = []
    try:
        for n, step in enumerate(case.steps, 1):
            if step.put:
                world.lab.apply_text(yaml.safe_dump_all(step.put), "--wait", "--timeout", "60")
            for kind, ns, name in step.delete:
                world.lab.cli("delete", kind.lower(), name, "-n", ns, "--wait", "--timeout", "60")
            state = world.client.snapshot_state()
            for check in step.checks:
                what = f"{case.name}, step {n}, {check.label}"
                traced = trace_matrix(state, check)
                world.matrices += 1
                if check.protocol == "sctp":
                    problems += filter(None, [compare(check.expect, traced, f"{what} by trace (no SCTP sockets)")])
                    missing = _kernel_carries_sctp(world)
                    if missing:
                        problems.append(f"{what}: the kernel table of {missing} has no SCTP match")
                    continue
                probed = _probe_matrix(world, check)
                problems += filter(None, [compare(check.expect, probed, f"{what} by real packets"),
                                          compare(check.expect, traced, f"{what} by trace")])
    finally:
        _cleanup(world, case)
    assert not problems, "\n\n".join(problems)


def test_everything_is_open_again_after_the_cases(world: World) -> None:
    assert world.lab.json("get", "networkpolicies", "-A")["items"] == []
    check = Check("tcp", 81, Reachability())
    assert compare(check.expect, _probe_matrix(world, check), "after every case") is None


def test_stockade_trace_command_agrees_with_packets(world: World) -> None:
    doc = netpol("trace-me", pods("a"), ingress=[{"from": [{"namespaceSelector": nss("y")}],
                                                  "ports": [{"port": "serve-80-tcp"}]}])
    world.lab.apply_text(yaml.safe_dump(doc), "--wait", "--timeout", "60")
    try:
        for src, port, expect in (("y/b", 80, "allow"), ("z/b", 80, "deny"), ("y/c", 81, "deny")):
            traced = world.lab.json("trace", "--from", src, "--to", "x/a", "--port", str(port), "--protocol", "tcp")
            seen = probe(world.netns[src], None, pod_ip("x/a"), "tcp", port, timeout=RETRY_TIMEOUT,
                         reuse_server=True).verdict
            assert (traced["verdict"], seen) == (expect, "allowed" if expect == "allow" else "denied"), traced
            if expect == "allow":
                assert traced["ingress"]["rules"][-1]["rule"] == "x/trace-me/ingress-0"
        # `get networkpolicy -o yaml` serves the object exactly as it was applied, plus (as Kubernetes
        # does) the server's metadata.resourceVersion, which a later apply may send back for a 409 check
        served = yaml.safe_load(world.lab.cli("get", "networkpolicy", "trace-me", "-n", "x", "-o", "yaml").stdout)
        assert int(served["metadata"].pop("resourceVersion")) >= 1
        assert served == doc
    finally:
        world.lab.cli("delete", "networkpolicy", "trace-me", "-n", "x", "--wait", "--timeout", "60")
