"""Safe change end to end, in a real lab: diff (objects and observed flows whose verdict would
change), history, rollback enforced in the kernel (real packets), the 409 on a stale
resourceVersion, a tenant token refused outside its rights, and the audit log of it all."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from stockade.controller.store.archive import read_backup
from stockade.lab.probe import probe
from tests.e2e.conftest import EXAMPLES, Lab, make_lab
from tests.waiting import wait_until

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    for lab in make_lab(tmp_path_factory.mktemp("safe"), hosts=2):
        lab.cli("apply", "-f", str(EXAMPLES), "--wait", "--timeout", "60", "-m", "the shop")
        yield lab


def _lb_to_web(lab: Lab) -> str:
    src, dst = lab.workload("shop/lb-1"), lab.workload("shop/web-1")
    ip = next(ip for ip in dst["status"]["ips"] if ":" not in ip)
    return probe(src["status"]["netns"], dst["status"]["netns"], ip, "tcp", 8080, timeout=1.0).verdict


def _policies_text() -> str:
    return (EXAMPLES / "30-policies.yaml").read_text()


def _lb_to_web_recorded(lab: Lab) -> bool:
    """Has the controller received a flow record of lb-1 -> web-1:8080 (what `diff` replays)?"""
    with lab.client() as client:
        records = client.flows(workload="shop/lb-1", limit=1000)["records"]
    return any(r["src"]["workload"] == "shop/lb-1" and r["dst"]["workload"] == "shop/web-1"
               and r["dst"]["port"] == 8080 for r in records)


def test_diff_history_rollback_enforced_in_the_kernel(shop: Lab, tmp_path: Path) -> None:
    assert _lb_to_web(shop) == "allowed"
    wait_until(lambda: _lb_to_web_recorded(shop), "the controller to hold the flow record of lb-1 -> web-1:8080")
    before = shop.client().revisions(1)[0]["revision"]

    changed = tmp_path / "changed.yaml"
    changed.write_text(_policies_text().replace("port: http}]          # named port", "port: 9999}]  #"))
    res = shop.cli("diff", "-f", str(changed), "-o", "json", check=False)
    assert res.returncode == 1, res.stderr              # differences, like diff(1)
    diff = json.loads(res.stdout)
    assert diff["revision"] == before
    actions = {(o["namespace"], o["name"]): o["action"] for o in diff["objects"]}
    assert actions[("shop", "lb")] == "configured" and actions[("shop", "web")] == "unchanged"
    lb = next(o for o in diff["objects"] if o["name"] == "lb")
    assert lb["fields"] == [{"path": "spec.egress[0].ports[0].port", "op": "change", "old": "http", "new": 9999}]
    assert {"src": "shop/lb-1", "dst": "shop/web-1", "protocol": "tcp", "port": 8080, "before": "allow",
            "after": "deny"}.items() <= next(f for f in diff["flows"] if f["src"] == "shop/lb-1").items()
    assert shop.client().revisions(1)[0]["revision"] == before    # diff stored nothing

    shop.cli("apply", "-f", str(changed), "-m", "lb only to 9999", "--wait")
    assert _lb_to_web(shop) == "denied"
    history = shop.json("history", "--limit", "2")
    assert history[0]["message"] == "lb only to 9999" and history[0]["author"] == "lab-admin"
    assert history[0]["objects"] == [{"type": "PUT", "kind": "Policy", "namespace": "shop", "name": "lb"}]

    out = shop.cli("rollback", str(before), "--wait").stdout
    assert "Policy shop/lb configured" in out
    assert _lb_to_web(shop) == "allowed"                # the rollback is enforced by the kernel
    latest = shop.json("history", "--limit", "1")[0]
    assert latest["revision"] == before + 2 and latest["message"] == f"rollback to revision {before}"
    assert "nothing to do" in shop.cli("rollback", str(before)).stdout   # already equal: no revision
    entries = [json.loads(line) for line in shop.cli("audit", "-o", "json").stdout.splitlines()]
    assert any(e["action"] == "rollback" and e["outcome"] == "ok" and e.get("revision") == before + 2
               for e in entries), entries[-3:]


def test_stale_resource_version_is_refused_and_changes_nothing(shop: Lab, tmp_path: Path) -> None:
    # A policy of its own (selecting nothing), so that no other test sees its edits.
    name = f"stale-{secrets.token_hex(3)}"
    shop.apply_text(yaml.safe_dump({
        "apiVersion": "stockade.io/v1", "kind": "Policy", "metadata": {"name": name, "namespace": "shop"},
        "spec": {"order": 100, "appliesTo": {"selector": {"matchLabels": {"tier": "nobody"}}},
                 "ingress": [{"action": "allow", "from": [{"cidr": "198.19.0.0/16"}]}]}}))
    got = shop.json("get", "policy", name, "-n", "shop")
    version = got["metadata"]["resourceVersion"]
    doc = {k: v for k, v in got.items() if k != "status"}
    doc["metadata"] = {k: v for k, v in doc["metadata"].items() if k in ("name", "namespace", "resourceVersion")}
    doc["spec"]["order"] = 101
    first = tmp_path / "first.yaml"
    first.write_text(yaml.safe_dump(doc))
    shop.cli("apply", "-f", str(first))                  # based on the current version: accepted
    doc["spec"]["order"] = 102                           # a second writer still holding the old version
    stale = tmp_path / "stale.yaml"
    stale.write_text(yaml.safe_dump(doc))
    revision = shop.client().revisions(1)[0]["revision"]
    res = shop.cli("apply", "-f", str(stale), check=False)
    assert res.returncode == 4, res.stderr               # ConflictError
    assert f"resourceVersion {version} is stale" in res.stderr
    assert shop.client().revisions(1)[0]["revision"] == revision
    assert shop.json("get", "policy", name, "-n", "shop")["spec"]["order"] == 101
    shop.cli("delete", "policy", name, "-n", "shop")


def test_tenant_token_is_scoped_and_every_refusal_is_audited(shop: Lab, tmp_path: Path) -> None:
    tenant = shop.cli("token", "create", "--role", "tenant", "-n", "shop", "--ttl", "1h", "--name", "shop-dev")
    secret = tenant.stdout.strip()
    assert secret.startswith("stk_") and "\n" not in secret   # the token alone on stdout
    env_token = ["--token", secret]
    platform = tmp_path / "platform.yaml"
    platform.write_text(yaml.safe_dump({
        "apiVersion": "stockade.io/v1", "kind": "Policy", "metadata": {"name": "sneaky", "namespace": "shop"},
        "spec": {"tier": "platform", "appliesTo": {"group": "web"},
                 "ingress": [{"action": "allow", "from": [{"cidr": "198.18.0.0/15"}]}]}}))
    res = shop.cli("apply", "-f", str(platform), *env_token, check=False)
    assert res.returncode == 6 and "tier 'platform'" in res.stderr     # Forbidden
    res = shop.cli("get", "policies", "-n", "ops", *env_token, check=False)
    assert res.returncode == 6
    assert shop.cli("get", "policies", "-n", "shop", *env_token).returncode == 0

    ref = json.loads(shop.cli("token", "list", "-o", "json").stdout)
    tid = next(t["id"] for t in ref if t["name"] == "shop-dev")
    shop.cli("token", "revoke", tid)
    res = shop.cli("get", "policies", "-n", "shop", *env_token, check=False)
    assert res.returncode == 5 and "revoked" in res.stderr             # Unauthorized

    entries = [json.loads(line) for line in shop.cli("audit", "-o", "json").stdout.splitlines()]
    refused = [e for e in entries if e["outcome"] == "refused"]
    assert any(e["status"] == 403 and e["action"] == "apply" and e["actor"]["name"] == "shop-dev"
               and "platform" in e["reason"] for e in refused)
    assert any(e["status"] == 401 and "revoked" in e["reason"] for e in refused)
    assert any(e["action"] == "token.revoke" and e["detail"]["id"] == tid for e in entries)
    recent = [json.loads(line) for line in shop.cli("audit", "--since", "1h", "-o", "json").stdout.splitlines()]
    assert recent == entries                              # durations work as in `flows --since`
    assert shop.cli("audit", "--since", "5m-ago", check=False).returncode == 2
    audit_file = (shop.state_dir / "audit.jsonl").read_text()
    admin_token = shop.context().token
    for text in (json.dumps(entries), audit_file, shop.logs()):
        assert secret not in text and admin_token not in text


def test_a_restored_backup_is_what_every_host_enforces_again(shop: Lab, tmp_path: Path) -> None:
    """The store is lost after a change; the backup from before it is restored into a new store.
    Every agent enforces a revision newer than the backup's, of the old store: each takes the
    restored state (the new store's lineage names the old one) rather than holding its program,
    and new changes go on from the backup's revision, with numbers the agents saw before."""
    assert _lb_to_web(shop) == "allowed"
    backup = tmp_path / "shop.backup"
    shop.cli("backup", str(backup))
    taken = read_backup(backup)
    changed = tmp_path / "changed.yaml"
    changed.write_text(_policies_text().replace("port: http}]          # named port", "port: 9999}]  #"))
    shop.cli("apply", "-f", str(changed), "--wait", "--timeout", "60", "-m", "after the backup")
    assert _lb_to_web(shop) == "denied"

    db = shop.state_dir / "controller.db"
    lost = shop.state_dir / f"lost-{secrets.token_hex(3)}"
    lost.mkdir()
    shop.kill9("controller")
    for f in shop.state_dir.glob("controller.db*"):
        f.rename(lost / f.name)
    restored = shop.cli("restore", str(backup), "--store", f"sqlite:{db}")
    assert f"restored from {taken.cluster_id}" in restored.stdout
    shop.cli("lab", "up", "--hosts", "2")

    def back_at_the_backup() -> bool:
        agents = shop.json("status")["agents"]
        return len(agents) == 2 and all(a["inSync"] and not a.get("error") and a["revision"] == taken.revision
                                        for a in agents)

    wait_until(back_at_the_backup, "every agent to enforce the restored revision, without a store conflict",
               timeout=30, describe=lambda: shop.json("status"))
    assert _lb_to_web(shop) == "allowed"
    assert [r["revision"] for r in shop.client().revisions()][:1] == [taken.revision]

    # The next change takes the number the lost change had; the agents enforce it, not what they saw.
    shop.cli("apply", "-f", str(changed), "--wait", "--timeout", "60", "-m", "again")
    assert shop.client().revisions(1)[0]["revision"] == taken.revision + 1
    assert _lb_to_web(shop) == "denied"
    shop.cli("apply", "-f", str(EXAMPLES / "30-policies.yaml"), "--wait", "--timeout", "60", "-m", "as before")
    assert _lb_to_web(shop) == "allowed"
