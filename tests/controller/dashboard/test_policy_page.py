"""The Policy page as the real app serves it (uvicorn in a thread, a session from the login form):
the shell with the elements its script and the browser tests rely on, its script shipped, and the
API it calls answering the session with the caller's scope. Its behaviour in a browser is the
browser tests' (tests/e2e); this checks what the server renders."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from stockade.controller.main import RunningController
from tests.controller.dashboard.conftest import STATE, apply, login

STATIC = Path(__file__).resolve().parents[3] / "src/stockade/controller/dashboard/static"


def test_the_policy_page_renders_its_elements_and_loads_only_shipped_scripts(controller: RunningController,
                                                                             tokens: dict[str, str]) -> None:
    b, _ = login(controller, tokens["alice"])
    with contextlib.closing(b):
        page = b.get("/ui/policy?rule=shop/db-in/from-web")
        assert page.status_code == 200
        for element in ('id="policy-tree"', 'id="rules-chart"', 'id="policy-filter"', 'id="policy-unused-count"'):
            assert element in page.text, element
        scripts = re.findall(r'<script[^>]*src="([^"]+)"', page.text)
        assert scripts == ["/ui/static/js/common.js", "/ui/static/vendor/chart.umd.min.js", "/ui/static/js/policy.js"]
        assert "<script>" not in page.text and " onclick=" not in page.text  # the CSP forbids inline code
        for src in scripts:
            assert b.get(src).status_code == 200, src
        script = (STATIC / "js/policy.js").read_text()
        for contract in ("hits-packets", "hits-bytes", "hits-flows", "hits-would-deny", "'unused'", "selected",
                         "dataset: { rule: rule.id", "S.ruleAnchor(", "'/rules'"):
            assert contract in script, contract
        assert "innerHTML" not in script  # data only ever becomes text


def test_the_page_s_api_answers_the_session_in_the_caller_s_scope(controller: RunningController,
                                                                  tokens: dict[str, str]) -> None:
    apply(controller, tokens["alice"], STATE)
    admin, _ = login(controller, tokens["alice"])
    tenant, _ = login(controller, tokens["tess"])
    with contextlib.closing(admin), contextlib.closing(tenant):
        everything = admin.get("/api/v1/rules")
        assert everything.status_code == 200
        assert "bank/vault-in/keep-shop-out" in everything.text
        mine = tenant.get("/api/v1/rules")
        assert mine.status_code == 200
        assert "shop/db-in/from-web" in mine.text and "bank" not in mine.text
        assert tenant.get("/api/v1/rules", params={"rule": "bank/vault-in/keep-shop-out"}).status_code == 403
