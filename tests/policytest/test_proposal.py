"""Proposed states: addresses as the controller would assign them, and refusals naming object and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade.controller.config import ControllerConfig
from stockade.controller.wiring import open_service
from stockade.errors import ValidationError
from stockade.policytest import proposed_state
from tests.policytest.examples import example_documents, problems_of


def test_proposal_assigns_the_addresses_the_controller_would(tmp_path: Path) -> None:
    docs = example_documents()
    offline = proposed_state(docs)
    service = open_service(ControllerConfig(db_path=tmp_path / "db.sqlite"))
    try:
        service.apply(docs, "test", "fresh store")
        stored = service.desired_state()
    finally:
        service.close()
    addresses = {k: offline.workload_ips(w) for k, w in offline.workloads.items()}
    assert addresses == {k: stored.workload_ips(w) for k, w in stored.workloads.items()}
    assert addresses[("shop", "web-2")] == ["198.18.64.1", "2001:db8:64::1"]  # first without spec.ips
    assert addresses[("shop", "web-1")] == ["198.18.10.11", "2001:db8:10::11"]  # spec.ips kept


def test_proposal_refuses_bad_shape_naming_object_and_field() -> None:
    docs = example_documents()
    docs.append({"apiVersion": "stockade.io/v1", "kind": "Policy", "metadata": {"name": "x", "namespace": "shop"},
                 "spec": {"appliesTo": {"group": "web"}, "ingress": [{"action": "allow", "colour": "red"}]}})
    with pytest.raises(ValidationError) as exc:
        proposed_state(docs)
    assert problems_of(exc) == {(f"Policy shop/x (document {len(docs)})", "spec.ingress[0].colour")}


def test_proposal_refuses_dangling_references_naming_object_and_field() -> None:
    docs = example_documents()
    docs.append({"apiVersion": "stockade.io/v1", "kind": "Policy", "metadata": {"name": "x", "namespace": "shop"},
                 "spec": {"appliesTo": {"group": "nosuch"}, "tier": "nosuch"}})
    with pytest.raises(ValidationError) as exc:
        proposed_state(docs)
    assert problems_of(exc) == {("Policy shop/x", "spec.appliesTo.group"), ("Policy shop/x", "spec.tier")}


def test_proposal_refuses_an_object_given_twice() -> None:
    docs = example_documents()
    docs.append(docs[0])
    with pytest.raises(ValidationError, match="appears twice"):
        proposed_state(docs)



def test_proposal_refuses_a_policy_applying_to_another_namespace() -> None:
    docs = example_documents()
    docs.append({"apiVersion": "stockade.io/v1", "kind": "Policy", "metadata": {"name": "x", "namespace": "ops"},
                 "spec": {"appliesTo": {"group": "shop/web"}, "ingress": [{"action": "allow"}]}})
    with pytest.raises(ValidationError) as exc:
        proposed_state(docs)
    assert problems_of(exc) == {("Policy ops/x", "spec.appliesTo.group")}


def test_proposal_refuses_two_workloads_on_one_interface() -> None:
    docs = example_documents()
    for name in ("vm-1", "vm-2"):
        docs.append({"apiVersion": "stockade.io/v1", "kind": "Workload", "metadata": {"name": name, "namespace": "shop"},
                     "spec": {"host": "hv1", "interface": "tap3"}})
    with pytest.raises(ValidationError) as exc:
        proposed_state(docs)
    assert problems_of(exc) == {("Workload shop/vm-1", "spec.interface"), ("Workload shop/vm-2", "spec.interface")}

