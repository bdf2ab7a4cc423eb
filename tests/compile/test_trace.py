"""trace: the verdict and deciding rules, evaluated on the compiled host programs (no kernel needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stockade.compile.trace import Flow, trace_flow
from stockade.errors import NotFoundError
from stockade.model.kinds import parse_object
from stockade.model.objects import Workload
from stockade.model.state import DesiredState

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
