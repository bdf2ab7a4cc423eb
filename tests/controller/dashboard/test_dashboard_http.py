"""The dashboard over real HTTP (uvicorn in a thread): login, session cookie, CSRF, pages, headers,
and the insight routes behind its pages (overview, trends, trace, revision diff), with scoping."""

from __future__ import annotations

from typing import Any

import httpx

from stockade.controller.dashboard.pages import PAGES
from stockade.controller.dashboard.sessions import COOKIE
from stockade.controller.main import RunningController
from tests.controller.dashboard.conftest import STATE, api, apply, browser, login


def test_a_page_without_a_session_redirects_to_login_and_the_api_still_says_401(controller: RunningController) -> None:
    with browser(controller) as b:
        page = b.get("/ui/flows?namespace=shop")
        assert page.status_code == 303
        assert page.headers["location"] == "/ui/login?next=%2Fui%2Fflows%3Fnamespace%3Dshop"
        assert b.get("/api/v1/status").status_code == 401
        form = b.get("/ui/login")
        assert form.status_code == 200 and 'id="login-form"' in form.text
        assert b.get("/ui/static/vendor/chart.umd.min.js").status_code == 200


def test_login_sets_a_strict_httponly_cookie_that_is_not_the_token(controller: RunningController,
                                                                   tokens: dict[str, str]) -> None:
    with browser(controller) as b:
        answer = b.post("/ui/login", data={"token": tokens["alice"], "next": "/ui/flows"})
        assert answer.status_code == 303 and answer.headers["location"] == "/ui/flows"
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert tokens["alice"] not in cookie
        assert b.get("/api/v1/status").status_code == 200  # the cookie authenticates API calls too
        for page in PAGES:
            shown = b.get(f"/ui/{page.name}")
            assert shown.status_code == 200, page.name
            assert "alice · admin" in shown.text
            csp = shown.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert shown.headers["cache-control"] == "no-store"
            assert "<script>" not in shown.text  # no inline script: the CSP would block it


def test_login_never_redirects_to_another_site(controller: RunningController, tokens: dict[str, str]) -> None:
    for target in ("https://evil.example/", "//evil.example/ui/", "/ui/../../evil", "/api/v1/tokens", "\\\\evil"):
        with browser(controller) as b:
            answer = b.post("/ui/login", data={"token": tokens["vera"], "next": target})
            assert answer.status_code == 303
            assert answer.headers["location"] in ("/ui/overview", target) and answer.headers["location"].startswith("/ui/")
            assert "evil" not in answer.headers["location"] or answer.headers["location"].startswith("/ui/")


def test_failed_logins_are_refused_audited_and_rate_limited(controller: RunningController,
                                                            tokens: dict[str, str]) -> None:
    with browser(controller) as b:
        codes = [b.post("/ui/login", data={"token": f"guess-{i}"}).status_code for i in range(5)]
        assert codes[:3] == [401, 401, 401] and codes[-1] == 429
        # Rate limited by client: even the right token waits now (like the API's bearer failures).
        assert b.post("/ui/login", data={"token": tokens["alice"]}).status_code == 429
    with api(controller, tokens["alice"]) as c:
        entries = c.get("/api/v1/audit").json()["entries"]
    refused = [e for e in entries if e["path"] == "/ui/login" and e["outcome"] == "refused"]
    assert len(refused) >= 4
    assert not any("guess-" in str(e) for e in entries)  # what was typed is never written down


def test_a_write_with_the_session_cookie_needs_the_csrf_header(controller: RunningController,
                                                               tokens: dict[str, str]) -> None:
    """The attack: a page on another site makes the browser POST with the victim's cookie. Without
    the CSRF header (which another site cannot read nor set) nothing changes."""
    first = apply(controller, tokens["alice"], STATE)["revision"]
    apply(controller, tokens["alice"], STATE.replace("port: 5432", "port: 5433"))
    b, csrf = login(controller, tokens["alice"])
    try:
        forged = b.post("/api/v1/rollback", json={"revision": first})
        assert forged.status_code == 403 and "CSRF" in forged.json()["message"]
        wrong = b.post("/api/v1/rollback", json={"revision": first}, headers={"X-Stockade-CSRF": "x" * 43})
        assert wrong.status_code == 403
        assert b.get("/api/v1/status").json()["revision"] == first + 1  # nothing changed
        done = b.post("/api/v1/rollback", json={"revision": first}, headers={"X-Stockade-CSRF": csrf})
        assert done.status_code == 200, done.text
        assert done.json()["revision"] == first + 2
    finally:
        b.close()


def test_logout_ends_the_session(controller: RunningController, tokens: dict[str, str]) -> None:
    b, csrf = login(controller, tokens["vera"])
    try:
        assert b.post("/ui/logout").status_code == 403  # logging someone out is a write too
        assert b.post("/ui/logout", headers={"X-Stockade-CSRF": csrf}).status_code == 200
        assert b.get("/api/v1/status").status_code == 401
        assert b.get("/ui/overview").status_code == 303
    finally:
        b.close()


def test_a_viewer_is_offered_no_rollback_and_cannot_make_one(controller: RunningController,
                                                             tokens: dict[str, str]) -> None:
    apply(controller, tokens["alice"], STATE)
    b, csrf = login(controller, tokens["vera"])
    try:
        assert 'data-may-write="false"' in b.get("/ui/changes").text
        assert b.post("/api/v1/rollback", json={"revision": 0}, headers={"X-Stockade-CSRF": csrf}).status_code == 403
    finally:
        b.close()


def test_revision_diff_names_each_changed_field_and_a_tenant_sees_only_its_objects(
        controller: RunningController, tokens: dict[str, str]) -> None:
    first = apply(controller, tokens["alice"], STATE)["revision"]
    changed = STATE.replace("port: 5432", "port: 6432").replace("action: deny", "action: reject")
    second = apply(controller, tokens["alice"], changed)["revision"]
    with api(controller, tokens["alice"]) as c:
        d = c.get("/api/v1/revisions/diff", params={"from": first, "to": second}).json()
        fields = {(o["namespace"], o["name"]): [f["path"] for f in o["fields"]] for o in d["objects"]}
        assert fields == {("shop", "db-in"): ["spec.ingress[0].ports[0].port"],
                          ("bank", "vault-in"): ["spec.ingress[0].action"]}
        assert c.get("/api/v1/revisions/diff", params={"from": second, "to": first}).status_code == 422
        assert c.get("/api/v1/revisions/diff", params={"from": 0, "to": second + 5}).status_code == 404
    with api(controller, tokens["tess"]) as c:
        d = c.get("/api/v1/revisions/diff", params={"from": first, "to": second}).json()
        assert [(o["namespace"], o["name"]) for o in d["objects"]] == [("shop", "db-in")]


def test_trace_answers_like_the_cli_and_a_tenant_traces_only_within_its_namespaces(
        controller: RunningController, tokens: dict[str, str]) -> None:
    apply(controller, tokens["alice"], STATE)
    with api(controller, tokens["alice"]) as c:
        t = c.get("/api/v1/trace", params={"from": "shop/web", "to": "shop/db", "port": 5432}).json()
        assert t["verdict"] == "allow" and t["decidingRule"] == "shop/db-in/from-web"
        t = c.get("/api/v1/trace", params={"from": "shop/web", "to": "bank/vault", "port": 443}).json()
        assert t["verdict"] == "deny" and t["decidingRule"] == "bank/vault-in/keep-shop-out"
        bad = c.get("/api/v1/trace", params={"from": "web", "to": "shop/db"})
        assert bad.status_code == 422 and "from" in bad.json()["message"]
        assert c.get("/api/v1/trace", params={"from": "shop/web", "to": "shop/db", "protocol": "gre"}).status_code == 422
    with api(controller, tokens["tess"]) as c:
        t = c.get("/api/v1/trace", params={"from": "shop/web", "to": "shop/db", "port": 5432}).json()
        assert t["verdict"] == "allow" and t["decidingRule"] == "shop/db-in/from-web"
        into = c.get("/api/v1/trace", params={"from": "shop/web", "to": "bank/vault", "port": 443})
        assert into.status_code == 403 and "keep-shop-out" not in into.text
        # The attack: probing another tenant's policy between its own workloads.
        other = c.get("/api/v1/trace", params={"from": "bank/vault", "to": "bank/vault", "port": 1})
        assert other.status_code == 403
        missing = c.get("/api/v1/trace", params={"from": "bank/nothing", "to": "bank/vault", "port": 1})
        assert missing.status_code == 403  # the same answer whether it exists or not


def report_flows(controller: RunningController, token: str, records: list[dict[str, Any]]) -> None:
    with httpx.Client(base_url=controller.url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as c:
        status = c.put("/api/v1/agents/hv1/status", json={"revision": 1, "inSync": True})
        assert status.status_code == 200, status.text
        answer = c.put("/api/v1/agents/hv1/flows", json={"records": records})
        assert answer.status_code == 200, answer.text


def flow(src: str, dst: str, verdict: str, rule: str, when: str) -> dict[str, Any]:
    ips = {"shop/web": "198.18.10.1", "shop/db": "198.18.10.2", "bank/vault": "198.18.10.3"}
    return {"time": when, "host": "hv1", "direction": "egress", "verdict": verdict, "rule": rule, "protocol": "tcp",
            "family": 4, "src": {"ip": ips[src], "port": 40000, "workload": src, "namespace": src.split("/")[0]},
            "dst": {"ip": ips[dst], "port": 443, "workload": dst, "namespace": dst.split("/")[0]}}


def test_overview_counts_hosts_and_denied_pairs_scoped_to_the_caller(controller: RunningController,
                                                                     tokens: dict[str, str]) -> None:
    from datetime import datetime, timezone
    apply(controller, tokens["alice"], STATE)
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    report_flows(controller, tokens["agent-hv1"], [
        flow("shop/web", "bank/vault", "deny", "bank/vault-in/keep-shop-out", now),
        flow("shop/web", "bank/vault", "deny", "bank/vault-in/keep-shop-out", now),
        flow("shop/web", "shop/db", "allow", "shop/db-in/from-web", now),
        flow("bank/vault", "bank/vault", "deny", "bank/vault-in/keep-shop-out", now),
    ])
    with api(controller, tokens["vera"]) as c:
        o = c.get("/api/v1/overview").json()
    assert o["hostsTotal"] == 1 and o["hostsReporting"] == 1
    assert sum(m["denied"] for m in o["flowsPerMinute"]) == 3 and sum(m["allowed"] for m in o["flowsPerMinute"]) == 1
    assert o["topDenied"][0] == {"src": "shop/web", "dst": "bank/vault", "count": 2,
                                 "rule": "bank/vault-in/keep-shop-out"}
    with api(controller, tokens["tess"]) as c:
        o = c.get("/api/v1/overview").json()
    assert sum(m["denied"] for m in o["flowsPerMinute"]) == 2  # bank's own flow is not counted for shop
    assert o["topDenied"] == [{"src": "shop/web", "dst": "bank/(hidden)", "count": 2, "rule": "bank/(hidden)"}]
    with api(controller, tokens["vera"]) as c:
        t = c.get("/api/v1/trends").json()
    assert t["source"] == "controller" and "--prometheus" in t["reason"]


def test_a_login_posted_from_another_site_is_refused(controller: RunningController, tokens: dict[str, str]) -> None:
    """Login CSRF: another site's page posting the attacker's token would log the victim in as the attacker."""
    with browser(controller) as b:
        forged = b.post("/ui/login", data={"token": tokens["vera"]}, headers={"Origin": "https://evil.example"})
        assert forged.status_code == 403 and "set-cookie" not in forged.headers
        ours = b.post("/ui/login", data={"token": tokens["vera"]}, headers={"Origin": controller.url})
        assert ours.status_code == 303


def test_the_api_docs_and_every_page_load_nothing_from_another_site(controller: RunningController,
                                                                     tokens: dict[str, str]) -> None:
    import re
    pages = []
    with browser(controller) as b:
        docs = b.get("/docs")
        assert docs.status_code == 200 and "/ui/static/vendor/swagger-ui-bundle.js" in docs.text
        assert b.get("/redoc").status_code == 401  # ReDoc only loads from a CDN: not served (no public path)
        pages.append(docs.text)
        b.post("/ui/login", data={"token": tokens["alice"]})
        pages += [b.get(f"/ui/{p.name}").text for p in PAGES]
        pages.append(b.get("/ui/login").text)
        sources = {m for text in pages for m in re.findall(r'(?:src|href)=["\']([^"\']+)', text)}
        assert sources and not [s for s in sources if re.match(r"(https?:)?//", s)], sources
        for local in (s for s in sources if s.startswith("/ui/static/")):
            assert b.get(local).status_code == 200, local


def test_an_agent_token_is_refused_at_login(controller: RunningController, tokens: dict[str, str]) -> None:
    with browser(controller) as b:
        answer = b.post("/ui/login", data={"token": tokens["agent-hv1"]})
        assert answer.status_code == 403 and "set-cookie" not in answer.headers
        assert "agent token" in answer.text


def test_a_dashboard_login_is_audited_and_docs_cannot_be_framed(controller: RunningController,
                                                                 tokens: dict[str, str]) -> None:
    with browser(controller) as b:
        assert b.post("/ui/login", data={"token": tokens["vera"]}).status_code == 303
        docs = b.get("/docs")
        assert docs.headers["x-frame-options"] == "DENY"
        assert docs.headers["content-security-policy"] == "frame-ancestors 'none'"
    with api(controller, tokens["alice"]) as c:
        entries = c.get("/api/v1/audit").json()["entries"]
    logins = [e for e in entries if e["action"] == "dashboard.login"]
    assert [(e["outcome"], e["actor"]["name"]) for e in logins] == [("ok", "vera")]
    assert tokens["vera"] not in str(entries)
