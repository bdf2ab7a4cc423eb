"""Issue 13 end to end: a hostile tenant of `ht-a` tries one attack after another, and afterwards
real packets show `ht-b` unchanged, every host enforces a new change of `ht-b` within a second
of its commit, and the audit log holds each refusal without a secret.

The single attacks, each against the code before its fix, live beside this file
(test_tenant_isolation.py, test_dataplane_fail_closed.py) and in tests/controller; here they
run in turn against one lab, as one attacker would.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from stockade.lab.probe import probe
from tests.e2e.conftest import Lab, ipv4, make_lab
from tests.waiting import wait_until

pytestmark = pytest.mark.kernel

WAIT = ("--wait", "--timeout", "60")
VALIDATION, FORBIDDEN = 2, 6  # exit codes of ValidationError and Forbidden (QuotaExceeded is one)

WORLD = """
apiVersion: stockade.io/v1
kind: Namespace
metadata: {name: ht-a}
---
apiVersion: stockade.io/v1
kind: Namespace
metadata: {name: ht-b}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {name: evil, namespace: ht-a, labels: {role: client}}
spec: {host: hv1}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {name: client, namespace: ht-b, labels: {role: client}}
spec: {host: hv1}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {name: web, namespace: ht-b, labels: {tier: web}}
spec: {host: hv2}
---
apiVersion: stockade.io/v1
kind: Group
metadata: {name: web, namespace: ht-b}
spec: {selector: {matchLabels: {tier: web}}}
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: out, namespace: ht-a}
spec:
  appliesTo: {selector: {}}
  egress: [{action: allow}]
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: out, namespace: ht-b}
spec:
  appliesTo: {selector: {matchLabels: {role: client}}}
  egress: [{action: allow}]
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: web, namespace: ht-b}
spec:
  appliesTo: {group: web}
  ingress: [{id: own-clients, action: allow, from: [{selector: {matchLabels: {role: client}}}],
             ports: [{protocol: TCP, port: 80}]}]
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    for lab in make_lab(tmp_path_factory.mktemp("hostile"), hosts=2):
        lab.apply_text(WORLD, *WAIT)
        yield lab


def _verdict(lab: Lab, src: str, dst: str, port: int, **kw: Any) -> str:
    s, d = lab.workload(src), lab.workload(dst)
    return probe(s["status"]["netns"], d["status"]["netns"], ipv4(d), "tcp", port, **kw).verdict


def test_a_hostile_tenant_tries_every_attack_and_changes_nothing(lab: Lab, tmp_path: Path) -> None:
    b_before = {(src, port): _verdict(lab, src, "ht-b/web", port)
                for src, port in (("ht-b/client", 80), ("ht-a/evil", 80), ("ht-b/client", 8080))}
    assert b_before == {("ht-b/client", 80): "allowed", ("ht-a/evil", 80): "denied",
                        ("ht-b/client", 8080): "denied"}
    secret = lab.cli("token", "create", "--role", "tenant", "-n", "ht-a", "--ttl", "1h", "--name", "mallory"
                     ).stdout.strip()
    token_file = tmp_path / "mallory.token"
    token_file.write_text(secret)
    as_a = ("--token-file", str(token_file))
    revision = lab.json("status")["revision"]

    def attempt(text: str, code: int, needle: str) -> None:
        res = lab.apply_text(text, *as_a, check=False)
        assert res.returncode == code and needle in res.stderr, (res.returncode, res.stderr)

    # 1. Take over b's web workloads with a policy of a's namespace: by group, by namespaceSelector.
    attempt("""
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: open-b, namespace: ht-a}
spec: {appliesTo: {group: ht-b/web}, ingress: [{action: allow}]}
""", VALIDATION, "spec.appliesTo.group")
    attempt("""
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: open-b2, namespace: ht-a}
spec:
  appliesTo: {selector: {}, namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ht-b}}}
  ingress: [{action: allow}]
""", VALIDATION, "spec.appliesTo.namespaceSelector")
    # ... or write into b's namespace, or the platform tier, or roll everything back.
    attempt("""
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: web, namespace: ht-b}
spec: {appliesTo: {group: web}, ingress: [{action: allow}]}
""", FORBIDDEN, "ht-b")
    attempt("""
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: sneaky, namespace: ht-a}
spec: {tier: platform, appliesTo: {selector: {}}, ingress: [{action: allow}]}
""", FORBIDDEN, "platform")
    assert lab.cli("rollback", "0", *as_a, check=False).returncode == FORBIDDEN  # would delete b too
    # 2. Freeze a host: take b's interface, or the uplink.
    taken = lab.workload("ht-b/web")["status"]["interface"]
    for name, iface in (("thief", taken), ("uplink", "fab0")):
        attempt(f"""
apiVersion: stockade.io/v1
kind: Workload
metadata: {{name: {name}, namespace: ht-a}}
spec: {{host: hv2, interface: {iface}}}
""", VALIDATION, "spec.interface")
    # 4. Send as b's client from a's workload (its address added to a's own NIC).
    evil, forged = lab.workload("ht-a/evil"), ipv4(lab.workload("ht-b/client"))
    subprocess.run(["ip", "-n", evil["status"]["netns"], "addr", "add", f"{forged}/32", "dev", "eth0"], check=True)
    try:
        assert _verdict(lab, "ht-a/evil", "ht-b/web", 80, src_ip=forged) == "denied"
    finally:
        subprocess.run(["ip", "-n", evil["status"]["netns"], "addr", "del", f"{forged}/32", "dev", "eth0"])
    # 9. Read b's objects, or learn which exist: the same refusal for a name that exists and one that does not.
    for name in ("web", f"nothing-{secrets.token_hex(3)}"):
        res = lab.cli("get", "workload", name, "-n", "ht-b", *as_a, check=False)
        assert res.returncode == FORBIDDEN, (name, res.returncode, res.stderr)
    # 10. Revoke the admin's token.
    admin_id = next(t["id"] for t in lab.json("token", "list") if t["role"] == "admin")
    assert lab.cli("token", "revoke", admin_id, *as_a, check=False).returncode == FORBIDDEN
    # 11. Take the address pool: far more workloads than a namespace may hold.
    many = "\n---\n".join(yaml.safe_dump({"apiVersion": "stockade.io/v1", "kind": "Workload",
                                          "metadata": {"name": f"w{i}", "namespace": "ht-a"},
                                          "spec": {"host": "hv1"}}) for i in range(2500))
    attempt(many, FORBIDDEN, "ht-a")
    # 12. A YAML alias bomb.
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi"))
    bomb_file = tmp_path / "bomb.yaml"
    bomb_file.write_text(bomb)
    res = lab.cli("apply", "-f", str(bomb_file), *as_a, check=False)
    assert res.returncode != 0 and "alias" in res.stderr.lower(), res.stderr

    assert lab.json("status")["revision"] == revision  # not one attack stored anything
    # Afterwards: b is exactly as it was, to real packets ...
    assert {(src, port): _verdict(lab, src, "ht-b/web", port) for src, port in b_before} == b_before
    # ... and every host enforces b's next change within a second of its commit.
    with lab.client() as admin:
        started = time.monotonic()
        committed = admin.apply([yaml.safe_load("""
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: web, namespace: ht-b}
spec:
  appliesTo: {group: web}
  ingress:
    - {id: own-clients, action: allow, from: [{selector: {matchLabels: {role: client}}}], ports: [{protocol: TCP, port: 80}]}
    - {id: alt, action: allow, from: [{selector: {matchLabels: {role: client}}}], ports: [{protocol: TCP, port: 8080}]}
""")], "b opens 8080 to its clients")["revision"]
        wait_until(lambda: all(a["revision"] >= committed and a["inSync"] for a in admin.status()["agents"]),
                   "every host to enforce b's change", timeout=1.0, interval=0.02,
                   describe=lambda: admin.status()["agents"])
        enforced_after = time.monotonic() - started
    assert enforced_after < 1.0
    assert _verdict(lab, "ht-b/client", "ht-b/web", 8080) == "allowed"
    # The audit log holds every refusal, and no secret anywhere.
    entries = [json.loads(line) for line in lab.cli("audit", "-o", "json").stdout.splitlines()]
    # (a refusal of rights is `refused`, bad input `failed`: both are recorded with the actor)
    mallory = [e for e in entries if (e.get("actor") or {}).get("name") == "mallory"
               and e["outcome"] in ("refused", "failed")]
    assert len(mallory) >= 11, [(e["action"], e["status"]) for e in mallory]
    assert {e["status"] for e in mallory} == {403, 422}
    audit_file = (lab.state_dir / "audit.jsonl").read_text()
    for text in (json.dumps(entries), audit_file, lab.logs()):
        assert secret not in text and lab.context().token not in text
