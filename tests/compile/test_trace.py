"""trace: the verdict and deciding rules, evaluated on the compiled host programs (no kernel needed)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockade.compile import trace as compiled
from stockade.compile.host import CompileOptions
from stockade.compile.trace import Flow, trace_flow
from stockade.errors import NotFoundError
from stockade.model.kinds import parse_object
from stockade.model.objects import Workload
from stockade.model.state import DesiredState
from stockade.model.validation import ValidationSettings, validate_state
from tests import policy_reference as ref

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "three-tier"


@pytest.fixture(scope="module")
def shop() -> DesiredState:
    objects = []
    n = 100
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            obj = parse_object(doc)
            if isinstance(obj, Workload) and not obj.spec.ips:
                n += 1  # what the controller's IPAM would do
                obj = obj.model_copy(update={"status": {"ips": [f"198.18.64.{n}", f"2001:db8:64::{n}"]}})
            objects.append(obj)
    return DesiredState.from_objects(1, objects)


def test_allowed_flow_names_the_egress_and_ingress_rules(shop: DesiredState) -> None:
    result = trace_flow(shop, Flow(("shop", "lb-1"), ("shop", "web-2"), "tcp", 8080))
    assert result.verdict == "allow"
    assert [r["rule"] for r in result.egress.rules] == ["shop/lb/to-web"]
    assert result.ingress is not None and [r["rule"] for r in result.ingress.rules] == ["shop/web/http-from-lb"]
    assert (result.egress.host, result.ingress.host) == ("hv1", "hv2")
    assert result.deciding_rule == "shop/web/http-from-lb"


def test_egress_default_deny_stops_before_ingress(shop: DesiredState) -> None:
    result = trace_flow(shop, Flow(("shop", "web-1"), ("shop", "db-1"), "tcp", 5432))
    assert result.verdict == "deny"
    assert result.ingress is None
    assert result.deciding_rule == "shop/default-deny/egress"


def test_ingress_default_deny_when_egress_allows(shop: DesiredState) -> None:
    # the bastion may send SSH anywhere in the shop, but only port 22: to 5432 its own egress denies
    assert trace_flow(shop, Flow(("ops", "bastion"), ("shop", "db-1"), "tcp", 5432)).verdict == "deny"
    # app may reach db on 5432 (egress allows) — and db's ingress allows app
    assert trace_flow(shop, Flow(("shop", "app-1"), ("shop", "db-1"), "tcp", 5432)).verdict == "allow"
    # db -> app: db has no egress rule at all
    assert trace_flow(shop, Flow(("shop", "db-1"), ("shop", "app-1"), "tcp", 9000)).deciding_rule == \
        "shop/default-deny/egress"


def test_named_port_resolves_on_the_destination(shop: DesiredState) -> None:
    assert trace_flow(shop, Flow(("shop", "lb-1"), ("shop", "web-1"), "tcp", 8080)).verdict == "allow"
    assert trace_flow(shop, Flow(("shop", "lb-1"), ("shop", "web-1"), "tcp", 8081)).verdict == "deny"


def test_icmp_by_type_and_family(shop: DesiredState) -> None:
    assert trace_flow(shop, Flow(("ops", "bastion"), ("shop", "web-1"), "icmp", family=4)).verdict == "allow"
    assert trace_flow(shop, Flow(("ops", "bastion"), ("shop", "web-1"), "icmp", family=6)).verdict == "allow"
    # an ICMP type other than echo request is not allowed by `type: 8`
    assert trace_flow(shop, Flow(("ops", "bastion"), ("shop", "web-1"), "icmp", family=4,
                                 icmp_type=13)).verdict == "deny"


def test_unknown_workload_is_not_found(shop: DesiredState) -> None:
    with pytest.raises(NotFoundError, match="shop/nope"):
        trace_flow(shop, Flow(("shop", "nope"), ("shop", "web-1"), "tcp", 80))


# ------------------------------------------------- differential: trace against the reference evaluator
# Differential test without a kernel: trace (the compiled programs) against the reference evaluator.
#
# Random policies (tests/policy_reference.py) over a fixed world of six
# workloads in two namespaces (one `deny`, one `allowUntilSelected`) and a Tier
# ordered before platform; for each, a handful of random flows (TCP, UDP, ICMP
# of several types, IPv4 and IPv6, same and cross host). `trace_flow` runs the
# very Ruleset the agents render into the kernel; the reference evaluator reads
# the YAML as the spec describes it. They must give the same verdict and the
# same rules on the way (audit `would-*`, `log`, `pass`, then the deciding rule),
# egress and ingress. tests/e2e/test_differential.py adds real packets.

RANDOM_EXAMPLES = 300
FLOWS_PER_EXAMPLE = 8


def build_state(policies: list[dict[str, Any]]) -> DesiredState:
    docs = ref.world_documents() + policies
    state = DesiredState.from_objects(1, [parse_object(d, i) for i, d in enumerate(docs)])
    problems = validate_state(state, ValidationSettings())
    assert not problems, f"the generator made an invalid policy: {problems}\n{ref.policy_yaml(policies)}"
    return state


def trace_steps(side: compiled.SideTrace | None) -> list[tuple[str, str]] | None:
    return None if side is None else [(r["rule"], r["action"]) for r in side.rules]


def ref_steps(side: ref.Side | None) -> list[tuple[str, str]] | None:
    return None if side is None else side.steps


def disagreement(policies: list[dict[str, Any]], flow: ref.Flow, traced: compiled.TraceResult,
                 expected: ref.Answer) -> str:
    return (f"trace and the reference evaluator disagree on {flow}\n"
            f"  trace:     {traced.verdict}  egress {trace_steps(traced.egress)}  "
            f"ingress {trace_steps(traced.ingress)}\n"
            f"  reference: {expected.verdict}  egress {ref_steps(expected.egress)}  "
            f"ingress {ref_steps(expected.ingress)}\n"
            f"policies:\n{ref.policy_yaml(policies)}")


def check(state: DesiredState, policies: list[dict[str, Any]], flow: ref.Flow) -> str:
    traced = compiled.trace_flow(state, compiled.Flow(flow.src, flow.dst, flow.protocol, flow.port,
                                                      flow.family, flow.icmp_type))
    expected = ref.evaluate(policies, flow)
    agree = (traced.verdict == expected.verdict
             and trace_steps(traced.egress) == ref_steps(expected.egress)
             and trace_steps(traced.ingress) == ref_steps(expected.ingress))
    assert agree, disagreement(policies, flow, traced, expected)
    return expected.verdict


def test_trace_agrees_with_the_reference_evaluator_on_random_policies() -> None:
    tally: Counter[str] = Counter()

    @settings(max_examples=RANDOM_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(policies=ref.policy_sets(max_size=5),
           flows=st.lists(ref.flows(icmp_types=True), min_size=FLOWS_PER_EXAMPLE, max_size=FLOWS_PER_EXAMPLE))
    def differential(policies: list[dict[str, Any]], flows: list[ref.Flow]) -> None:
        state = build_state(policies)
        tally["examples"] += 1
        for flow in flows:
            tally[check(state, policies, flow)] += 1
            tally["flows"] += 1

    differential()
    print(f"\ntrace vs reference: {tally['examples']} policy sets, {tally['flows']} flows "
          f"(allow {tally['allow']}, deny {tally['deny']}, reject {tally['reject']})")
    assert tally["examples"] >= RANDOM_EXAMPLES and tally["flows"] > 0
    # the generator must exercise every verdict, or the comparison proves little
    assert min(tally["allow"], tally["deny"], tally["reject"]) > 0.02 * tally["flows"], tally


def test_reference_evaluator_knows_the_spec_examples() -> None:
    """The reference itself, on hand-made cases: a wrong oracle would make the differential test moot."""
    w1, w2, w4 = ("red", "w1"), ("red", "w2"), ("blue", "w4")
    platform_pass = {"apiVersion": "stockade.io/v1", "kind": "GlobalPolicy", "metadata": {"name": "a"},
                     "spec": {"tier": "platform", "appliesTo": {"selector": {}},
                              "ingress": [{"action": "pass", "ports": [{"protocol": "TCP", "port": 80}]}]}}
    platform_deny = {"apiVersion": "stockade.io/v1", "kind": "GlobalPolicy", "metadata": {"name": "b"},
                     "spec": {"tier": "platform", "appliesTo": {"selector": {}},
                              "ingress": [{"id": "no", "action": "deny"}]}}
    web = {"selector": {"matchLabels": {"role": "web"}}}
    app_allow = {"apiVersion": "stockade.io/v1", "kind": "Policy", "metadata": {"name": "c", "namespace": "red"},
                 "spec": {"appliesTo": {"selector": {}}, "egress": [{"action": "allow"}],
                          "ingress": [{"action": "allow", "from": [web]}]}}
    pols = [platform_pass, platform_deny, app_allow]
    passed = ref.evaluate(pols, ref.Flow(w1, w2, "tcp", 80))
    assert passed.verdict == "allow" and passed.ingress is not None
    assert passed.ingress.steps == [("a/ingress-0", "pass"), ("red/c/ingress-0", "accept")]
    not_passed = ref.evaluate(pols, ref.Flow(w1, w2, "tcp", 81)).ingress
    assert not_passed is not None and not_passed.steps == [("b/no", "drop")]
    # blue is allowUntilSelected: nothing selects w4 for egress; red's default denies w1's ingress
    # for a blue source (app_allow's selector peer stays in red)
    assert ref.evaluate([], ref.Flow(w4, w1, "udp", 80)).egress.steps == [("blue/default-allow/egress", "accept")]
    assert ref.evaluate([app_allow], ref.Flow(w4, w1, "tcp", 81)).verdict == "deny"
    audit = {**app_allow, "spec": {**app_allow["spec"], "mode": "audit"}}
    assert ref.evaluate([audit], ref.Flow(w1, w2, "icmp", None, 6)).egress.steps == \
        [("red/c/egress-0", "would-allow"), ("red/default-deny/egress", "drop")]


def test_flow_logging_changes_no_verdict_and_no_trace_step() -> None:
    """With a log group every decision logs behind a rate-limited twin; trace must not see it."""
    logged = CompileOptions(log_group=100)

    @settings(max_examples=60, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(policies=ref.policy_sets(max_size=5),
           flows=st.lists(ref.flows(icmp_types=True), min_size=4, max_size=4))
    def same(policies: list[dict[str, Any]], flows: list[ref.Flow]) -> None:
        state = build_state(policies)
        for flow in flows:
            f = compiled.Flow(flow.src, flow.dst, flow.protocol, flow.port, flow.family, flow.icmp_type)
            plain, with_log = compiled.trace_flow(state, f), compiled.trace_flow(state, f, logged)
            assert with_log.verdict == plain.verdict
            assert trace_steps(with_log.egress) == trace_steps(plain.egress)
            assert trace_steps(with_log.ingress) == trace_steps(plain.ingress)

    same()
