"""Check expectations against a DesiredState, each with `trace_flow`. Pure.

An expectation that names a workload the state does not have, or a family the
workload has no address in, is a broken test, not a failed one: all of those
are refused together (ValidationError) before any flow is traced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from stockade.compile.trace import Programs, TraceResult, trace_flow
from stockade.errors import FieldProblem, ValidationError
from stockade.model.state import DesiredState
from stockade.policytest.expectations import Expectation


@dataclass(frozen=True)
class Outcome:
    expectation: Expectation
    trace: TraceResult

    @property
    def got(self) -> str:
        return self.trace.verdict

    @property
    def passed(self) -> bool:
        return self.got == self.expectation.expect

    @property
    def deciding_rule(self) -> str | None:
        return self.trace.deciding_rule

    @property
    def deciding_side(self) -> str:
        """Which side's program decided: ingress runs only once egress let the packet go."""
        return "ingress" if self.trace.egress.verdict == "allow" and self.trace.ingress else "egress"

    def to_dict(self) -> dict[str, Any]:
        return {**self.expectation.to_dict(), "got": self.got, "passed": self.passed,
                "deciding_rule": self.deciding_rule, "deciding_side": self.deciding_side,
                "trace": self.trace.to_dict()}


@dataclass(frozen=True)
class Report:
    revision: int
    outcomes: tuple[Outcome, ...]

    @property
    def passed(self) -> int:
        return sum(o.passed for o in self.outcomes)

    @property
    def failed(self) -> int:
        return len(self.outcomes) - self.passed

    @property
    def misses(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if not o.passed)

    def summary(self) -> str:
        return f"{self.passed} passed, {self.failed} failed"

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "failed": self.failed, "revision": self.revision,
                "results": [o.to_dict() for o in self.outcomes]}


def reference_problems(state: DesiredState, expectations: Sequence[Expectation]) -> list[FieldProblem]:
    """Entries whose workloads, or addresses in the asked family, the state does not have."""
    problems: list[FieldProblem] = []
    for e in expectations:
        for field, key in (("from", e.src), ("to", e.dst)):
            wl = state.workloads.get(key)
            if wl is None:
                problems.append(FieldProblem(e.ref, field, f"workload {key[0]}/{key[1]} does not exist"))
            elif not any(_family(ip) == e.family for ip in state.workload_ips(wl)):
                problems.append(FieldProblem(e.ref, "family",
                                             f"workload {key[0]}/{key[1]} has no IPv{e.family} address"))
    return problems


def _family(ip: str) -> int:
    return 6 if ":" in ip else 4


def evaluate(state: DesiredState, expectations: Sequence[Expectation]) -> Report:
    problems = reference_problems(state, expectations)
    if problems:
        raise ValidationError(problems)
    programs: Programs = {}  # each host is compiled once for the whole file
    return Report(state.revision, tuple(Outcome(e, trace_flow(state, e.flow, programs=programs))
                                        for e in expectations))
