"""A host credential registers the workloads its runtimes attach, and nothing else (issue 16).

The CNI plugin or a hypervisor hook on host hv1 holds hv1's agent token. With it, over real HTTP
against the real controller: a Workload on hv1 marked `stockade.io/attached-by` can be created
(addresses from IPAM), relabelled and deleted. Every attack below is refused with 403 and
changes nothing: a workload on another host, moving one there, one without the mark, one an
administrator placed on hv1, a policy, a rollback.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from stockade.client import ControllerClient
from stockade.controller.main import RunningController
from stockade.errors import Forbidden, NotFoundError
from tests.controller.conftest import admin, agent, config, controller, short_dir, tokens  # noqa: F401 (fixtures)

NS = {"apiVersion": "stockade.io/v1", "kind": "Namespace", "metadata": {"name": "pods"}}


def workload(name: str, host: str = "hv1", mark: bool = True, **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "pods", "labels": labels or {"app": name}}
    if mark:
        meta["annotations"] = {"stockade.io/attached-by": "stockade-cni"}
    return {"apiVersion": "stockade.io/v1", "kind": "Workload", "metadata": meta,
            "spec": {"host": host, "interface": f"stk{name[:10]}"}}


@pytest.fixture
def host_credential(controller: RunningController, tokens: dict[str, str],  # noqa: F811
                    admin: ControllerClient) -> Iterator[ControllerClient]:  # noqa: F811
    admin.apply([NS])
    with ControllerClient(controller.url, tokens["agent-hv1"]) as client:
        yield client


def test_a_host_registers_relabels_and_removes_the_workloads_it_attaches(
        host_credential: ControllerClient, admin: ControllerClient) -> None:  # noqa: F811
    assert host_credential.apply([workload("c1")])["results"][0]["action"] == "created"
    stored = next(o for o in host_credential.snapshot()["objects"] if o["metadata"]["name"] == "c1")
    assert stored["status"]["ips"]  # IPAM gave it addresses
    host_credential.apply([workload("c1", app="web")])
    assert admin.list("Workload", "pods", "c1")["items"][0]["metadata"]["labels"] == {"app": "web"}
    host_credential.delete([("Workload", "pods", "c1")])
    assert admin.list("Workload", "pods")["items"] == []
    authors = [r["author"] for r in admin.revisions(3)]
    assert authors == ["agent-hv1"] * 3


def _refused(client: ControllerClient, admin: ControllerClient, write: Any, words: str) -> None:  # noqa: F811
    before = admin.revisions(1)[0]["revision"]
    with pytest.raises(Forbidden, match=words):
        write(client)
    assert admin.revisions(1)[0]["revision"] == before


def test_every_other_write_with_a_host_credential_is_refused_and_audited(
        host_credential: ControllerClient, admin: ControllerClient) -> None:  # noqa: F811
    host_credential.apply([workload("mine")])
    admin.apply([workload("placed", mark=False)])  # an administrator's workload on hv1
    admin.apply([workload("elsewhere", host="hv2")])
    attacks = [
        (lambda c: c.apply([workload("far", host="hv2")]), "on host 'hv2'"),
        (lambda c: c.apply([workload("mine", host="hv2")]), "new workload is on host 'hv2'"),
        (lambda c: c.apply([workload("bare", mark=False)]), "no stockade.io/attached-by"),
        (lambda c: c.apply([workload("placed", app="admin-ish")]), "stored workload has no stockade.io/attached-by"),
        (lambda c: c.delete([("Workload", "pods", "placed")]), "stored workload has no"),
        (lambda c: c.delete([("Workload", "pods", "elsewhere")]), "stored workload is on host 'hv2'"),
        (lambda c: c.apply([{"apiVersion": "stockade.io/v1", "kind": "Policy",
                             "metadata": {"name": "open", "namespace": "pods"},
                             "spec": {"appliesTo": {"selector": {}}, "ingress": [{"action": "allow"}]}}]),
         "registers only Workloads"),
        (lambda c: c.apply([{**NS, "metadata": {"name": "pods", "labels": {"x": "y"}}}]), "registers only Workloads"),
        (lambda c: c.rollback(1), "may not change objects"),
    ]
    for write, words in attacks:
        _refused(host_credential, admin, write, words)
    refused = [e for e in admin.audit() if e["outcome"] == "refused" and (e.get("actor") or {}).get("name") == "agent-hv1"]
    assert len(refused) == len(attacks)


def test_a_host_reads_back_the_workloads_on_its_own_host_and_nothing_else(
        host_credential: ControllerClient, admin: ControllerClient) -> None:  # noqa: F811
    host_credential.apply([workload("c1")])
    admin.apply([workload("elsewhere", host="hv2"), workload("placed", mark=False)])
    mine = host_credential.list("Workload", "pods", "c1")["items"]
    assert [w["metadata"]["name"] for w in mine] == ["c1"] and mine[0]["status"]["ips"]
    # Every workload of its host (an administrator's too: the host runs it), none of another host.
    assert sorted(w["metadata"]["name"] for w in host_credential.list("Workload")["items"]) == ["c1", "placed"]
    with pytest.raises(NotFoundError):  # the same answer as for a name nobody has
        host_credential.list("Workload", "pods", "elsewhere")
    with pytest.raises(NotFoundError):
        host_credential.list("Workload", "pods", "nobody")
    for kind in ("Policy", "Group", "Namespace", "GlobalPolicy"):
        with pytest.raises(Forbidden, match="reads only the Workloads on its own host"):
            host_credential.list(kind)
