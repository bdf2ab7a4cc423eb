"""Per-namespace quotas: no tenant can take the address pool, or more than its share, from everyone
else (issue 13, item 11)."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path
from typing import Any, Iterator

import pytest

from stockade.client import ControllerClient
from stockade.controller.api import build_app
from stockade.controller.config import ControllerConfig
from stockade.controller.main import RunningController, start_in_thread
from stockade.errors import Forbidden, QuotaExceeded, ValidationError
from tests.controller.controller_docs import API, namespace, policy, workload

POOL = ipaddress.IPv4Network("198.18.64.0/26")  # 62 addresses; a quarter is 15


def quota_namespace(name: str, **quota: int) -> dict[str, Any]:
    doc = namespace(name)
    doc["spec"] = {"quota": quota}
    return doc


@pytest.fixture
def small(config: ControllerConfig, short_dir: Path) -> Iterator[RunningController]:
    cfg = dataclasses.replace(config, ipv4_pool=POOL, namespace_workloads=20, namespace_policies=2)
    running = start_in_thread(cfg, app=build_app(cfg))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def clients(small: RunningController, tokens: dict[str, str]) -> Iterator[tuple[ControllerClient, ControllerClient]]:
    with ControllerClient(small.url, tokens["alice"]) as admin:
        admin.apply([namespace("shop"), namespace("bank")], "tenants")
        secret = admin.create_token("tenant", ["shop"], name="shop-team")["token"]
        with ControllerClient(small.url, secret) as tenant:
            yield admin, tenant


def _workloads(n: int, ns: str = "shop", start: int = 0) -> list[dict[str, Any]]:
    return [workload(f"w{i}", ns) for i in range(start, start + n)]


def test_one_tenant_cannot_take_the_address_pool_from_everyone(clients: tuple[ControllerClient, ControllerClient]
                                                               ) -> None:
    """Before quotas, one apply of 62 workloads took every address of the pool."""
    admin, tenant = clients
    before = admin.healthz()["revision"]
    with pytest.raises(QuotaExceeded) as caught:
        tenant.apply(_workloads(16), "take a lot")
    message = caught.value.message
    assert "namespace 'shop'" in message and "16 addresses" in message and "quota of 15" in message
    assert caught.value.http_status == 403
    assert admin.healthz()["revision"] == before and admin.list("workloads", "shop")["items"] == []
    # Up to its share is fine, and the other namespaces still get addresses.
    tenant.apply(_workloads(15), "my share")
    admin.apply(_workloads(15, "bank"), "the bank's share")
    [refused] = [e for e in admin.audit() if e["status"] == 403]
    assert refused["actor"]["name"] == "shop-team" and "quota" in refused["reason"]


def test_addresses_written_in_spec_count_against_the_share(clients: tuple[ControllerClient, ControllerClient]
                                                           ) -> None:
    admin, tenant = clients
    mine = [workload(f"s{i}", ips=[str(POOL[10 + i])]) for i in range(16)]
    with pytest.raises(QuotaExceeded, match="16 addresses"):
        tenant.apply(mine, "squat the pool by hand")


def test_workload_and_policy_quotas_from_the_controller_defaults(
        clients: tuple[ControllerClient, ControllerClient]) -> None:
    admin, tenant = clients
    outside_pool = [workload(f"x{i}", ips=[f"198.18.1.{i + 1}"]) for i in range(21)]
    with pytest.raises(QuotaExceeded, match=r"namespace 'shop' would hold 21 workloads, over its quota of 20 "
                                            r"\(the controller's default; an admin may set spec.quota.workloads"):
        tenant.apply(outside_pool, "")
    tenant.apply([workload("web-1", web="x")] + [{"apiVersion": API, "kind": "Group",
                                                "metadata": {"name": "web", "namespace": "shop"},
                                                "spec": {"selector": {"matchLabels": {"web": "x"}}}}], "")
    tenant.apply([policy("p1"), policy("p2")], "")
    with pytest.raises(QuotaExceeded, match="3 policies, over its quota of 2"):
        tenant.apply([policy("p3")], "")
    assert len(admin.list("policies", "shop")["items"]) == 2


def test_an_admin_sets_a_namespace_quota_and_a_tenant_cannot_raise_it(
        clients: tuple[ControllerClient, ControllerClient]) -> None:
    admin, tenant = clients
    with pytest.raises(Forbidden, match="may not write Namespace"):
        tenant.apply([quota_namespace("shop", addresses=60, workloads=100)], "raise my own quota")
    admin.apply([quota_namespace("shop", addresses=30, workloads=100)], "shop needs more")
    tenant.apply(_workloads(30), "up to the new quota")
    with pytest.raises(QuotaExceeded, match=r"31 addresses, over its quota of 30 \(Namespace shop spec.quota"):
        tenant.apply(_workloads(1, start=30), "")


def test_lowering_a_quota_below_what_a_namespace_holds_refuses_growth_but_not_edits_or_deletes(
        clients: tuple[ControllerClient, ControllerClient]) -> None:
    admin, tenant = clients
    tenant.apply(_workloads(10), "")
    admin.apply([quota_namespace("shop", workloads=5)], "shrink")  # allowed: an admin's decision
    with pytest.raises(QuotaExceeded):
        tenant.apply(_workloads(1, start=10), "grow")
    relabelled = workload("w0", tier="web")
    tenant.apply([relabelled], "edit one")
    tenant.delete([("workload", "shop", "w9")], "shrink")
    assert len(admin.list("workloads", "shop")["items"]) == 9


def test_a_bad_quota_is_422_naming_the_field(clients: tuple[ControllerClient, ControllerClient]) -> None:
    admin, _ = clients
    with pytest.raises(ValidationError) as caught:
        admin.apply([quota_namespace("shop", workloads=-1)], "")
    assert any(p.field.startswith("spec.quota.workloads") for p in caught.value.problems), caught.value.problems
    with pytest.raises(ValidationError):
        admin.apply([quota_namespace("shop", cpus=3)], "")
