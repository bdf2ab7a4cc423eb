"""Fixtures for lab tests: a unique prefix per lab, and everything it made removed, even on failure."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Iterator

import pytest

from stockade.lab import endpoints, naming, netns, topology
from stockade.model.state import DesiredState
from tests.lab.helpers import SHOP, state


def new_prefix() -> str:
    return "t" + secrets.token_hex(3)[:5]


@pytest.fixture
def prefix() -> Iterator[str]:
    """A fresh lab prefix; every `<prefix>-*` netns (and process inside) is gone after the test."""
    p = new_prefix()
    try:
        yield p
    finally:
        topology.teardown(p)
        assert netns.list_netns(naming.lab_netns_prefix(p)) == []


@dataclass
class Lab:
    prefix: str
    hosts: int
    state: DesiredState

    def netns(self, name: str, host: str, namespace: str = "shop") -> str:
        return naming.workload_netns(self.prefix, host, namespace, name)

    def hv(self, host: str) -> str:
        return naming.host_netns(self.prefix, host)

    def apply(self, new_state: DesiredState) -> dict[str, endpoints.ReconcileReport]:
        """Reconcile every hypervisor to `new_state`, as each agent would."""
        self.state = new_state
        reports = {}
        for i in range(1, self.hosts + 1):
            host = naming.host_name(i)
            plan = endpoints.plan_endpoints(new_state, host, self.prefix)
            reports[host] = endpoints.reconcile(plan, self.prefix, host)
            assert reports[host].errors == {}, reports[host].errors
        return reports


def make_lab(prefix: str, hosts: int = 2, desired: DesiredState | None = None) -> Lab:
    topology.build(prefix, hosts)
    lab = Lab(prefix, hosts, DesiredState(0))
    lab.apply(desired if desired is not None else state(1, *SHOP))
    return lab


@pytest.fixture
def lab(prefix: str) -> Lab:
    """Two hypervisors; web-1 and web-2 on hv1, db-1 on hv2. For tests that change it."""
    return make_lab(prefix)


@pytest.fixture(scope="module")
def shared_lab() -> Iterator[Lab]:
    """The same lab, shared by a module's tests that only send packets."""
    p = new_prefix()
    try:
        yield make_lab(p)
    finally:
        topology.teardown(p)
        assert netns.list_netns(naming.lab_netns_prefix(p)) == []
