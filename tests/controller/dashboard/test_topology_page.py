"""The Topology page over real HTTP (uvicorn in a thread): a tenant's session gets the page with the
elements the browser tests rely on, its shipped script and stylesheet, and, through the same session
cookie, a topology and a reach answer cut down to its namespaces. (The page's behaviour in a browser
is the browser tests'.)"""

from __future__ import annotations

import httpx
import pytest

from stockade.controller.main import RunningController
from tests.controller.dashboard.conftest import STATE, apply

CONTRACT_IDS = ('id="topology-graph"', 'id="topology-table"', 'id="workload-detail"', 'id="reach-out"',
                'id="reach-in"')


@pytest.fixture
def running(controller: RunningController, tokens: dict[str, str]) -> tuple[RunningController, dict[str, str]]:
    apply(controller, tokens["alice"], STATE)
    return controller, tokens


def test_a_tenants_session_gets_the_page_and_only_its_namespaces(
        running: tuple[RunningController, dict[str, str]]) -> None:
    controller, tokens = running
    with httpx.Client(base_url=controller.url, follow_redirects=False, timeout=30) as b:
        assert b.post("/ui/login", data={"token": tokens["tess"], "next": "/ui/topology"}).status_code == 303
        page = b.get("/ui/topology")
        assert page.status_code == 200
        for element in CONTRACT_IDS:
            assert element in page.text, element
        assert '<script src="/ui/static/js/topology.js">' in page.text
        assert '<script src="/ui/static/vendor/cytoscape.min.js">' in page.text
        # Cytoscape's container rule comes from our stylesheet (the id stops it injecting a <style>,
        # which the Content-Security-Policy refuses).
        assert 'id="__________cytoscape_stylesheet" href="/ui/static/css/topology.css"' in page.text
        css = b.get("/ui/static/css/topology.css")
        assert css.status_code == 200 and ".__________cytoscape_container { position: relative; }" in css.text
        script = b.get("/ui/static/js/topology.js")
        assert script.status_code == 200 and "/topology/reach" in script.text

        topo = b.get("/api/v1/topology").json()
        assert [w["id"] for w in topo["workloads"]] == ["shop/db", "shop/web"]
        assert "vault" not in str(topo) and "bank" not in str(topo)
        reach = b.get("/api/v1/topology/reach", params={"workload": "shop/db"}).json()
        assert [e["peer"] for e in reach["incoming"]] == ["bank/(hidden)", "shop/web"]
        web = reach["incoming"][1]
        assert {(r["label"], r["verdict"], r["rule"]) for r in web["rows"] if not r["other"]} == {
            ("tcp/5432", "allow", "shop/db-in/from-web")}
        assert b.get("/api/v1/topology/reach", params={"workload": "bank/vault"}).status_code == 403
