"""Issue 13 in the real kernel: one tenant can neither open another's workloads nor freeze a host.

One lab (two hypervisors) for the module. Tenant `iso-a` acts with a tenant token of its own;
the verdicts are real packets between the workloads' namespaces (`lab.probe`). Clients run on
hv1 and b's server on hv2, so b's ingress is decided by hv2's kernel, the host a tenant of a
would have to take over.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Iterator

import pytest

from stockade.lab.probe import probe
from stockade.model.kinds import parse_object
from stockade.model.naming import workload_interface
from tests.e2e.conftest import Lab, make_lab
from tests.waiting import wait_until

pytestmark = pytest.mark.kernel

WAIT = ("--wait", "--timeout", "60")
VALIDATION_EXIT = 2  # errors.ValidationError.exit_code

WORLD = """
apiVersion: stockade.io/v1
kind: Namespace
metadata: {name: iso-a}
---
apiVersion: stockade.io/v1
kind: Namespace
metadata: {name: iso-b}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {name: client, namespace: iso-a, labels: {role: client}}
spec: {host: hv1}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {name: client, namespace: iso-b, labels: {role: client}}
spec: {host: hv1}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {name: web, namespace: iso-b, labels: {tier: web}}
spec: {host: hv2}
---
apiVersion: stockade.io/v1
kind: Group
metadata: {name: clients, namespace: iso-a}
spec: {selector: {matchLabels: {role: client}}}
---
apiVersion: stockade.io/v1
kind: Group
metadata: {name: clients, namespace: iso-b}
spec: {selector: {matchLabels: {role: client}}}
---
apiVersion: stockade.io/v1
kind: Group
metadata: {name: web, namespace: iso-b}
spec: {selector: {matchLabels: {tier: web}}}
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: out, namespace: iso-a}
spec:
  appliesTo: {group: clients}
  egress: [{action: allow}]
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: out, namespace: iso-b}
spec:
  appliesTo: {group: clients}
  egress: [{action: allow}]
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: web, namespace: iso-b}
spec:
  appliesTo: {group: web}
  ingress: [{id: http-from-own-clients, action: allow, from: [{group: clients}], ports: [{protocol: TCP, port: 80}]}]
"""

B_WEB_POLICY = WORLD[WORLD.index("apiVersion: stockade.io/v1\nkind: Policy\nmetadata: {name: web, namespace: iso-b}"):]

# b opens its web workloads to a's clients on 8080, as b may: a peer may name another namespace.
B_OPENS_8080_TO_A = """
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: web, namespace: iso-b}
spec:
  appliesTo: {group: web}
  ingress:
    - {id: http-from-own-clients, action: allow, from: [{group: clients}], ports: [{protocol: TCP, port: 80}]}
    - {id: alt-from-a, action: allow, from: [{group: iso-a/clients}], ports: [{protocol: TCP, port: 8080}]}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    yield from make_lab(tmp_path_factory.mktemp("isolation"), hosts=2)


@pytest.fixture(scope="module")
def world(lab: Lab) -> dict[str, dict[str, Any]]:
    lab.apply_text(WORLD, *WAIT)
    items = lab.json("get", "workloads", "-A")["items"]
    return {f"{w['metadata']['namespace']}/{w['metadata']['name']}": w for w in items}


@pytest.fixture(scope="module")
def tenant_a(lab: Lab) -> tuple[str, str]:
    """`--token T` of a tenant of iso-a only."""
    secret = lab.cli("token", "create", "--role", "tenant", "-n", "iso-a", "--ttl", "1h",
                     "--name", "iso-a-dev").stdout.strip()
    return "--token", secret


def seen(world: dict[str, dict[str, Any]], src: str, dst: str, port: int) -> str:
    """The verdict real TCP packets get from `src` to `dst`:`port` (a server listens there)."""
    s, d = world[src], world[dst]
    ip = next(a for a in d["status"]["ips"] if ipaddress.ip_address(a).version == 4)
    return probe(s["status"]["netns"], d["status"]["netns"], ip, "tcp", port, timeout=1.0).verdict


def refused(lab: Lab, text: str, token: tuple[str, str], field: str) -> None:
    res = lab.apply_text(text, *token, check=False)
    assert res.returncode == VALIDATION_EXIT, (res.returncode, res.stdout, res.stderr)
    assert field in res.stderr, res.stderr


def test_tenant_cannot_open_another_tenants_workloads(lab: Lab, world: dict[str, dict[str, Any]],
                                                      tenant_a: tuple[str, str]) -> None:
    assert seen(world, "iso-b/client", "iso-b/web", 80) == "allowed"   # b's own policy works
    assert seen(world, "iso-a/client", "iso-b/web", 8080) == "denied"  # and denies a
    revision = lab.json("status")["revision"]
    refused(lab, """
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: x, namespace: iso-a}
spec:
  appliesTo: {group: iso-b/web}
  ingress: [{action: allow}]
""", tenant_a, "Policy iso-a/x: spec.appliesTo.group")
    refused(lab, """
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: y, namespace: iso-a}
spec:
  appliesTo: {selector: {}, namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: iso-b}}}
  ingress: [{action: allow}]
""", tenant_a, "spec.appliesTo.namespaceSelector")
    assert lab.json("status")["revision"] == revision                  # nothing stored
    assert lab.cli("get", "policy", "x", "-n", "iso-a", check=False).returncode == 3
    # Real packets: b's workload still denies what b's policy denies.
    assert seen(world, "iso-a/client", "iso-b/web", 8080) == "denied"
    assert seen(world, "iso-a/client", "iso-b/web", 80) == "denied"


def test_tenant_cannot_freeze_a_host_and_the_host_keeps_enforcing(lab: Lab, world: dict[str, dict[str, Any]],
                                                                  tenant_a: tuple[str, str]) -> None:
    web = world["iso-b/web"]
    taken = web["status"].get("interface") or workload_interface(parse_object(web))  # type: ignore[arg-type]
    for name, iface in (("thief", taken), ("uplink", "fab0"), ("loop", "lo"), ("nic", "eth0")):
        refused(lab, f"""
apiVersion: stockade.io/v1
kind: Workload
metadata: {{name: {name}, namespace: iso-a}}
spec: {{host: hv2, interface: {iface}}}
""", tenant_a, f"Workload iso-a/{name}: spec.interface")
    # hv2 still takes new changes: b opens 8080 to a's clients, and real packets see it at once.
    try:
        lab.apply_text(B_OPENS_8080_TO_A, "--wait", "--timeout", "10")
        wait_until(lambda: seen(world, "iso-a/client", "iso-b/web", 8080) == "allowed",
                   "hv2 to enforce b's new rule", timeout=5.0, interval=0.2)
        agents = {a["host"]: a for a in lab.json("status")["agents"]}
        assert agents["hv2"]["inSync"] and not agents["hv2"]["error"], agents["hv2"]
        assert agents["hv2"]["notProgrammed"] == []
    finally:  # b's policy as the module's world has it, for the other tests in whatever order
        lab.apply_text(B_WEB_POLICY, "--wait", "--timeout", "60")
