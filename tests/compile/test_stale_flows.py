"""Which connections a change must end: addresses that changed hands, and the workloads of a
policy with enforceEstablished at its rollout (pure; the kernel side is tests/security)."""

from __future__ import annotations

from typing import Any

from stockade.compile.stale_flows import FlowMemory
from stockade.model.kinds import parse_object
from stockade.model.state import DesiredState

V1 = "stockade.io/v1"


def ns(name: str) -> dict[str, Any]:
    return {"apiVersion": V1, "kind": "Namespace", "metadata": {"name": name}}


def wl(name: str, namespace: str, host: str, ip: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": V1, "kind": "Workload", "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"host": host, "ips": [ip]}}


def pol(name: str, namespace: str, enforce: bool, port: int = 80) -> dict[str, Any]:
    return {"apiVersion": V1, "kind": "Policy", "metadata": {"name": name, "namespace": namespace},
            "spec": {"appliesTo": {"selector": {"matchLabels": {"tier": "db"}}}, "enforceEstablished": enforce,
                     "ingress": [{"action": "allow", "ports": [{"protocol": "TCP", "port": port}]}]}}


def state(revision: int, *docs: dict[str, Any]) -> DesiredState:
    return DesiredState.from_objects(revision, [parse_object(d) for d in docs])


BASE = (ns("a"), ns("b"), wl("db", "a", "hv1", "198.18.10.1", tier="db"), wl("web", "a", "hv2", "198.18.10.2"))


def test_the_first_state_ends_nothing() -> None:
    assert FlowMemory().forget(state(1, *BASE), "hv1") == set()


def test_a_deleted_workloads_addresses_are_forgotten_on_every_host() -> None:
    for host in ("hv1", "hv2", "hv9"):
        memory = FlowMemory()
        memory.forget(state(1, *BASE), host)
        assert memory.forget(state(2, *BASE[:3]), host) == {"198.18.10.2"}


def test_an_address_handed_to_another_tenant_is_forgotten_and_an_unchanged_one_is_not() -> None:
    memory = FlowMemory()
    memory.forget(state(1, *BASE), "hv1")
    moved = (*BASE[:3], wl("other", "b", "hv2", "198.18.10.2"))
    assert memory.forget(state(2, *moved), "hv1") == {"198.18.10.2"}
    assert memory.forget(state(3, *moved), "hv1") == set()


def test_a_policy_with_enforce_established_cuts_its_local_workloads_at_rollout_only() -> None:
    memory = FlowMemory()
    memory.forget(state(1, *BASE), "hv1")
    assert memory.forget(state(2, *BASE, pol("p", "a", enforce=True)), "hv1") == {"198.18.10.1"}
    assert memory.forget(state(3, *BASE, pol("p", "a", enforce=True)), "hv1") == set()   # unchanged
    assert memory.forget(state(4, *BASE, pol("p", "a", enforce=True, port=81)), "hv1") == {"198.18.10.1"}
    other_host = FlowMemory()
    other_host.forget(state(1, *BASE), "hv2")
    assert other_host.forget(state(2, *BASE, pol("p", "a", enforce=True)), "hv2") == set()  # db is on hv1


def test_by_default_a_new_policy_keeps_established_connections() -> None:
    memory = FlowMemory()
    memory.forget(state(1, *BASE), "hv1")
    assert memory.forget(state(2, *BASE, pol("p", "a", enforce=False)), "hv1") == set()
