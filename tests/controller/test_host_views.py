"""An agent's token reads its host's view of the state, over real HTTP (issue 13, item 12).

The attack: a host's credential (stolen from a machine a tenant's VM broke out to)
read every tenant's policies, groups, MACs and annotations through snapshot and
watch. Now it reads what its host enforces; see compile.host_view.
"""

from __future__ import annotations

from typing import Any

import pytest

from stockade.client import ControllerClient
from stockade.errors import Gone
from tests.controller.controller_docs import group, namespace, policy, shop, workload


def bank() -> list[dict[str, Any]]:
    """A tenant that runs only on hv2, with a secret group, a policy, a MAC and an annotation."""
    vault = workload("vault", ns="bank", host="hv2", role="vault")
    vault["spec"]["mac"] = "02:00:00:00:0b:01"
    vault["metadata"]["annotations"] = {"contact": "treasury-oncall"}
    return [namespace("bank", team="money"), vault, group("vaults", ns="bank", role="vault"),
            policy("vault-ingress", ns="bank", applies_to="vaults", from_group="vaults")]


def keys(objects: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(o["kind"], o["metadata"].get("namespace") or "", o["metadata"]["name"]) for o in objects}


def test_an_agent_token_cannot_read_the_policies_of_a_tenant_its_host_does_not_run(
        admin: ControllerClient, agent: ControllerClient) -> None:
    admin.apply(shop() + bank(), "two tenants")
    listing = agent.snapshot()
    held = keys(listing["objects"])
    assert ("Policy", "bank", "vault-ingress") not in held and ("Group", "bank", "vaults") not in held
    assert ("Policy", "shop", "web-ingress") in held and ("Group", "shop", "web") in held
    [vault] = [o for o in listing["objects"] if o["metadata"]["name"] == "vault"]
    assert set(vault["spec"]) <= {"host", "ips", "ports"} and vault["spec"]["host"] == "hv2"
    assert list(vault["status"]) == ["ips"] and len(vault["status"]["ips"]) == 2  # assigned: peers need them
    assert "annotations" not in vault["metadata"] and vault["metadata"]["labels"] == {"role": "vault"}
    [bank_ns] = [o for o in listing["objects"] if o["kind"] == "Namespace" and o["metadata"]["name"] == "bank"]
    assert "spec" not in bank_ns
    # The operator still reads the whole state.
    assert ("Policy", "bank", "vault-ingress") in keys(admin.snapshot()["objects"])


def test_a_watch_tells_an_agent_only_what_its_host_holds(admin: ControllerClient, agent: ControllerClient) -> None:
    admin.apply(shop() + bank(), "two tenants")
    listing = agent.snapshot()
    changed = policy("vault-ingress", ns="bank", applies_to="vaults", from_group="vaults", port=8443)
    admin.apply([changed], "bank's change")
    admin.apply([policy("web-ingress", port=8443)], "shop's change")
    answer = agent.watch(listing["revision"], timeout=5, view=listing["view"])
    assert [(e["kind"], e["namespace"], e["name"]) for e in answer["events"]] == [("Policy", "shop", "web-ingress")]
    assert answer["view"] == listing["view"]


def test_the_watch_answers_410_when_the_host_s_view_changes_and_the_new_listing_has_it(
        admin: ControllerClient, agent: ControllerClient) -> None:
    admin.apply(shop() + bank(), "two tenants")
    listing = agent.snapshot()
    admin.apply([workload("teller", ns="bank", host="hv1", role="teller")], "bank comes to hv1")
    with pytest.raises(Gone, match="list again"):
        agent.watch(listing["revision"], timeout=5, view=listing["view"])
    relisted = agent.snapshot()
    assert relisted["view"] != listing["view"]
    assert {("Policy", "bank", "vault-ingress"), ("Group", "bank", "vaults")} <= keys(relisted["objects"])
    assert agent.watch(relisted["revision"], timeout=0, view=relisted["view"])["events"] == []


def test_a_group_of_another_tenant_named_as_a_peer_reaches_the_host_that_needs_it(
        admin: ControllerClient, agent: ControllerClient) -> None:
    admin.apply(shop() + bank(), "two tenants")
    before = agent.snapshot()
    admin.apply([policy("from-vaults", from_group="bank/vaults")], "shop lets bank's vaults in")
    with pytest.raises(Gone):
        agent.watch(before["revision"], timeout=5, view=before["view"])
    after = agent.snapshot()
    held = keys(after["objects"])
    assert ("Group", "bank", "vaults") in held and ("Policy", "bank", "vault-ingress") not in held
