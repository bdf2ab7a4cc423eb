"""The Policy page as the real app serves it (uvicorn in a thread, a session from the login form):
the shell with the elements its script and the browser tests rely on, its script shipped, and the
API it calls answering the session with the caller's scope. Its behaviour in a browser is the
browser tests' (tests/e2e); this checks what the server renders."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Iterator

import pytest

from stockade.controller.api import build_app
from stockade.controller.auth import create_token_file
from stockade.controller.config import ControllerConfig
from stockade.controller.main import RunningController, start_in_thread
from stockade.model.validation import ValidationSettings
from tests.controller.dashboard.test_dashboard_http import STATE, apply, login

STATIC = Path(__file__).resolve().parents[3] / "src/stockade/controller/dashboard/static"


@pytest.fixture
def tokens(tmp_path: Path) -> dict[str, str]:
    return create_token_file(tmp_path / "tokens.json", [
        {"name": "alice", "role": "admin"}, {"name": "tess", "role": "tenant", "namespaces": ["shop"]},
        {"name": "agent-hv2", "role": "agent", "host": "hv2"}])


@pytest.fixture
def controller(tmp_path: Path, tokens: dict[str, str]) -> Iterator[RunningController]:
    config = ControllerConfig(db_path=tmp_path / "stockade.db", tokens_file=tmp_path / "tokens.json",
                              validation=ValidationSettings(known_hosts=frozenset({"hv1", "hv2"})))
    running = start_in_thread(config, app=build_app(config))
    try:
        yield running
    finally:
        running.stop()


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
