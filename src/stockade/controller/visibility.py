"""What a namespace-scoped caller (a tenant) may see of an answer: pure functions that cut it down.

`rbac` decides *whether* a caller may read something; this module shapes *what* a read
returns when the answer mixes the caller's namespaces with others' (a flow between two
tenants, a host that runs both, a validation problem about an address another tenant holds).
The service applies them to every answer it gives a scoped caller, so the API, the dashboard
and any other entry point share them.

The rules, each with the leak it closes:
- A workload of a namespace the caller may not read keeps its namespace but loses its name
  (`HIDDEN`): the caller sees that its own workload talked to namespace `b`, not to whom.
- A rule id `ns/policy/rule` of such a namespace becomes `ns/HIDDEN`: the other tenant's
  policy and rule names are its own business. Global rule ids (`policy/rule`, written by the
  platform) stay: they are what a tenant quotes when asking why it was denied.
- An agent's error text can name any workload on its host: a tenant sees that there is an
  error, not its text; `notProgrammed` keeps only the caller's workloads; its rule counters are
  dropped (they count every namespace's traffic on the host).

Invariants: never mutates its input; a caller that is not scoped gets the input unchanged.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Mapping

from stockade.controller.diffing import VerdictChange
from stockade.controller.records import AgentStatus, ControllerStatus

HIDDEN = "(hidden)"
HIDDEN_ERROR = "error (details are shown to operators only)"

Visible = Callable[[str], bool]  # namespace → may the caller read it


def workload_ref(ref: str | None, visible: Visible) -> str | None:
    """`ns/name` as the caller may see it: unchanged in its namespaces, else `ns/(hidden)`."""
    if not ref or "/" not in ref:
        return ref
    ns = ref.split("/", 1)[0]
    return ref if visible(ns) else f"{ns}/{HIDDEN}"


def rule_ref(rule: str | None, visible: Visible) -> str | None:
    """A rule id as the caller may see it: another namespace's `ns/policy/rule` → `ns/(hidden)`."""
    if not rule or rule.count("/") < 2:
        return rule  # a global policy's rule (policy/rule), or none
    ns = rule.split("/", 1)[0]
    return rule if visible(ns) else f"{ns}/{HIDDEN}"


def touches(namespaces: Any, visible: Visible) -> bool:
    """Whether any of `namespaces` (None and "" ignored) is one the caller may read."""
    return any(ns and visible(ns) for ns in namespaces)


def flow_record(doc: Mapping[str, Any], visible: Visible) -> dict[str, Any]:
    """A flow record's wire form with the other namespace's end and rule hidden."""
    out = dict(doc)
    for end in ("src", "dst"):
        side = doc.get(end)
        if isinstance(side, Mapping) and side.get("workload"):
            out[end] = {**side, "workload": workload_ref(side["workload"], visible)}
    out["rule"] = rule_ref(doc.get("rule"), visible)
    return out


def verdict_change(change: VerdictChange, visible: Visible) -> VerdictChange:
    return replace(change, src=workload_ref(change.src, visible) or change.src,
                   dst=workload_ref(change.dst, visible) or change.dst,
                   before_rule=rule_ref(change.before_rule, visible),
                   after_rule=rule_ref(change.after_rule, visible))


def agent_status(agent: AgentStatus, visible: Visible) -> AgentStatus:
    report = agent.report
    mine = tuple(n for n in report.not_programmed if visible(n.workload.split("/", 1)[0]))
    moved = {k: h for k, h in report.handoffs.items() if visible(k.split("/", 1)[0])}
    # Rule counters are every namespace's traffic: a tenant reads its own rules' through the rules
    # view (controller.rule_hits), never a host's whole map.
    report = replace(report, error=HIDDEN_ERROR if report.error else None, not_programmed=mine, endpoints={},
                     handoffs=moved, rule_counters={}, rule_counters_omitted=0)
    return replace(agent, report=report)


def controller_status(status: ControllerStatus, visible: Visible) -> ControllerStatus:
    return replace(status, agents=tuple(agent_status(a, visible) for a in status.agents))
