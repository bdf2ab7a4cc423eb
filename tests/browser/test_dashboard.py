"""The dashboard end to end in a real browser (issue 19 item 2): Debian's chromium, driven by
Selenium, against a lab with the three-tier demo applied, real packets making the flow records.

One lab and one browser for the module; each test logs in afresh (a new session, no cookie
carried over), so the tests hold in any order. Every page's screenshot is written to the
artifacts directory (tests/browser/dashboard.py), and every test fails on a SEVERE entry in the
browser's console (a script error, a failed load) that it did not expect.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request
from typing import Any, Iterator

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver import Chrome
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.ui import Select

from stockade.controller.dashboard.sessions import SECURE_COOKIE
from tests.browser import chromium
from tests.browser.dashboard import Dashboard
from tests.e2e.conftest import EXAMPLES, Lab, make_lab
from tests.waiting import wait_until

pytestmark = pytest.mark.kernel

if chromium.missing_binaries():
    pytest.skip("THE DASHBOARD'S BROWSER TESTS DID NOT RUN: missing " + ", ".join(chromium.missing_binaries()) +
                " (Debian's chromium and chromium-driver: `make install` installs them, deps/commands.tsv)",
                allow_module_level=True)

DEMO_WORKLOADS = ["shop/lb-1", "shop/web-1", "shop/web-2", "shop/app-1", "shop/db-1", "ops/bastion", "ops/dns-1"]
# A namespace of this module's own, beside the demo's two: a shop tenant must never see it.
RIVAL = "rival/vault"
RIVAL_NAMESPACE = """
apiVersion: stockade.io/v1
kind: Namespace
metadata: {name: rival, labels: {team: rival}}
spec: {defaultAction: deny}
"""


def rival_workload(build: str) -> str:
    return f"""
apiVersion: stockade.io/v1
kind: Workload
metadata: {{name: vault, namespace: rival, labels: {{app: vault, build: "{build}"}}}}
spec: {{host: hv2}}
"""


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A 2-host lab with the three-tier demo and the rival namespace applied and enforced."""
    for lab in make_lab(tmp_path_factory.mktemp("browser"), hosts=2):
        lab.cli("apply", "-f", str(EXAMPLES), "--wait", "--timeout", "60")
        lab.apply_text(RIVAL_NAMESPACE + "---" + rival_workload("initial"), "--wait", "--timeout", "60")
        yield lab


@pytest.fixture(scope="module")
def controller_url(shop: Lab) -> str:
    return shop.context().controller.split(",")[0]


@pytest.fixture(scope="module")
def tokens(shop: Lab) -> dict[str, str]:
    """Tokens by role: the lab's admin, a viewer, and a tenant of the shop namespace."""
    made = {"admin": shop.context().token}
    for role, extra in (("viewer", []), ("tenant", ["-n", "shop"])):
        made[role] = shop.cli("token", "create", "--role", role, *extra, "--ttl", "1h",
                              "--name", f"browser-{role}").stdout.strip()
    return made


@pytest.fixture(scope="module")
def browser(shop: Lab, controller_url: str) -> Iterator[Chrome]:
    pin = chromium.server_key_pin(controller_url, shop.context().ca or "")
    b = chromium.start([pin], tag="b19" + secrets.token_hex(2))
    try:
        yield b.driver
    finally:
        b.quit()


@pytest.fixture
def dash(browser: Chrome, controller_url: str) -> Dashboard:
    d = Dashboard(browser, controller_url)
    d.log_out_browser()
    d.console()  # what an earlier test left in the console is not this test's
    return d


def settled(lab: Lab) -> dict[str, Any]:
    """`status` once every agent enforces the current revision."""
    def check() -> dict[str, Any] | None:
        status = lab.json("status")
        return status if all(a["inSync"] and a["revision"] == status["revision"] for a in status["agents"]) else None
    return wait_until(check, "every agent to enforce the current revision", timeout=30, describe=lambda: lab.json("status"))


def denied_probe(lab: Lab, src: str, dst: str, port: int, protocol: str = "tcp") -> float:
    """Send a probe the demo's policy denies; the time.monotonic() at which it ended."""
    result = lab.json("probe", "--from", src, "--to", dst, "--protocol", protocol, "--port", str(port))
    ended = time.monotonic()
    assert result["verdict"] == "denied", result
    return ended


def flow_records(lab: Lab, *extra: str) -> list[dict[str, Any]]:
    out = lab.cli("flows", "-o", "json", "--limit", "10000", *extra).stdout
    return [r for r in map(json.loads, out.splitlines()) if "seq" in r]


def await_record(lab: Lab, src: str, dst: str, port: int, verdict: str = "deny") -> dict[str, Any]:
    """The newest flow record (admin's view) of src → dst:port with `verdict`, once the controller has one."""
    def find() -> dict[str, Any] | None:
        found = [r for r in flow_records(lab) if (r["src"].get("workload"), r["dst"].get("workload"),
                                                    r["dst"].get("port"), r["verdict"]) == (src, dst, port, verdict)]
        return found[-1] if found else None
    return wait_until(find, f"a {verdict} flow record of {src} -> {dst}:{port}", timeout=10)


# JS: the seqs of the Flows table's rows of one verdict from `src` to `dst`:`port` (any `dst` when '').
FLOW_ROWS = """
const [verdict, src, dst, port] = arguments;
return [...document.querySelectorAll('#flows-table tbody tr')].filter((tr) =>
  tr.dataset.verdict === verdict && tr.cells[5].textContent.startsWith(src + ' (') &&
  (!dst || tr.cells[6].textContent.startsWith(dst + ' (')) && tr.cells[6].textContent.endsWith(':' + port + ')')
).map((tr) => tr.dataset.seq);
"""


def open_live_flows(dash: Dashboard) -> None:
    dash.open("flows")
    dash.wait_text("#flows-live-text", "live")  # the first page is drawn and the long poll is out


def anchor_id(rule: str) -> str:
    return "rule-" + "".join(c if c.isalnum() or c in "_-" else "_" for c in rule)


def test_login_then_overview_shows_every_host_in_sync(dash: Dashboard, shop: Lab, tokens: dict[str, str]) -> None:
    status = settled(shop)
    hosts = sorted(a["host"] for a in status["agents"])
    dash.open("login")
    dash.wait_for("#token")
    dash.screenshot("login")
    # A wrong token is refused on the form, with the reason, and opens no session.
    dash.find("#token").send_keys("stk_not-a-token")
    dash.find("#login-submit").click()
    assert dash.wait_for("#login-error").text.strip()
    assert dash.path() == "/ui/login" and dash.session_cookie() is None

    dash.log_in(tokens["admin"])
    dash.wait_text("#hosts-in-sync", f"{len(hosts)}/{len(hosts)}", timeout=15)
    # Read in one script: the page redraws the table every 5 s, which would stale held rows.
    rows = dash.until(lambda d: dash.js("return [...document.querySelectorAll('#overview-hosts tbody tr[data-host]')]"
                                        ".map((tr) => [tr.dataset.host, tr.textContent])") or None, "the hosts table")
    assert sorted(host for host, _ in rows) == hosts
    for host, text in rows:
        assert "in sync" in text, (host, text)
    assert dash.find("#revision").text == str(status["revision"])
    dash.until(lambda d: dash.js("return !!document.querySelector('#flows-chart').offsetHeight && "
                                 "!!Chart.getChart(document.getElementById('flows-chart'))"), "the flows chart drawn")
    assert "admin" in dash.find("#whoami").text
    dash.screenshot("overview")
    dash.assert_no_js_errors(allowed=("/ui/login - Failed to load resource: the server responded with a status of 401",))


def test_topology_shows_every_workload_and_its_reach(dash: Dashboard, tokens: dict[str, str]) -> None:
    dash.log_in(tokens["admin"])
    dash.open("topology")
    def drawn(_: object) -> list[WebElement] | None:
        rows = dash.find_all("#topology-table tbody tr[data-workload]")
        return rows if len(rows) >= len(DEMO_WORKLOADS) else None
    rows = dash.until(drawn, "the workload table")
    shown = {r.get_attribute("data-workload") for r in rows}
    assert shown >= set(DEMO_WORKLOADS) | {RIVAL}, shown
    # The graph: the page hands its Cytoscape instance to tests (window.StockadeTopology); each
    # workload is a node, drawn on the container's canvas.
    nodes = dash.until(lambda d: dash.js("const t = window.StockadeTopology; return t && t.cy ? "
                                         "t.cy.nodes('[kind = \"workload\"]').map((n) => n.data('workload')) : null"),
                       "the topology graph's workload nodes")
    assert set(nodes) == shown
    assert dash.js("return [...document.querySelectorAll('#topology-graph canvas')].some((c) => c.width > 0 && c.height > 0)")
    dash.screenshot("topology")

    # A row click: web-1 may reach app-1 on 9000-9010 (the last side to decide is app-1's
    # ingress rule), and not db-1 (the namespace default).
    dash.find('#topology-table tr[data-workload="shop/web-1"]').click()
    app = dash.wait_for('#workload-detail #reach-out li[data-peer="shop/app-1"]', timeout=15)
    assert "allow" in app.text and "shop/app/api-from-web" in app.text and "9000" in app.text, app.text
    db = dash.find('#workload-detail #reach-out li[data-peer="shop/db-1"]')
    assert "deny" in db.text and "default-deny" in db.text, db.text
    lb = dash.find('#workload-detail #reach-in li[data-peer="shop/lb-1"]')
    assert "allow" in lb.text and "shop/web/http-from-lb" in lb.text, lb.text
    dash.js("document.getElementById('workload-detail').scrollIntoView()")
    dash.screenshot("topology-reach")

    # A click on the graph's node (a real mouse click at the node's drawn position) selects it too.
    graph = dash.find("#topology-graph")
    x, y = dash.js("const p = window.StockadeTopology.cy.$id('wl:shop/db-1').renderedPosition();"
                   "const box = arguments[0].getBoundingClientRect();"  # the node mid-viewport, to be clickable
                   "window.scrollBy(0, box.top + p.y - window.innerHeight / 2); return [p.x, p.y];", graph)
    size = graph.size
    ActionChains(dash.driver).move_to_element_with_offset(graph, int(x - size["width"] / 2),
                                                          int(y - size["height"] / 2)).click().perform()
    # web-1's lists are replaced by db-1's (web-1's own reach-in also has an app-1 entry: wait for
    # the old entries to go before reading the new ones).
    dash.until(staleness_of(db), "web-1's reach to be replaced by db-1's", timeout=15)
    app_in = dash.wait_for('#workload-detail #reach-in li[data-peer="shop/app-1"]', timeout=15)
    assert "allow" in app_in.text and "shop/db/sql-from-app" in app_in.text, app_in.text
    dash.assert_no_js_errors()


def test_denied_probe_appears_on_the_flows_page_within_two_seconds(dash: Dashboard, shop: Lab,
                                                                    tokens: dict[str, str]) -> None:
    dash.log_in(tokens["admin"])
    open_live_flows(dash)
    before = set(dash.js(FLOW_ROWS, "deny", "shop/web-1", "shop/db-1", 5432))
    started = time.monotonic()
    ended = denied_probe(shop, "shop/web-1", "shop/db-1", 5432)
    new, elapsed = dash.elapsed_until(
        lambda d: [s for s in dash.js(FLOW_ROWS, "deny", "shop/web-1", "shop/db-1", 5432) if s not in before],
        "the denied probe's row on the Flows page", since=ended, timeout=10)
    # The record is made at the first dropped SYN, while the probe still waits out its 1 s: the
    # row usually shows before the probe ends (then `elapsed` is the few ms of the last poll).
    print(f"denied probe -> its Flows row: {elapsed:.3f} s after the probe ended "
          f"(the probe command ran {ended - started:.2f} s)")
    assert elapsed <= 2.0, f"the denied flow took {elapsed:.2f} s to appear (more than 2 s)"
    row = dash.find(f'#flows-table tbody tr[data-seq="{new[0]}"]')
    assert row.find_element(By.CSS_SELECTOR, ".verdict").text == "deny"
    assert row.get_attribute("data-rule") == await_record(shop, "shop/web-1", "shop/db-1", 5432)["rule"]
    dash.screenshot("flows")
    dash.assert_no_js_errors()


def test_a_flows_rule_link_opens_the_policy_page_on_that_rule(dash: Dashboard, shop: Lab,
                                                               tokens: dict[str, str]) -> None:
    dash.log_in(tokens["admin"])
    open_live_flows(dash)
    before = set(dash.js(FLOW_ROWS, "deny", "shop/db-1", "shop/app-1", 9000))
    denied_probe(shop, "shop/db-1", "shop/app-1", 9000)
    new = dash.until(lambda d: [s for s in dash.js(FLOW_ROWS, "deny", "shop/db-1", "shop/app-1", 9000) if s not in before],
                     "the denied probe's row on the Flows page")
    row = dash.find(f'#flows-table tbody tr[data-seq="{new[0]}"]')
    rule = row.get_attribute("data-rule")
    assert rule, "a denied flow names the rule that denied it"
    row.find_element(By.CSS_SELECTOR, "a.rule-link").click()
    dash.until(lambda d: dash.path() == "/ui/policy", "the rule link to open the Policy page")
    selected = dash.wait_for(f'#policy-tree [data-rule="{rule}"].selected', timeout=15)
    assert selected.get_attribute("id") == anchor_id(rule)
    assert len(dash.find_all("#policy-tree .selected[data-rule]")) == 1
    dash.until(lambda d: dash.js("const r = arguments[0].getBoundingClientRect();"
                                 "return r.top >= 0 && r.top < window.innerHeight;", selected),
               f"the Policy page to scroll {rule} into view")
    for counter in (".hits-packets", ".hits-bytes", ".hits-flows"):
        assert selected.find_elements(By.CSS_SELECTOR, counter), f"{rule} shows no {counter} counter"
    dash.screenshot("policy")
    dash.assert_no_js_errors()


def test_why_names_the_same_rule_as_the_flow_record(dash: Dashboard, shop: Lab, tokens: dict[str, str]) -> None:
    denied_probe(shop, "shop/lb-1", "shop/app-1", 9000)
    record = await_record(shop, "shop/lb-1", "shop/app-1", 9000)
    dash.log_in(tokens["admin"])
    dash.open("why")
    dash.until(lambda d: dash.find_all('#workload-names option[value="shop/lb-1"]'), "the workload names")
    dash.find("#why-from").send_keys("shop/lb-1")
    dash.find("#why-to").send_keys("shop/app-1")
    dash.find("#why-port").send_keys("9000")
    Select(dash.find("#why-protocol")).select_by_visible_text("tcp")
    dash.find("#why-submit").click()
    dash.wait_text("#why-verdict", "deny", timeout=15)
    rule = dash.find("#why-rule").get_attribute("data-rule")
    assert rule == record["rule"], (rule, record)
    assert dash.find("#why-rule a.rule-link").text == rule
    flows = dash.until(lambda d: dash.find_all(f'#why-flows tbody tr[data-rule="{rule}"]'), "the rule's flow records")
    assert any("shop/lb-1" in f.text and "shop/app-1" in f.text for f in flows), [f.text for f in flows]
    # The rule's counters: flow records count at once (packets come with the agents' next heartbeat).
    flows_counted = dash.until(lambda d: dash.js("const c = document.querySelector('#why-counters .hits-flows');"
                                                 "return c ? c.textContent : null;"), "the rule's counters")
    assert int(flows_counted) >= 1, flows_counted
    dash.screenshot("why")
    dash.assert_no_js_errors()


def test_a_tenant_session_shows_no_other_namespace(dash: Dashboard, shop: Lab, tokens: dict[str, str]) -> None:
    # Records the tenant must not see by name: one across the namespaces, one inside ops.
    denied_probe(shop, "shop/web-1", "ops/bastion", 22)
    denied_probe(shop, "ops/bastion", "ops/dns-1", 53, protocol="udp")
    await_record(shop, "shop/web-1", "ops/bastion", 22)
    await_record(shop, "ops/bastion", "ops/dns-1", 53)
    others = [w for w in DEMO_WORKLOADS + [RIVAL] if not w.startswith("shop/")]
    names = [w.split("/")[1] for w in others]  # bastion, dns-1, vault: named nowhere in the shop

    def leaks(text: str) -> list[str]:
        return [n for n in names if n in text]

    dash.log_in(tokens["tenant"])
    assert "shop" in dash.find("#whoami").text

    dash.open("topology")
    rows = dash.until(lambda d: dash.find_all("#topology-table tbody tr[data-workload]"), "the workload table")
    assert {r.get_attribute("data-workload") for r in rows} == {w for w in DEMO_WORKLOADS if w.startswith("shop/")}
    assert not leaks(dash.find("main").text) and not leaks(dash.driver.page_source)

    dash.open("why")
    options = dash.until(lambda d: dash.find_all("#workload-names option"), "the workload names")
    values = {o.get_attribute("value") for o in options}
    assert values == {w for w in DEMO_WORKLOADS if w.startswith("shop/")}, values

    dash.open("flows")
    dash.wait_text("#flows-live-text", "live")
    dash.until(lambda d: dash.js(FLOW_ROWS, "deny", "shop/web-1", "", 22) or None,
               "the tenant's own denied flow (shop/web-1 -> ops :22)")
    table = dash.find("#flows-table").text
    assert not leaks(table), f"the tenant's Flows page names {leaks(table)}:\n{table}"
    dash.screenshot("tenant-flows")

    # Asking for another namespace is refused (403) and the page says so.
    assert dash.fetch_status("/objects/workloads?namespace=ops") == 403
    dash.open("flows", namespace="ops")
    message = dash.until(lambda d: dash.page_error(), "the page's error for namespace ops")
    assert "ops" in message, message
    dash.assert_no_js_errors(allowed=("status of 403",))


def test_changes_diff_and_rollback_offered_to_admins_only(dash: Dashboard, shop: Lab, tokens: dict[str, str]) -> None:
    build = "b" + secrets.token_hex(3)
    before = shop.json("get", "workload", "vault", "-n", "rival")["metadata"]["labels"]["build"]
    shop.apply_text(rival_workload(build))
    newest = shop.client().revisions(1)[0]["revision"]

    dash.log_in(tokens["admin"])
    dash.open("changes")
    dash.until(lambda d: dash.find_all(f'#revisions tbody tr[data-revision="{newest}"]'), f"revision {newest} listed")
    assert dash.find("#diff-to").get_attribute("value") == str(newest)
    assert dash.find("#diff-from").get_attribute("value") == str(newest - 1)
    dash.find("#diff-submit").click()
    diff = dash.wait_for("#diff-output")
    dash.until(lambda d: "rival/vault" in diff.text, "the diff to name the changed workload")
    assert f'- metadata.labels.build: "{before}"' in diff.text, diff.text
    assert f'+ metadata.labels.build: "{build}"' in diff.text, diff.text
    older = dash.find_all("#revisions tbody tr[data-revision] button.rollback")
    assert older, "an admin is offered a rollback on older revisions"
    assert not dash.find_all(f'#revisions tbody tr[data-revision="{newest}"] button.rollback')
    assert dash.find_all("#host-revisions tbody tr[data-host]")
    dash.screenshot("changes")
    dash.assert_no_js_errors()

    dash.log_in(tokens["viewer"])
    dash.open("changes")
    dash.until(lambda d: dash.find_all(f'#revisions tbody tr[data-revision="{newest}"]'), "the viewer's history")
    assert not dash.find_all("button.rollback"), "a viewer is offered a rollback"
    assert "may not roll back" in dash.find("main").text
    dash.assert_no_js_errors()


def test_logout_returns_to_login_and_ends_the_session(dash: Dashboard, shop: Lab, tokens: dict[str, str]) -> None:
    dash.log_in(tokens["viewer"])
    cookie = dash.session_cookie()
    assert cookie
    dash.find("#logout").click()
    dash.until(lambda d: dash.path() == "/ui/login", "logout to land on the login page")
    dash.wait_for("#token")
    assert dash.session_cookie() is None

    # The old cookie, presented again, opens nothing: not the API, not a page.
    request = urllib.request.Request(dash.url("/api/v1/status"), headers={"Cookie": f"{SECURE_COOKIE}={cookie}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10, context=shop.tls())
    assert refused.value.code == 401
    dash.driver.add_cookie({"name": SECURE_COOKIE, "value": cookie, "path": "/", "secure": True})
    dash.driver.get(dash.url("/ui/overview"))
    dash.until(lambda d: dash.path() == "/ui/login", "the old cookie to be sent back to the login page")
    dash.assert_no_js_errors()
