"""The rules view route: tiers -> policies -> rules with their hit counters (controller.rule_hits
decides what the caller may see; this only translates)."""

from typing import Annotated, Any

from fastapi import APIRouter, Query

from stockade.controller.routes.deps import API, ERROR_RESPONSES, Reader
from stockade.controller.rule_hits import MAX_RULE_ID, RuleHitsView
from stockade.controller.schemas import RulesResponse


def router(view: RuleHitsView) -> APIRouter:
    r = APIRouter(tags=["rules"])

    @r.get(f"{API}/rules", response_model=RulesResponse, responses=ERROR_RESPONSES)
    def rules(principal: Reader,
              rule: Annotated[str | None, Query(max_length=MAX_RULE_ID,
                                                description="only this rule (ns/policy/rule)")] = None
              ) -> dict[str, Any]:
        """Tiers, their policies in evaluation order and each rule with what the hosts counted for it
        (packets, bytes, per host), the flow records naming it, for audit rules what they would deny,
        and whether it is unused; then the namespaces' default rules. A tenant sees its namespaces'
        policies only."""
        return view.rules(principal, rule or None).to_dict()

    return r
