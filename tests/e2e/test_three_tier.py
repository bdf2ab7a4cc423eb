"""The first slice end to end: real lab, real controller and agents, real packets.

Each test states one behaviour of the product and can fail: the verdicts are
decided by sockets in the workloads' namespaces, not by the code under test.
"""

from __future__ import annotations

import ipaddress
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import sys
from pathlib import Path

import pytest
import yaml

from stockade.lab.probe import probe
from tests.e2e.conftest import REPO, Lab
from tests.waiting import wait_until

pytestmark = pytest.mark.kernel

FLOWS = yaml.safe_load((REPO / "examples" / "three-tier.flows.yaml").read_text())
SEEN = {"allow": "allowed", "deny": "denied"}


def _ip(wl: dict, family: int) -> str:
    return next(ip for ip in wl["status"]["ips"] if ipaddress.ip_address(ip).version == family)


def _probe(lab: Lab, src: str, dst: str, protocol: str, port: int = 0, family: int = 4, **kw) -> str:
    s, d = lab.workload(src), lab.workload(dst)
    return probe(s["status"]["netns"], d["status"]["netns"], _ip(d, family), protocol, port, **kw).verdict


def _settled(lab: Lab) -> dict:
    """`status` once every agent reports the current revision in sync (a hand edit of a kernel
    table by another test of this module may still be under repair when a test starts)."""
    def settled() -> dict | None:
        status = lab.json("status")
        return status if all(a["inSync"] and a["revision"] == status["revision"] for a in status["agents"]) else None
    return wait_until(settled, "every agent to report the current revision in sync", timeout=15,
                      describe=lambda: lab.json("status"))


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f"{f['from']}->{f['to']}:{f['protocol']}/{f.get('port', '')}"
                         f"v{f.get('family', 4)}")
def test_three_tier_flow_verdict_matches_policy(shop: Lab, flow: dict) -> None:
    args = ["probe", "--from", flow["from"], "--to", flow["to"], "--protocol", flow["protocol"],
            "--family", str(flow.get("family", 4))]
    if flow.get("port"):
        args += ["--port", str(flow["port"])]
    result = shop.json(*args)
    assert result["verdict"] == SEEN[flow["expect"]], result
    # trace explains the same verdict from the compiled programs, naming a rule of the right kind
    explained = shop.json("trace", *args[1:])
    assert explained["verdict"] == flow["expect"], explained
    deciding = (explained["ingress"] or explained["egress"])["rules"][-1]
    assert deciding["action"] == ("accept" if flow["expect"] == "allow" else "drop"), explained


def test_three_tier_over_ipv6_same_and_cross_host(shop: Lab) -> None:
    assert _probe(shop, "shop/lb-1", "shop/web-1", "tcp", 8080, family=6) == "allowed"   # same host
    assert _probe(shop, "shop/lb-1", "shop/web-2", "tcp", 8080, family=6) == "allowed"   # cross host
    assert _probe(shop, "shop/web-1", "shop/db-1", "tcp", 5432, family=6) == "denied"
    assert _probe(shop, "shop/app-1", "ops/dns-1", "udp", 53, family=6) == "allowed"
    assert _probe(shop, "ops/bastion", "shop/web-2", "icmp", family=6) == "allowed"


def test_workloads_report_namespace_and_addresses(shop: Lab) -> None:
    items = shop.json("get", "workloads", "-A")["items"]
    assert {f"{w['metadata']['namespace']}/{w['metadata']['name']}" for w in items} >= {"shop/web-2", "ops/dns-1"}
    for w in items:
        families = sorted(ipaddress.ip_address(ip).version for ip in w["status"]["ips"])
        assert families == [4, 6], w
        assert w["status"]["netns"].startswith(f"{shop.prefix}-{w['spec']['host']}.")
        ns_list = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert w["status"]["netns"] in ns_list


def test_the_demo_walkthrough_runs_and_every_probe_matches(shop: Lab) -> None:
    """What `make demo` runs after applying the example (before the tests below change the state)."""
    done = subprocess.run([sys.executable, str(REPO / "examples" / "three-tier" / "demo.py")], env=shop.env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "MISMATCH" not in done.stdout and "✓" in done.stdout
    assert "Controller API: https://" in done.stdout
    # The dashboard's URL, and a token that logs in to it (printed for the person running the demo).
    url = done.stdout.split("Dashboard: ", 1)[1].split()[0]
    token = done.stdout.split("valid 12 h):", 1)[1].split()[0]
    assert url == shop.context().controller.split(",")[0] + "/ui/"
    login = urllib.request.Request(url + "login", data=urllib.parse.urlencode({"token": token}).encode(), method="POST")
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=shop.tls()), _NoRedirect())
    try:
        opener.open(login, timeout=10)
        raise AssertionError("logging in should answer 303 to the overview")
    except urllib.error.HTTPError as answer:
        assert answer.code == 303 and answer.headers["location"] == "/ui/overview"
        cookie = answer.headers["set-cookie"]  # HTTPS: the __Host- cookie, Secure
        assert cookie.startswith("__Host-stockade_session=") and "Secure" in cookie


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def test_return_traffic_is_accepted_by_conntrack_but_reverse_connections_are_not(shop: Lab) -> None:
    # The probe only reports "allowed" once the server's reply came back through both firewalls.
    assert _probe(shop, "shop/app-1", "shop/db-1", "tcp", 5432) == "allowed"
    assert _probe(shop, "shop/db-1", "shop/app-1", "tcp", 5432) == "denied"
    assert _probe(shop, "shop/app-1", "ops/dns-1", "udp", 53) == "allowed"
    assert _probe(shop, "ops/dns-1", "shop/app-1", "udp", 53) == "denied"


def test_default_deny_with_no_policy(shop: Lab) -> None:
    shop.apply_text("""
apiVersion: stockade.io/v1
kind: Namespace
metadata: {name: empty}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {name: a, namespace: empty}
spec: {host: hv1}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {name: b, namespace: empty}
spec: {host: hv1}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {name: c, namespace: empty}
spec: {host: hv2}
""", "--wait", "--timeout", "60")
    for dst in ("empty/b", "empty/c"):
        assert _probe(shop, "empty/a", dst, "tcp", 80) == "denied"
        assert _probe(shop, "empty/a", dst, "udp", 53) == "denied"
        assert _probe(shop, "empty/a", dst, "icmp") == "denied"


def test_spoofed_source_address_is_dropped(shop: Lab) -> None:
    src, dst = shop.workload("shop/app-1"), shop.workload("shop/db-1")
    spoofed = "198.18.99.99"
    netns = src["status"]["netns"]
    subprocess.run(["ip", "-n", netns, "addr", "add", f"{spoofed}/32", "dev", "eth0"], check=True)
    try:
        real = probe(netns, dst["status"]["netns"], _ip(dst, 4), "tcp", 5432).verdict
        fake = probe(netns, dst["status"]["netns"], _ip(dst, 4), "tcp", 5432, src_ip=spoofed).verdict
    finally:
        subprocess.run(["ip", "-n", netns, "addr", "del", f"{spoofed}/32", "dev", "eth0"])
    assert real == "allowed"
    assert fake == "denied"


def test_relabelling_changes_reachability_without_policy_edit(shop: Lab) -> None:
    before = shop.json("get", "policies", "-n", "shop")
    assert _probe(shop, "shop/lb-1", "shop/web-2", "tcp", 8080) == "allowed"
    assert _probe(shop, "shop/web-2", "shop/app-1", "tcp", 9000) == "allowed"
    doc = shop.workload("shop/web-2")
    relabelled = {"apiVersion": doc["apiVersion"], "kind": "Workload",
                  "metadata": {"name": "web-2", "namespace": "shop", "labels": {"tier": "batch", "env": "prod"}},
                  "spec": doc["spec"]}
    shop.apply_text(yaml.safe_dump(relabelled), "--wait", "--timeout", "60")
    try:
        assert _probe(shop, "shop/lb-1", "shop/web-2", "tcp", 8080) == "denied"
        assert _probe(shop, "shop/web-2", "shop/app-1", "tcp", 9000) == "denied"
        assert shop.json("get", "policies", "-n", "shop") == before  # no policy was edited
    finally:
        relabelled["metadata"]["labels"] = {"tier": "web", "env": "prod"}
        shop.apply_text(yaml.safe_dump(relabelled), "--wait", "--timeout", "60")
    assert _probe(shop, "shop/lb-1", "shop/web-2", "tcp", 8080) == "allowed"


def test_hand_edit_of_the_kernel_table_is_repaired(shop: Lab) -> None:
    before = shop.nft("hv1", "list", "table", "inet", "stockade").stdout
    assert "egress_dispatch" in before
    # An operator "fixes" a problem by hand: accept everything forwarded before our policy.
    edit = shop.nft("hv1", "insert", "rule", "inet", "stockade", "egress", "accept")
    assert edit.returncode == 0, edit.stderr
    wait_until(lambda: shop.nft("hv1", "list", "table", "inet", "stockade").stdout.count("\n") ==
               before.count("\n") and "\t\taccept\n" not in shop.nft("hv1", "list", "table", "inet",
                                                                    "stockade").stdout,
               "hv1's agent to undo the hand-inserted accept", timeout=10)
    assert _probe(shop, "shop/web-1", "shop/db-1", "tcp", 5432) == "denied"
    # Deleting the whole table is drift too.
    assert shop.nft("hv1", "delete", "table", "inet", "stockade").returncode == 0
    wait_until(lambda: shop.nft("hv1", "list", "table", "inet", "stockade").returncode == 0,
               "hv1's agent to put its deleted table back", timeout=10)
    assert _probe(shop, "shop/web-1", "shop/db-1", "tcp", 5432) == "denied"
    assert _probe(shop, "shop/app-1", "shop/db-1", "tcp", 5432) == "allowed"


BAD_DOCS = {
    "unknown field": ("""
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: bad, namespace: shop}
spec: {appliesTo: {group: web}, ingress: [{action: allow, colour: red}]}
""", ["Policy shop/bad", "spec.ingress[0].colour", "unknown field"]),
    "selector that does not parse": ("""
apiVersion: stockade.io/v1
kind: Group
metadata: {name: bad, namespace: shop}
spec: {selector: {matchExpressions: [{key: tier, operator: Near, values: [web]}]}}
""", ["Group shop/bad", "spec.selector", "Near"]),
    "port out of range": ("""
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: bad, namespace: shop}
spec: {appliesTo: {group: web}, ingress: [{action: allow, ports: [{protocol: TCP, port: 70000}]}]}
""", ["Policy shop/bad", "spec.ingress[0].ports[0]", "70000"]),
    "bad CIDR": ("""
apiVersion: stockade.io/v1
kind: Group
metadata: {name: bad, namespace: shop}
spec: {cidrs: [198.19.0.0/33]}
""", ["Group shop/bad", "spec.cidrs", "198.19.0.0/33"]),
    "address outside the allowed ranges": ("""
apiVersion: stockade.io/v1
kind: Workload
metadata: {name: bad, namespace: shop}
spec: {host: hv1, ips: [203.0.113.5]}
""", ["Workload shop/bad", "spec.ips[0]", "203.0.113.5"]),
    "reference to a group that does not exist": ("""
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: bad, namespace: shop}
spec: {appliesTo: {group: nosuchgroup}}
""", ["Policy shop/bad", "spec.appliesTo.group", "does not exist"]),
}


@pytest.mark.parametrize("case", sorted(BAD_DOCS))
def test_bad_input_is_refused_and_changes_nothing(shop: Lab, case: str) -> None:
    text, expected = BAD_DOCS[case]
    good = """
apiVersion: stockade.io/v1
kind: Workload
metadata: {name: innocent, namespace: shop, labels: {tier: web}}
spec: {host: hv1}
---
"""
    revision = _settled(shop)["revision"]
    kernel = {h: shop.nft(h, "list", "table", "inet", "stockade").stdout for h in ("hv1", "hv2")}
    res = shop.apply_text(good + text, check=False)
    assert res.returncode == 2, res
    for fragment in expected:
        assert fragment in res.stderr, (fragment, res.stderr)
    assert shop.json("status")["revision"] == revision
    assert shop.cli("get", "workload", "innocent", "-n", "shop", check=False).returncode != 0
    # No new revision, so nothing for an agent to enforce: each still reports the old one, in sync.
    agents = {a["host"]: a for a in shop.json("status")["agents"]}
    assert {h: (a["revision"], a["inSync"]) for h, a in agents.items()} == {h: (revision, True) for h in ("hv1", "hv2")}
    for h in ("hv1", "hv2"):
        now = shop.nft(h, "list", "table", "inet", "stockade").stdout
        strip = lambda s: "\n".join(l for l in s.splitlines() if "counter" not in l)  # noqa: E731
        assert strip(now) == strip(kernel[h])


def test_status_reports_every_agent_in_sync(shop: Lab) -> None:
    # Another test of this module may have just edited a kernel table by hand: the agents repair
    # that within seconds, and this test is about what status says once they have.
    status = _settled(shop)
    hosts = {a["host"]: a for a in status["agents"]}
    assert set(hosts) == {"hv1", "hv2"}
    for a in hosts.values():
        assert a["revision"] == status["revision"]
        assert a["inSync"] is True
        assert a["programHash"]


def test_deleting_a_workload_removes_its_namespace(shop: Lab) -> None:
    shop.apply_text("""
apiVersion: stockade.io/v1
kind: Workload
metadata: {name: temp, namespace: shop}
spec: {host: hv2}
""", "--wait", "--timeout", "60")
    netns = shop.workload("shop/temp")["status"]["netns"]
    listed = lambda: netns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout  # noqa: E731
    assert listed()
    shop.cli("delete", "workload", "temp", "-n", "shop", "--wait")
    wait_until(lambda: not listed(), f"the namespace {netns} to be removed", timeout=10)
