"""One object the kernel refuses does not stop a host from enforcing everyone else (issue 13, item 2).

Validation and the compiler keep every refusal they know of from the kernel, so the fault
is injected: the driver's command runner answers as the kernel does when it refuses a
transaction ("Error: Could not process rule: ...") whenever a program holds one
workload's interface, and hands every other command (checks and commits) to the real
nftables in a network namespace of the test's own.
"""

from __future__ import annotations

import subprocess
from typing import Any, Iterator

import pytest

from stockade.agent.reconciler import Reconciler
from stockade.dataplane.nft_driver import NftDriver
from stockade.model.kinds import parse_object
from stockade.model.state import DesiredState
from tests.kernel_table import Netns, scratch_netns, set_elements

pytestmark = pytest.mark.kernel

HOST = "hv1"
REFUSED_PORT = "stkodd0"
KERNEL_REFUSAL = ("Error: Could not process rule: Numerical result out of range\n"
                  "add rule inet stockade ...\n^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n")


class RefusingNetns(Netns):
    """The real nft in the namespace, except for programs that hold REFUSED_PORT."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.refused: list[list[str]] = []

    def runner(self, cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        if stdin is not None and REFUSED_PORT in stdin:
            self.refused.append(cmd)
            return subprocess.CompletedProcess(cmd, 1, "", KERNEL_REFUSAL)
        return super().runner(cmd, stdin)

    def rule_comments(self) -> set[str]:
        return {item["rule"]["comment"] for item in self.listing("inet", "stockade")
                if "rule" in item and "comment" in item["rule"]}


@pytest.fixture
def netns() -> Iterator[RefusingNetns]:
    with scratch_netns("stkr") as ns:
        yield RefusingNetns(ns.name)


def doc(kind: str, name: str, ns: str | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, **({"namespace": ns} if ns else {})}
    return {"apiVersion": "stockade.io/v1", "kind": kind, "metadata": meta, "spec": spec}


def state(revision: int, web_port: int) -> DesiredState:
    docs = [
        doc("Namespace", "shop"), doc("Namespace", "other"),
        doc("Workload", "web", "shop", host=HOST, ips=["198.18.60.1"], interface="stkweb0"),
        doc("Workload", "odd", "other", host=HOST, ips=["198.18.60.2"], interface=REFUSED_PORT),
        doc("Workload", "db", "other", host=HOST, ips=["198.18.60.3"], interface="stkdb0"),
        doc("Policy", "web-in", "shop", appliesTo={"selector": {}},
            ingress=[{"id": "http", "action": "allow", "ports": [{"port": web_port}]}]),
        doc("Policy", "all-in", "other", appliesTo={"selector": {}}, ingress=[{"id": "any", "action": "allow"}]),
    ]
    return DesiredState.from_objects(revision, [parse_object(d, i) for i, d in enumerate(docs)])


def test_a_workload_whose_program_the_kernel_refuses_is_left_out_and_reported(netns: Netns) -> None:
    reconciler = Reconciler(NftDriver(runner=netns.runner), HOST)
    outcome = reconciler.reconcile(state(1, web_port=80))
    [left_out] = outcome.not_programmed
    assert left_out.workload == "other/odd"
    assert left_out.reason == ("the kernel refused this workload's part of the program: "
                               "Error: Could not process rule: Numerical result out of range")
    # Everyone else is enforced, its own namespace's neighbour too, and the refused workload's
    # port is one without a program: dropped by the fail-closed rules, not open.
    assert {"shop/web-in/http", "other/all-in/any"} <= netns.rule_comments()
    assert set_elements(netns.listing("inet", "stockade"), "workload_ifaces") == {"stkweb0", "stkdb0"}
    assert len(netns.refused) >= 2  # the commit, then the checks that found it
    # The host goes on enforcing later changes.
    changed = reconciler.reconcile(state(2, web_port=8080))
    assert [n.workload for n in changed.not_programmed] == ["other/odd"]
    assert reconciler.in_sync()
    listing = netns.runner(["nft", "list", "table", "inet", "stockade"]).stdout
    assert "dport 8080" in listing and "dport 80 " not in listing
