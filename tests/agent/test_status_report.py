"""What the agent reports about its program, without a kernel: the reconciler is the seam
(the agent takes it as an argument), and here it is one that compiles and applies nothing."""

from __future__ import annotations

from typing import Any

from stockade.agent.loop import Agent, AgentConfig
from stockade.agent.reconciler import Outcome
from stockade.compile.host import compile_host_program
from stockade.model.kinds import parse_object
from stockade.model.state import DesiredState


class CompilingReconciler:
    """Compiles like the real one and says what it would apply; programs nothing."""

    applied = None

    def reconcile(self, state: DesiredState) -> Outcome:
        compiled = compile_host_program(state, "hv1")
        return Outcome("full", state.revision, "hash", 1, 0.0, False, compiled.not_programmed)


class RecordingClient:
    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []

    def report_status(self, host: str, report: dict[str, Any]) -> None:
        self.reports.append(report)


def _state(*interfaces: str) -> DesiredState:
    docs: list[dict[str, Any]] = [{"apiVersion": "stockade.io/v1", "kind": "Namespace", "metadata": {"name": "a"}}]
    for i, iface in enumerate(interfaces):
        docs.append({"apiVersion": "stockade.io/v1", "kind": "Workload",
                     "metadata": {"name": f"w{i}", "namespace": "a"},
                     "spec": {"host": "hv1", "ips": [f"198.18.10.{i + 1}"], "interface": iface}})
    return DesiredState.from_objects(3, [parse_object(d) for d in docs])


def test_report_lists_workloads_the_program_leaves_out_and_clears_them_when_fixed() -> None:
    client = RecordingClient()
    agent = Agent(AgentConfig(host="hv1"), client, CompilingReconciler())  # type: ignore[arg-type]
    failed, reported = agent._step(_state("tap1", "tap1", "fab0"))
    assert (failed, reported) == (False, True)
    report = client.reports[-1]
    assert report["inSync"] is True and report["error"] is None  # the rest of the host is enforced
    assert [n["object"] for n in report["notProgrammed"]] == ["a/w1", "a/w2"]
    assert "tap1" in report["notProgrammed"][0]["reason"] and "a/w0" in report["notProgrammed"][0]["reason"]
    assert "fab0" in report["notProgrammed"][1]["reason"]
    agent._step(_state("tap1", "tap2"))
    assert client.reports[-1]["notProgrammed"] == []
