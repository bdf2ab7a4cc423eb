"""Issue 7: every role against every kind of object and tier, over real HTTP against the real controller.

Allowed writes succeed; every other write is 403 and changes nothing (revision and object as
before); requests without a token or with a bad, expired or revoked one are 401; every one of
those lands in the audit log (store and JSON-lines file) with no secret in it, nor in the logs.
Then the safe-change tools over HTTP: resourceVersion (409), history, rollback, diff, and the
body and rule-count limits.

The matrix shares one controller (module scope) and records what it did in a ledger that the
audit test checks entry by entry; the safe-change tests each get a fresh controller.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from stockade.controller.api import build_app
from stockade.controller.auth import create_token_file
from stockade.controller.config import ControllerConfig
from stockade.controller.ratelimit import AuthFailureLimits
from stockade.controller.main import RunningController, start_in_thread
from stockade.model.validation import ValidationSettings

API = "/api/v1"
V1 = "stockade.io/v1"
MAX_BODY = 64 * 1024
HOSTS = frozenset({"hv1", "hv2"})

# ------------------------------------------------------------------ documents


def ns_doc(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": V1, "kind": "Namespace", "metadata": {"name": name, "labels": labels or {"t": name}}}


def tier_doc(name: str, order: int) -> dict[str, Any]:
    return {"apiVersion": V1, "kind": "Tier", "metadata": {"name": name}, "spec": {"order": order}}


def workload_doc(name: str, ns: str, host: str = "hv1") -> dict[str, Any]:
    return {"apiVersion": V1, "kind": "Workload",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name}}, "spec": {"host": host}}


def group_doc(name: str, ns: str) -> dict[str, Any]:
    return {"apiVersion": V1, "kind": "Group", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": name}}}}


def _rules(port: int) -> list[dict[str, Any]]:
    return [{"action": "allow", "ports": [{"protocol": "TCP", "port": port}]}]


def policy_doc(name: str, ns: str, tier: str = "application", port: int = 443) -> dict[str, Any]:
    return {"apiVersion": V1, "kind": "Policy", "metadata": {"name": name, "namespace": ns},
            "spec": {"tier": tier, "appliesTo": {"group": "web"}, "ingress": _rules(port)}}


def global_policy_doc(name: str) -> dict[str, Any]:
    return {"apiVersion": V1, "kind": "GlobalPolicy", "metadata": {"name": name},
            "spec": {"tier": "platform", "appliesTo": {"selector": {"matchLabels": {"app": name}}},
                     "ingress": _rules(22)}}


def cluster_policy_doc(name: str) -> dict[str, Any]:
    """An upstream ClusterNetworkPolicy (issue 17): a platform object, like a GlobalPolicy."""
    return {"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
            "metadata": {"name": name},
            "spec": {"tier": "Admin", "priority": 5, "subject": {"namespaces": {"matchLabels": {"team": "a"}}},
                     "ingress": [{"name": "deny-all", "action": "Deny", "from": [{"namespaces": {}}]}]}}


def admin_policy_doc(name: str) -> dict[str, Any]:
    return {"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy",
            "metadata": {"name": name},
            "spec": {"priority": 5, "subject": {"namespaces": {"matchLabels": {"team": "a"}}},
                     "ingress": [{"name": "deny-all", "action": "Deny", "from": [{"namespaces": {}}]}]}}


def netpol_doc(name: str, ns: str) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"podSelector": {"matchLabels": {"app": name}},
                     "ingress": [{"ports": [{"protocol": "TCP", "port": 80}]}]}}


# ------------------------------------------------------------------ harness


@dataclass
class Controller:
    """A running controller, its tokens (plaintext, by role label), and what the tests did to it."""

    running: RunningController
    http: httpx.Client
    tokens: dict[str, str]
    audit_file: Path
    secrets: set[str] = field(default_factory=set)        # every plaintext token the tests ever held
    ledger: list[dict[str, Any]] = field(default_factory=list)  # what the audit log must show
    logs: list[str] = field(default_factory=list)

    def call(self, token: str | None, method: str, path: str, body: Any = None,
             params: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        return self.http.request(method, path, json=body, params=params, headers=h)

    def admin(self, method: str, path: str, body: Any = None, **params: Any) -> dict[str, Any]:
        r = self.call(self.tokens["admin"], method, path, body, params or None)
        assert r.status_code == 200, r.text
        return r.json()

    def revision(self) -> int:
        return int(self.http.get("/healthz").json()["revision"])

    def get(self, kind: str, name: str, ns: str | None = None) -> dict[str, Any] | None:
        """The object as the admin reads it, or None when it does not exist."""
        params = {"name": name, **({"namespace": ns} if ns else {})}
        r = self.call(self.tokens["admin"], "GET", f"{API}/objects/{kind}", params=params)
        if r.status_code == 404:
            return None
        assert r.status_code == 200, r.text
        [item] = r.json()["items"]
        return item

    def new_token(self, **body: Any) -> tuple[str, dict[str, Any]]:
        out = self.admin("POST", f"{API}/tokens", body)
        self.secrets.add(out["token"])
        self.ledger.append({"action": "token.create", "status": 200, "outcome": "ok", "method": "POST",
                            "path": f"{API}/tokens", "actor": "root"})
        return out["token"], out["info"]

    def expect(self, r: httpx.Response, status: int, actor: str | None, action: str,
               reason: str | None = None) -> None:
        """Check the answer and note what the audit log must hold for it."""
        assert r.status_code == status, (r.status_code, r.text)
        entry: dict[str, Any] = {"action": action, "status": status, "method": r.request.method,
                                 "path": r.request.url.path, "actor": actor,
                                 "outcome": "ok" if status == 200 else "refused"}
        if status == 200 and action in ("apply", "delete", "rollback"):
            body = r.json()
            entry["revision"] = body["revision"]
            entry["objects"] = [o for o in body["results"] if o["action"] != "unchanged"]
        if reason is not None:
            entry["reason"] = reason
        self.ledger.append(entry)


class _ListHandler(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.sink.append(f"{record.name}: {text}")


def _start(tmp: Path, file_tokens: list[dict[str, Any]]) -> tuple[RunningController, dict[str, str], Path]:
    tokens = create_token_file(tmp / "tokens.json", file_tokens)
    config = ControllerConfig(db_path=tmp / "stockade.db", tokens_file=tmp / "tokens.json",
                              validation=ValidationSettings(known_hosts=HOSTS),
                              audit_log=tmp / "audit.jsonl", max_body_bytes=MAX_BODY,
                              # This module sends hundreds of bad tokens from 127.0.0.1 on purpose, to
                              # see each 401 audited; the failure rate limit has tests of its own.
                              auth_failures=AuthFailureLimits(burst=100_000))
    return start_in_thread(config, app=build_app(config)), tokens, tmp / "audit.jsonl"


@pytest.fixture(scope="module")
def world() -> Iterator[Controller]:
    """One controller for the matrix: namespaces a and b and a group `web` in each (each
    update/move/delete case creates the object it starts from). Tokens from both sources: admin,
    viewer, agent and a file token to revoke from the tokens file; network-admin and tenant-a from the API."""
    tmp = Path(tempfile.mkdtemp(prefix="stk-rbac-"))
    sink: list[str] = []
    handler = _ListHandler(sink)
    root, stockade_log = logging.getLogger(), logging.getLogger("stockade")
    old_level = stockade_log.level
    root.addHandler(handler)
    stockade_log.setLevel(logging.DEBUG)
    running, file_tokens, audit_file = _start(tmp, [
        {"name": "root", "role": "admin"},
        {"name": "vera", "role": "viewer"},
        {"name": "agent-hv1", "role": "agent", "host": "hv1"},
        {"name": "carol", "role": "viewer"},            # revoked by name in test_revoking_a_file_token
    ])
    http = httpx.Client(base_url=running.url, timeout=10.0)
    ctl = Controller(running, http, {"admin": file_tokens["root"], "viewer": file_tokens["vera"],
                                     "agent": file_tokens["agent-hv1"], "carol": file_tokens["carol"]},
                     audit_file, secrets=set(file_tokens.values()), logs=sink)
    try:
        ctl.tokens["network-admin"], _ = ctl.new_token(role="network-admin", name="netadmin")
        ctl.tokens["tenant-a"], info = ctl.new_token(role="tenant", namespaces=["a"], name="tenant-a")
        assert info["namespaces"] == ["a"] and info["source"] == "api"
        setup: list[dict[str, Any]] = [ns_doc("a"), ns_doc("b"), group_doc("web", "a"), group_doc("web", "b"),
                                       policy_doc("a-visible", "a"), policy_doc("b-visible", "b")]
        r = ctl.call(ctl.tokens["admin"], "POST", f"{API}/apply", {"documents": setup, "message": "setup"})
        ctl.expect(r, 200, "root", "apply")
        yield ctl
    finally:
        http.close()
        running.stop()
        root.removeHandler(handler)
        stockade_log.setLevel(old_level)
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------ 1. the write matrix

ROLES = ("admin", "network-admin", "tenant-a", "viewer", "agent")
ACTOR = {"admin": "root", "network-admin": "netadmin", "tenant-a": "tenant-a", "viewer": "vera",
         "agent": "agent-hv1"}

ADMINS = frozenset({"admin", "network-admin"})
TENANT_TOO = ADMINS | {"tenant-a"}

# Who may do each write: written out here, not derived from rbac.py. Tenant-a owns namespace a only.
ALLOWED: dict[str, frozenset[str]] = {
    "create-namespace": ADMINS,
    "create-tier": ADMINS,
    "create-globalpolicy": ADMINS,
    "create-cnp": ADMINS,                       # ClusterNetworkPolicy: cluster-wide, never a tenant's
    "create-anp": ADMINS,                       # AdminNetworkPolicy (v1alpha1): the same
    "create-workload-a": TENANT_TOO,
    "create-group-a": TENANT_TOO,
    "create-policy-a": TENANT_TOO,              # application tier
    "create-netpol-a": TENANT_TOO,
    "create-workload-b": ADMINS,                # another tenant's namespace
    "create-group-b": ADMINS,
    "create-policy-b": ADMINS,
    "create-netpol-b": ADMINS,
    "create-policy-a-platform": ADMINS,
    "create-policy-a-baseline": ADMINS,
    "update-policy-a": TENANT_TOO,              # application → application, new port
    "move-policy-a-platform-to-application": ADMINS,
    "move-policy-a-application-to-platform": ADMINS,
    "delete-policy-a-platform": ADMINS,
    "delete-policy-a-application": TENANT_TOO,
    "delete-workload-b": ADMINS,
}


@dataclass(frozen=True)
class Write:
    op: str                                        # apply or delete
    kind: str
    ns: str | None
    name: str
    doc: dict[str, Any] | None = None              # for apply
    check: Callable[[dict[str, Any]], bool] | None = None   # on success, what the stored object shows
    seed: dict[str, Any] | None = None             # the object an update, move or delete starts from


def _tier_of(doc: dict[str, Any]) -> str:
    return str(doc["spec"].get("tier", "application"))


# create-<what>-<namespace>: the kind, the name prefix and the document of each
NAMESPACED_CREATES: dict[str, tuple[str, str, Callable[[str, str], dict[str, Any]]]] = {
    "workload": ("Workload", "wl", workload_doc), "group": ("Group", "grp", group_doc),
    "policy": ("Policy", "pol", policy_doc), "netpol": ("NetworkPolicy", "np", netpol_doc),
}


def write_for(target: str, role: str, tag: str = "") -> Write:
    """The write of `target` by `role`. Names carry the role and `tag`, so that the same case run
    by another test (with its own tag) touches objects of its own: no case depends on which ran first."""
    i = ROLES.index(role)
    who = f"{role}{tag}"
    match target:
        case "create-namespace":
            return Write("apply", "Namespace", None, f"ns-{who}", ns_doc(f"ns-{who}"))
        case "create-tier":
            order = 200 + i + (50 if tag else 0)
            return Write("apply", "Tier", None, f"tier-{who}", tier_doc(f"tier-{who}", order))
        case "create-globalpolicy":
            return Write("apply", "GlobalPolicy", None, f"gp-{who}", global_policy_doc(f"gp-{who}"))
        case "create-cnp":
            return Write("apply", "ClusterNetworkPolicy", None, f"cnp-{who}", cluster_policy_doc(f"cnp-{who}"))
        case "create-anp":
            return Write("apply", "AdminNetworkPolicy", None, f"anp-{who}", admin_policy_doc(f"anp-{who}"))
        case "create-workload-a" | "create-workload-b" | "create-group-a" | "create-group-b" | \
                "create-policy-a" | "create-policy-b" | "create-netpol-a" | "create-netpol-b":
            what, ns = target.removeprefix("create-").split("-")
            kind, prefix, make = NAMESPACED_CREATES[what]
            return Write("apply", kind, ns, f"{prefix}-{who}", make(f"{prefix}-{who}", ns))
        case "create-policy-a-platform" | "create-policy-a-baseline":
            tier = target.rsplit("-", 1)[1]
            return Write("apply", "Policy", "a", f"{tier}-{who}", policy_doc(f"{tier}-{who}", "a", tier))
        case "update-policy-a":
            name = f"app-upd-{who}"
            return Write("apply", "Policy", "a", name, policy_doc(name, "a", port=8443),
                         lambda d: d["spec"]["ingress"][0]["ports"][0]["port"] == 8443, seed=policy_doc(name, "a"))
        case "move-policy-a-platform-to-application":
            name = f"plat-move-{who}"
            return Write("apply", "Policy", "a", name, policy_doc(name, "a"),
                         lambda d: _tier_of(d) == "application", seed=policy_doc(name, "a", "platform"))
        case "move-policy-a-application-to-platform":
            name = f"app-up-{who}"
            return Write("apply", "Policy", "a", name, policy_doc(name, "a", "platform"),
                         lambda d: _tier_of(d) == "platform", seed=policy_doc(name, "a"))
        case "delete-policy-a-platform":
            name = f"plat-del-{who}"
            return Write("delete", "Policy", "a", name, seed=policy_doc(name, "a", "platform"))
        case "delete-policy-a-application":
            name = f"app-del-{who}"
            return Write("delete", "Policy", "a", name, seed=policy_doc(name, "a"))
        case "delete-workload-b":
            name = f"wl-del-{who}"
            return Write("delete", "Workload", "b", name, seed=workload_doc(name, "b"))
    raise AssertionError(f"unknown target {target}")


def run_case(ctl: Controller, target: str, role: str, tag: str = "") -> None:
    w = write_for(target, role, tag)
    allowed = role in ALLOWED[target]
    if w.seed is not None:  # the admin creates what the write starts from
        r = ctl.call(ctl.tokens["admin"], "POST", f"{API}/apply", {"documents": [w.seed], "message": "seed"})
        ctl.expect(r, 200, "root", "apply")
    before_rev = ctl.revision()
    before = ctl.get(w.kind, w.name, w.ns)
    assert (before is None) == target.startswith("create"), (target, before)
    if w.op == "apply":
        r = ctl.call(ctl.tokens[role], "POST", f"{API}/apply", {"documents": [w.doc], "message": f"{target} by {role}"})
    else:
        r = ctl.call(ctl.tokens[role], "POST", f"{API}/delete",
                     {"objects": [{"kind": w.kind, "namespace": w.ns, "name": w.name}], "message": target})
    after = ctl.get(w.kind, w.name, w.ns)
    if allowed:
        ctl.expect(r, 200, ACTOR[role], w.op)
        body = r.json()
        assert body["revision"] == before_rev + 1
        assert ctl.revision() == before_rev + 1
        [result] = body["results"]
        assert (result["kind"], result["namespace"], result["name"]) == (w.kind, w.ns, w.name)
        if w.op == "delete":
            assert result["action"] == "deleted" and after is None
        else:
            assert after is not None, f"{w.kind} {w.name} missing after a successful write"
            assert result["action"] == ("created" if before is None else "configured")
            assert w.check is None or w.check(after), after
    else:
        # A viewer is refused by role ("may not change objects"); a tenant and an agent (a host
        # credential registers only its own host's attached Workloads) name the object.
        reason = w.name if role in ("tenant-a", "agent") else "may not change objects"
        ctl.expect(r, 403, ACTOR[role], w.op, reason=reason)
        assert r.json()["error"] == "forbidden"
        assert reason in r.json()["message"]
        assert ctl.revision() == before_rev, "a refused write made a revision"
        assert after == before, "a refused write changed the object"


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("target", list(ALLOWED))
def test_write_matrix(world: Controller, target: str, role: str) -> None:
    run_case(world, target, role)


def test_tenant_cannot_smuggle_a_refused_object_in_with_allowed_ones(world: Controller) -> None:
    """All or nothing: one refused object refuses the whole request, the allowed ones are not stored."""
    before = world.revision()
    r = world.call(world.tokens["tenant-a"], "POST", f"{API}/apply",
                   {"documents": [group_doc("smuggle-ok", "a"), group_doc("smuggle-no", "b")]})
    world.expect(r, 403, "tenant-a", "apply", reason="smuggle-no")
    assert world.revision() == before
    assert world.get("Group", "smuggle-ok", "a") is None


def test_tenant_diff_and_rollback_are_refused_like_apply(world: Controller) -> None:
    before = world.revision()
    r = world.call(world.tokens["tenant-a"], "POST", f"{API}/diff",
                   {"documents": [policy_doc("diff-plat", "a", "platform")]})
    assert r.status_code == 403, r.text
    # Rolling back to revision 0 would delete everything, including namespaces and platform policies.
    r = world.call(world.tokens["tenant-a"], "POST", f"{API}/rollback", {"revision": 0})
    world.expect(r, 403, "tenant-a", "rollback")
    assert world.revision() == before


# ------------------------------------------------------------------ 2. reads


def _status(ctl: Controller, role: str, method: str, path: str, body: Any = None, **params: Any) -> int:
    return ctl.call(ctl.tokens[role], method, path, body, params or None).status_code


def test_viewer_reads_everything_and_writes_nothing(world: Controller) -> None:
    for kind in ("namespaces", "tiers", "workloads", "groups", "policies", "globalpolicies", "networkpolicies"):
        r = world.call(world.tokens["viewer"], "GET", f"{API}/objects/{kind}")
        assert r.status_code == 200, r.text
    policies = world.call(world.tokens["viewer"], "GET", f"{API}/objects/policies").json()["items"]
    assert {p["metadata"]["namespace"] for p in policies} == {"a", "b"}
    for path, params in ((f"{API}/snapshot", {}), (f"{API}/status", {}), (f"{API}/revisions", {}),
                         (f"{API}/audit", {}), (f"{API}/flows", {}), (f"{API}/watch", {"since": 0, "timeout": 0})):
        assert _status(world, "viewer", "GET", path, **params) == 200, path
    assert world.call(world.tokens["viewer"], "GET", f"{API}/audit").json()["entries"]
    for method, path, body in (("GET", f"{API}/tokens", None),
                               ("POST", f"{API}/tokens", {"role": "viewer"}),
                               ("DELETE", f"{API}/tokens/root", None)):
        r = world.call(world.tokens["viewer"], method, path, body)
        world.expect(r, 403, "vera", "token.create" if method == "POST" else
                     "token.revoke" if method == "DELETE" else "request")
    before = world.revision()
    r = world.call(world.tokens["viewer"], "POST", f"{API}/rollback", {"revision": 1})
    world.expect(r, 403, "vera", "rollback")
    assert world.revision() == before


def test_tenant_reads_only_its_namespaces(world: Controller) -> None:
    t = world.tokens["tenant-a"]
    policies = world.call(t, "GET", f"{API}/objects/policies").json()["items"]
    assert policies and {p["metadata"]["namespace"] for p in policies} == {"a"}
    namespaces = world.call(t, "GET", f"{API}/objects/namespaces").json()["items"]
    assert [n["metadata"]["name"] for n in namespaces] == ["a"]
    assert world.call(t, "GET", f"{API}/objects/globalpolicies").json()["items"] == []
    assert world.call(t, "GET", f"{API}/objects/tiers").status_code == 200
    # Asking for another tenant's namespace, or an object in it by name, is refused, not an empty list.
    for params in ({"namespace": "b"}, {"name": "b-visible"}, {"namespace": "b", "name": "b-visible"}):
        r = world.call(t, "GET", f"{API}/objects/policies", params=params)
        world.expect(r, 403, "tenant-a", "request")
    assert world.call(t, "GET", f"{API}/flows", params={"namespace": "b"}).status_code == 403
    assert world.call(t, "GET", f"{API}/flows", params={"namespace": "a"}).status_code == 200
    history = world.call(t, "GET", f"{API}/revisions").json()["revisions"]
    assert history
    for rev in history:
        for o in rev["objects"]:
            # Its namespace's objects, namespace a itself, and Tiers (which tenants may read); nothing of b.
            assert (o["namespace"] == "a" or (o["kind"] == "Namespace" and o["name"] == "a")
                    or o["kind"] == "Tier"), (rev, o)
    for method, path, params, action in (("GET", f"{API}/snapshot", None, "request"),
                                         ("GET", f"{API}/watch", {"since": 0, "timeout": 0}, "request"),
                                         ("GET", f"{API}/audit", None, "request"),
                                         ("GET", f"{API}/tokens", None, "request"),
                                         ("POST", f"{API}/tokens", None, "token.create")):
        body = {"role": "tenant", "namespaces": ["b"]} if method == "POST" else None
        r = world.call(t, method, path, body, params)
        world.expect(r, 403, "tenant-a", action)


def test_agent_reads_state_reports_its_host_and_nothing_else(world: Controller) -> None:
    a = world.tokens["agent"]
    assert _status(world, "agent", "GET", f"{API}/snapshot") == 200
    # Issue 13: an agent syncs through snapshot/watch; the object listing is for people, and a
    # stolen agent token is not a browser of every tenant's objects.
    r = world.call(a, "GET", f"{API}/objects/policies")
    world.expect(r, 403, "agent-hv1", "request")
    report = {"revision": 1, "inSync": True}
    assert _status(world, "agent", "PUT", f"{API}/agents/hv1/status", report) == 200
    r = world.call(a, "PUT", f"{API}/agents/hv2/status", report)
    world.expect(r, 403, "agent-hv1", "request", reason="hv2")
    for path in (f"{API}/audit", f"{API}/tokens", f"{API}/revisions", f"{API}/status"):
        r = world.call(a, "GET", path)
        world.expect(r, 403, "agent-hv1", "request")
    r = world.call(a, "POST", f"{API}/tokens", {"role": "admin"})
    world.expect(r, 403, "agent-hv1", "token.create")


def test_network_admin_writes_global_and_platform_policy_but_manages_no_tokens(world: Controller) -> None:
    r = world.call(world.tokens["network-admin"], "POST", f"{API}/apply",
                   {"documents": [global_policy_doc("na-global"), policy_doc("na-platform", "b", "platform")]})
    world.expect(r, 200, "netadmin", "apply")
    assert world.get("GlobalPolicy", "na-global") is not None
    assert _tier_of(world.get("Policy", "na-platform", "b") or {}) == "platform"
    assert _status(world, "network-admin", "GET", f"{API}/audit") == 200
    assert _status(world, "network-admin", "GET", f"{API}/revisions") == 200
    for method, path, body, action in (("GET", f"{API}/tokens", None, "request"),
                                       ("POST", f"{API}/tokens", {"role": "admin"}, "token.create"),
                                       ("DELETE", f"{API}/tokens/root", None, "token.revoke")):
        r = world.call(world.tokens["network-admin"], method, path, body)
        world.expect(r, 403, "netadmin", action)
    # Root's token still works: the refused revocation changed nothing.
    assert world.revision() == world.admin("GET", f"{API}/objects/namespaces")["revision"]


# ------------------------------------------------------------------ 3. 401


GARBAGE = "stk_this-is-not-a-token-0123456789abcdef"


def run_unauthenticated_cases(ctl: Controller) -> None:
    ctl.secrets.add(GARBAGE)
    apply_body = {"documents": [ns_doc("never")]}
    for token, headers in ((None, None), (GARBAGE, None), (None, {"Authorization": f"Basic {GARBAGE}"})):
        r = ctl.call(token, "GET", f"{API}/objects/namespaces", headers=headers)
        ctl.expect(r, 401, None, "request")
        assert r.headers.get("www-authenticate") == "Bearer"
        before = ctl.revision()
        r = ctl.call(token, "POST", f"{API}/apply", apply_body, headers=headers)
        ctl.expect(r, 401, None, "apply")
        assert r.json()["error"] == "unauthorized"
        assert ctl.revision() == before
    assert ctl.get("Namespace", "never") is None


def test_no_token_or_a_garbage_token_is_401(world: Controller) -> None:
    run_unauthenticated_cases(world)


def test_expired_token_is_401(world: Controller) -> None:
    token, info = world.new_token(role="viewer", ttl="1s", name="shortlived")
    assert info["expires"] is not None
    time.sleep(1.2)  # expiry is wall-clock time: nothing to await but the clock passing the 1 s TTL
    for method, path, body in (("GET", f"{API}/objects/namespaces", None),
                               ("POST", f"{API}/apply", {"documents": [ns_doc("never")]})):
        r = world.call(token, method, path, body)
        world.expect(r, 401, None, "apply" if method == "POST" else "request", reason="expired")
    listed = {t["name"]: t for t in world.admin("GET", f"{API}/tokens")["tokens"]}
    assert listed["shortlived"]["expired"] is True


def test_revoked_api_token_is_401_from_the_next_request(world: Controller) -> None:
    token, info = world.new_token(role="tenant", namespaces=["a"], name="tenant-a-temp")
    r = world.call(token, "POST", f"{API}/apply", {"documents": [group_doc("before-revoke", "a")]})
    world.expect(r, 200, "tenant-a-temp", "apply")
    r = world.call(world.tokens["admin"], "DELETE", f"{API}/tokens/{info['id']}")
    world.expect(r, 200, "root", "token.revoke")
    assert r.json()["tokens"][0]["revoked"]
    before = world.revision()
    r = world.call(token, "POST", f"{API}/apply", {"documents": [group_doc("after-revoke", "a")]})
    world.expect(r, 401, None, "apply", reason="revoked")
    r = world.call(token, "GET", f"{API}/objects/groups", params={"namespace": "a"})
    world.expect(r, 401, None, "request", reason="revoked")
    assert world.revision() == before and world.get("Group", "after-revoke", "a") is None


def test_revoking_a_file_token_by_name(world: Controller) -> None:
    carol = world.tokens["carol"]
    assert world.call(carol, "GET", f"{API}/objects/namespaces").status_code == 200
    r = world.call(world.tokens["admin"], "DELETE", f"{API}/tokens/carol")
    world.expect(r, 200, "root", "token.revoke")
    [info] = r.json()["tokens"]
    assert info["name"] == "carol" and info["source"] == "file" and info["revoked"]
    r = world.call(carol, "GET", f"{API}/objects/namespaces")
    world.expect(r, 401, None, "request", reason="revoked")
    # Only carol: the other file tokens still work.
    assert _status(world, "viewer", "GET", f"{API}/objects/namespaces") == 200
    # An unknown name is 404, and that is not a refusal.
    assert world.call(world.tokens["admin"], "DELETE", f"{API}/tokens/nobody").status_code == 404


# ------------------------------------------------------------------ 4. the audit log


def _matches(entry: dict[str, Any], want: dict[str, Any]) -> bool:
    actor = entry.get("actor")
    if (actor or {}).get("name") != want["actor"]:
        return False
    if want["actor"] is None and actor is not None:
        return False
    for k in ("action", "status", "outcome", "method", "path"):
        if entry.get(k) != want[k]:
            return False
    if "revision" in want and entry.get("revision") != want["revision"]:
        return False
    if "objects" in want and entry.get("objects") != want["objects"]:
        return False
    if "reason" in want and want["reason"] not in (entry.get("reason") or ""):
        return False
    return True


def test_every_write_refusal_and_401_is_audited_without_secrets(world: Controller,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # The whole matrix and the 401 cases once more, on objects of this test's own (whatever else
    # ran before, in whichever order): every one of them must be in the audit log.
    for target in ALLOWED:
        for role in ROLES:
            run_case(world, target, role, tag="-audit")
    run_unauthenticated_cases(world)
    # And a few refusals under this test's caplog, with every secret we hold offered to the server.
    for secret in sorted(world.secrets):
        r = world.call(None, "GET", f"{API}/snapshot", headers={"Authorization": f"Bearer {secret}x"})
        world.expect(r, 401, None, "request")
    r = world.call(world.tokens["viewer"], "POST", f"{API}/apply", {"documents": [ns_doc("nope")]})
    world.expect(r, 403, "vera", "apply")

    entries = world.admin("GET", f"{API}/audit", limit=10_000)["entries"]
    unused = list(entries)
    missing = []
    for want in world.ledger:
        hit = next((e for e in unused if _matches(e, want)), None)
        if hit is None:
            missing.append(want)
        else:
            unused.remove(hit)
    assert not missing, f"{len(missing)} of {len(world.ledger)} not in the audit log, e.g. {missing[:3]}"
    refused = [e for e in entries if e["outcome"] == "refused"]
    assert len(refused) >= 60
    for e in refused:
        assert e["status"] in (401, 403, 413) and e["reason"] and e["time"] and "client" in e
        if e["status"] == 401:
            assert e["actor"] is None
        if e["status"] == 403:
            assert set(e["actor"]) >= {"name", "role", "tokenId"}
    for e in entries:
        if e["outcome"] == "ok" and e["action"] in ("apply", "delete", "rollback"):
            assert e["revision"] >= 1 and e["objects"], e

    # No plaintext token anywhere: API answer, JSON-lines file, logs (ours over the module, and caplog).
    dumped = json.dumps(entries)
    lines = world.audit_file.read_text().splitlines()
    assert len(lines) == len(entries)
    assert [json.loads(line)["seq"] for line in lines] == [e["seq"] for e in entries]
    logs = "\n".join(world.logs) + "\n" + caplog.text
    assert "refused" in logs  # the 401/403 warnings were captured, so their absence of secrets means something
    for secret in world.secrets:
        assert len(secret) > 20
        for where, text in (("audit API", dumped), ("audit file", "\n".join(lines)), ("logs", logs)):
            assert secret not in text, f"a token's plaintext is in the {where}"
            assert secret[4:24] not in text, f"part of a token's plaintext is in the {where}"
    assert "Bearer stk_" not in dumped and "stk_" not in "\n".join(lines)


# ------------------------------------------------------------------ 5. safe change over HTTP


@pytest.fixture
def fresh() -> Iterator[Controller]:
    tmp = Path(tempfile.mkdtemp(prefix="stk-safe-"))
    running, tokens, audit_file = _start(tmp, [{"name": "root", "role": "admin"},
                                               {"name": "tenant-a", "role": "tenant", "namespaces": ["a"]}])
    http = httpx.Client(base_url=running.url, timeout=10.0)
    try:
        yield Controller(running, http, {"admin": tokens["root"], "tenant-a": tokens["tenant-a"]}, audit_file,
                         secrets=set(tokens.values()))
    finally:
        http.close()
        running.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _base(ctl: Controller) -> int:
    out = ctl.admin("POST", f"{API}/apply", {"documents": [ns_doc("a"), group_doc("web", "a"), policy_doc("p1", "a")],
                                             "message": "base"})
    return int(out["revision"])


def test_stale_resource_version_is_409_and_changes_nothing(fresh: Controller) -> None:
    _base(fresh)
    got = fresh.get("Policy", "p1", "a")
    assert got is not None
    version = got["metadata"]["resourceVersion"]
    assert version == str(fresh.revision())
    edited = copy.deepcopy(got)
    edited.pop("status", None)
    edited["spec"]["ingress"][0]["ports"][0]["port"] = 8443
    out = fresh.admin("POST", f"{API}/apply", {"documents": [edited]})
    assert out["results"][0]["action"] == "configured"
    now = fresh.get("Policy", "p1", "a")
    assert now is not None and now["metadata"]["resourceVersion"] == str(out["revision"]) != version
    # Someone else's edit, based on the version read before ours: 409, nothing stored.
    stale = copy.deepcopy(edited)
    stale["spec"]["ingress"][0]["ports"][0]["port"] = 9443
    before = fresh.revision()
    r = fresh.call(fresh.tokens["admin"], "POST", f"{API}/apply", {"documents": [stale]})
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "conflict" and version in r.json()["message"]
    assert fresh.revision() == before and fresh.get("Policy", "p1", "a") == now
    # A version for an object that is gone is a conflict too, not a create.
    ghost = policy_doc("ghost", "a")
    ghost["metadata"]["resourceVersion"] = "1"
    r = fresh.call(fresh.tokens["admin"], "POST", f"{API}/apply", {"documents": [ghost]})
    assert r.status_code == 409 and fresh.get("Policy", "ghost", "a") is None


def test_history_rollback_and_diff(fresh: Controller) -> None:
    r1 = _base(fresh)
    snap1 = fresh.admin("GET", f"{API}/snapshot")["objects"]
    r2 = fresh.admin("POST", f"{API}/apply", {"documents": [policy_doc("p2", "a")], "message": "add p2"})["revision"]
    r3 = fresh.admin("POST", f"{API}/delete", {"objects": [{"kind": "Policy", "namespace": "a", "name": "p1"}],
                                               "message": "drop p1"})["revision"]
    assert (r2, r3) == (r1 + 1, r1 + 2)

    history = fresh.admin("GET", f"{API}/revisions")["revisions"]
    assert [h["revision"] for h in history] == [r3, r2, r1]
    assert {h["author"] for h in history} == {"root"}
    assert [h["message"] for h in history] == ["drop p1", "add p2", "base"]
    assert history[0]["objects"] == [{"type": "DELETE", "kind": "Policy", "namespace": "a", "name": "p1"}]
    assert history[1]["objects"] == [{"type": "PUT", "kind": "Policy", "namespace": "a", "name": "p2"}]
    assert {(o["kind"], o["name"]) for o in history[2]["objects"]} == {("Namespace", "a"), ("Group", "web"),
                                                                        ("Policy", "p1")}

    # Rollback: a new revision whose objects are those of r1 (p1 back, p2 gone).
    out = fresh.admin("POST", f"{API}/rollback", {"revision": r1})
    assert out["revision"] == r3 + 1
    assert sorted((o["name"], o["action"]) for o in out["results"]) == [("p1", "created"), ("p2", "deleted")]
    assert fresh.admin("GET", f"{API}/snapshot")["objects"] == snap1
    assert fresh.get("Policy", "p1", "a") is not None and fresh.get("Policy", "p2", "a") is None
    top = fresh.admin("GET", f"{API}/revisions", limit=1)["revisions"][0]
    assert top["revision"] == r3 + 1 and top["author"] == "root" and str(r1) in top["message"]
    # Rolling back to where we already are makes no revision.
    assert fresh.admin("POST", f"{API}/rollback", {"revision": r3 + 1})["revision"] == r3 + 1
    assert fresh.revision() == r3 + 1
    r = fresh.call(fresh.tokens["admin"], "POST", f"{API}/rollback", {"revision": 999})
    assert r.status_code == 404

    # Diff: per object action and field changes; nothing stored.
    before = fresh.revision()
    changed = policy_doc("p1", "a", port=8443)
    out = fresh.admin("POST", f"{API}/diff", {"documents": [changed, group_doc("db", "a"), group_doc("web", "a")]})
    assert out["revision"] == before
    by_name = {(o["kind"], o["name"]): o for o in out["objects"]}
    assert by_name[("Policy", "p1")]["action"] == "configured"
    assert {"path": "spec.ingress[0].ports[0].port", "op": "change", "old": 443, "new": 8443} in \
        by_name[("Policy", "p1")]["fields"], by_name[("Policy", "p1")]["fields"]
    assert by_name[("Group", "db")]["action"] == "created"
    assert by_name[("Group", "web")]["action"] == "unchanged" and by_name[("Group", "web")]["fields"] == []
    assert fresh.revision() == before and fresh.get("Group", "db", "a") is None
    p1 = fresh.get("Policy", "p1", "a")
    assert p1 is not None and p1["spec"]["ingress"][0]["ports"][0]["port"] == 443


def test_tenant_rollback_that_would_touch_protected_objects_is_403(fresh: Controller) -> None:
    r1 = _base(fresh)
    fresh.admin("POST", f"{API}/apply", {"documents": [policy_doc("guard", "a", "platform")]})
    before = fresh.revision()
    r = fresh.call(fresh.tokens["tenant-a"], "POST", f"{API}/rollback", {"revision": r1})
    assert r.status_code == 403 and "guard" in r.json()["message"], r.text
    assert fresh.revision() == before and fresh.get("Policy", "guard", "a") is not None


def test_body_over_the_limit_is_413_and_stores_nothing(fresh: Controller) -> None:
    _base(fresh)
    before = fresh.revision()
    big = [group_doc(f"g{i:05d}", "a") for i in range(1200)]
    assert len(json.dumps({"documents": big})) > MAX_BODY
    r = fresh.call(fresh.tokens["admin"], "POST", f"{API}/apply", {"documents": big})
    assert r.status_code == 413, r.text  # the answer, not a reset connection: the body is drained first
    assert r.json()["error"] == "too_large" and str(MAX_BODY) in r.json()["message"]
    assert fresh.revision() == before and fresh.get("Group", "g00000", "a") is None
    # Chunked, with no Content-Length to refuse up front: cut off once past the limit.
    raw = json.dumps({"documents": big}).encode()
    r = fresh.http.post(f"{API}/apply", content=(raw[i:i + 4096] for i in range(0, len(raw), 4096)),
                        headers={"Authorization": f"Bearer {fresh.tokens['admin']}",
                                 "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "too_large", r.text
    assert fresh.revision() == before
    audited = fresh.admin("GET", f"{API}/audit")["entries"]
    assert any(e["status"] == 413 and e["outcome"] == "refused" and e["action"] == "apply" for e in audited)
    assert fresh.tokens["admin"] not in json.dumps(audited)


def test_policy_with_too_many_rules_is_422_naming_the_field(fresh: Controller) -> None:
    _base(fresh)
    before = fresh.revision()
    doc = policy_doc("huge", "a")
    doc["spec"]["ingress"] = [{"action": "allow"}] * 1001
    assert len(json.dumps({"documents": [doc]})) < MAX_BODY  # refused by the model, not the body limit
    r = fresh.call(fresh.tokens["admin"], "POST", f"{API}/apply", {"documents": [doc]})
    assert r.status_code == 422, r.text
    problems = r.json()["problems"]
    assert any(p["field"].startswith("spec.ingress") and "Policy a/huge" in p["object"] for p in problems), problems
    assert fresh.revision() == before and fresh.get("Policy", "huge", "a") is None
    doc["spec"]["ingress"] = [{"action": "allow"}] * 1000
    assert fresh.call(fresh.tokens["admin"], "POST", f"{API}/apply", {"documents": [doc]}).status_code == 200


def test_keep_alive_requests_over_tcp_are_not_held_by_nagle(fresh: Controller) -> None:
    """Found by this file taking 45 ms a request: the listener was made with proto 0, so asyncio did
    not set TCP_NODELAY and each response's body waited for the client's delayed ACK (~40 ms)."""
    fresh.http.get("/healthz")
    times = []
    for _ in range(15):
        start = time.perf_counter()
        assert fresh.http.get("/healthz").status_code == 200
        times.append(time.perf_counter() - start)
    assert sorted(times)[len(times) // 2] < 0.02, times
