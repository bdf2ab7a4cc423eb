"""agent.rule_counters: the kernel's per-rule counters as a status report carries them.

Without root: which comments are rules, the cap (most-hit kept, the rest counted), both tables
summed, over listings shaped as `nft -j list table` gives them. With the real kernel (marker
`kernel`): real packets through a compiled program in scratch network namespaces, counted under
the rule ids `stockade trace` names, reach the controller in the agent's heartbeat report and
come out of GET /api/v1/rules.
"""

from __future__ import annotations

from typing import Any

from stockade.agent.rule_counters import MAX_REPORTED_RULES, RuleCounterReader, is_rule, reportable
from stockade.model.reports import RuleCount


def _rule(chain: str, comment: str, packets: int, octets: int) -> dict[str, Any]:
    return {"rule": {"family": "inet", "table": "stockade", "chain": chain, "comment": comment,
                     "expr": [{"match": {}}, {"counter": {"packets": packets, "bytes": octets}}, {"accept": None}]}}


class Tables:
    def __init__(self, inet: list[dict[str, Any]], ports: list[dict[str, Any]] | None = None) -> None:
        self.inet, self.ports = inet, ports

    def list_table(self) -> dict[str, Any] | None:
        return {"nftables": [{"metainfo": {}}, *self.inet]}

    def list_ports_table(self) -> dict[str, Any] | None:
        return None if self.ports is None else {"nftables": self.ports}


def test_policy_rules_and_namespace_defaults_are_reported_plumbing_is_not() -> None:
    tables = Tables([
        _rule("pol_web_1a2b_in", "shop/web/https", 3, 180),
        _rule("pol_web_1a2b_in", "shop/web/https", 2, 120),    # the rate-limited twin: same rule
        _rule("rec_web_1a2b_eg", "shop/web/https", 1, 60),     # an egress rule with the same id
        _rule("wl_web_1a2b_in", "shop/default-deny/ingress", 4, 240),
        _rule("pol_web_1a2b_in", "tier-passed", 9, 9), _rule("wl_web_1a2b_in", "tier application", 9, 9),
        _rule("egress", "invalid", 9, 9), _rule("sp_web_1a2b", "antispoof", 9, 9),
        _rule("guard", "unknown-interface", 9, 9)],
        ports=[_rule("ports_in", "unknown-interface", 1, 1)])
    counters, omitted = RuleCounterReader(tables).read()
    assert counters == {"shop/web/https": {"ingress": RuleCount(5, 300), "egress": RuleCount(1, 60)},
                        "shop/default-deny/ingress": {"ingress": RuleCount(4, 240)}}
    assert omitted == 0
    assert not is_rule("tier baseline") and is_rule("policy/rule")


def test_above_the_cap_the_most_hit_rules_are_kept_and_the_rest_counted() -> None:
    counts = {(f"ns/p/r{i}", "ingress"): (i, i * 60) for i in range(10)}
    kept, omitted = reportable(counts, cap=3)
    assert kept == {"ns/p/r9": {"ingress": RuleCount(9, 540)}, "ns/p/r8": {"ingress": RuleCount(8, 480)},
                    "ns/p/r7": {"ingress": RuleCount(7, 420)}}
    assert omitted == 7
    assert reportable(counts, cap=3) == (kept, omitted)  # deterministic
    assert MAX_REPORTED_RULES >= 1000


# ================================================================== real packets, real agent and controller

import asyncio  # noqa: E402 - the kernel half's imports, kept with it
import contextlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Iterator  # noqa: E402

import pytest  # noqa: E402

from stockade.agent.loop import Agent, AgentConfig  # noqa: E402
from stockade.agent.reconciler import Reconciler  # noqa: E402
from stockade.client import ControllerClient  # noqa: E402
from stockade.compile.trace import Flow, trace_flow  # noqa: E402
from stockade.controller.auth import create_token_file  # noqa: E402
from stockade.controller.config import ControllerConfig  # noqa: E402
from stockade.controller.main import start_in_thread  # noqa: E402
from stockade.dataplane.nft_driver import NftDriver, run_command  # noqa: E402
from stockade.model.kinds import parse_object  # noqa: E402
from stockade.model.state import DesiredState  # noqa: E402
from tests.kernel_table import kernel  # noqa: E402
from tests.waiting import wait_until  # noqa: E402

CLIENT_IP, WEB_IP = "198.18.77.2", "198.18.77.6"
WEB_PORT, CLOSED_PORT = 8080, 9090


def sh(*cmd: str) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, f"{' '.join(cmd)}: {res.stderr}"


class RoutedHost:
    """A host namespace routing between two workload namespaces, each on a veth whose host end
    is the workload's interface (as the lab and CNI make them)."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.host, self.client, self.web = f"stkrc-h-{tag}", f"stkrc-c-{tag}", f"stkrc-w-{tag}"
        self.client_if, self.web_if = f"stk{tag}c", f"stk{tag}w"  # 10 characters

    def up(self) -> None:
        for ns in (self.host, self.client, self.web):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        for ns, iface, mine, gateway in ((self.client, self.client_if, CLIENT_IP, "198.18.77.1"),
                                         (self.web, self.web_if, WEB_IP, "198.18.77.5")):
            sh("ip", "-n", self.host, "link", "add", iface, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "-n", self.host, "addr", "add", f"{gateway}/30", "dev", iface)
            sh("ip", "-n", self.host, "link", "set", iface, "up")
            sh("ip", "-n", ns, "addr", "add", f"{mine}/30", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "route", "add", "default", "via", gateway)
        sh("ip", "netns", "exec", self.host, "sysctl", "-qw", "net.ipv4.ip_forward=1")

    def down(self) -> None:
        for ns in (self.host, self.client, self.web):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def driver(self) -> NftDriver:
        return NftDriver(runner=lambda cmd, stdin=None: run_command(["ip", "netns", "exec", self.host, *cmd], stdin))

    def objects(self) -> list[dict[str, Any]]:
        def doc(kind: str, name: str, **spec: Any) -> dict[str, Any]:
            meta: dict[str, Any] = {"name": name, "namespace": "shop"}
            if kind == "Workload":
                meta["labels"] = {"tier": name}
            return {"apiVersion": "stockade.io/v1", "kind": kind, "metadata": meta, "spec": spec}
        return [{"apiVersion": "stockade.io/v1", "kind": "Namespace", "metadata": {"name": "shop"}},
                doc("Workload", "client", host="hv1", ips=[CLIENT_IP], interface=self.client_if),
                doc("Workload", "web", host="hv1", ips=[WEB_IP], interface=self.web_if),
                doc("Policy", "client-out", appliesTo={"selector": {"matchLabels": {"tier": "client"}}},
                    egress=[{"id": "any-out", "action": "allow"}]),
                doc("Policy", "web-in", appliesTo={"selector": {"matchLabels": {"tier": "web"}}},
                    ingress=[{"id": "http", "action": "allow", "ports": [{"protocol": "TCP", "port": WEB_PORT}]}])]

    def connect(self, port: int) -> bool:
        """A TCP connection from the client to the web workload: True when it was accepted."""
        code = (f"import socket, sys\ns = socket.socket(); s.settimeout(1.0)\n"
                f"try:\n    s.connect(('{WEB_IP}', {port})); print('open')\n"
                f"except OSError as e:\n    print('closed', e)\n")
        out = subprocess.run(["ip", "netns", "exec", self.client, sys.executable, "-c", code],
                             capture_output=True, text=True, timeout=30)
        return out.stdout.startswith("open")


@pytest.fixture
def routed() -> Iterator[RoutedHost]:
    host = RoutedHost()
    try:
        host.up()
        yield host
    finally:
        host.down()


@pytest.fixture
def server(routed: RoutedHost) -> Iterator[None]:
    """A listener on the web workload's port (accepting and closing, for as long as the test runs)."""
    code = (f"import socket\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('{WEB_IP}', {WEB_PORT})); s.listen(); print('ready', flush=True)\n"
            f"while True:\n    c, _ = s.accept(); c.close()\n")
    proc = subprocess.Popen(["ip", "netns", "exec", routed.web, sys.executable, "-u", "-c", code],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield
    finally:
        proc.kill()
        proc.wait(10)


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[tuple[ControllerClient, ControllerClient]]:
    tokens = create_token_file(tmp_path / "tokens.json", [{"name": "admin", "role": "admin"},
                                                          {"name": "hv1", "role": "agent", "host": "hv1"}])
    running = start_in_thread(ControllerConfig(db_path=tmp_path / "c.db", tokens_file=tmp_path / "tokens.json"))
    try:
        with ControllerClient(running.url, tokens["admin"]) as admin, \
                ControllerClient(running.url, tokens["hv1"]) as agent:
            yield admin, agent
    finally:
        running.stop()


@contextlib.contextmanager
def running(agent: Agent) -> Iterator[None]:
    """The agent's loop in a thread of its own until the block ends (also on failure)."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=lambda: loop.run_until_complete(agent.run(stop)), daemon=True)
    thread.start()
    try:
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(20)
        loop.close()
        assert not thread.is_alive(), "the agent did not stop"


def _find(view: dict[str, Any], rule: str, direction: str) -> dict[str, Any] | None:
    for tier in view["tiers"]:
        for policy in tier["policies"]:
            for r in policy["rules"]:
                if (r["id"], r["direction"]) == (rule, direction):
                    return r
    for d in view["defaults"]:
        for r in d["rules"]:
            if (r["id"], r["direction"]) == (rule, direction):
                return r
    return None


@kernel
def test_real_packets_are_counted_under_the_rule_trace_names_and_reach_the_controller(
        routed: RoutedHost, server: None, controller: tuple[ControllerClient, ControllerClient]) -> None:
    admin, agent_client = controller
    driver = routed.driver()
    agent = Agent(AgentConfig(host="hv1", watch_timeout=2.0, drift_interval=0.2, heartbeat_interval=0.3,
                              retry_interval=0.2),
                  agent_client, Reconciler(driver, "hv1"), rule_counters=RuleCounterReader(driver).read)
    docs = routed.objects()
    revision = int(admin.apply(docs, "test")["revision"])
    state = DesiredState.from_objects(revision, [parse_object(d, i) for i, d in enumerate(docs)])
    allowed = trace_flow(state, Flow(("shop", "client"), ("shop", "web"), "tcp", WEB_PORT))
    denied = trace_flow(state, Flow(("shop", "client"), ("shop", "web"), "tcp", CLOSED_PORT))
    assert (allowed.verdict, allowed.deciding_rule) == ("allow", "shop/web-in/http")
    assert (denied.verdict, denied.deciding_rule) == ("deny", "shop/default-deny/ingress")
    with running(agent):
        wait_until(lambda: any(a["host"] == "hv1" and a["revision"] >= revision and a["inSync"]
                               for a in admin.status()["agents"]), "hv1 enforcing the shop")
        # Nothing has crossed the rules yet: every rule is unused.
        view = admin.rules()
        assert _find(view, "shop/web-in/http", "ingress")["unused"] is True  # type: ignore[index]
        assert routed.connect(WEB_PORT) and routed.connect(WEB_PORT)
        assert not routed.connect(CLOSED_PORT)

        def counted() -> dict[str, Any] | None:
            view = admin.rules()
            http, default = _find(view, "shop/web-in/http", "ingress"), _find(view, "shop/default-deny/ingress", "ingress")
            done = http and default and http["packets"] >= 2 and default["packets"] >= 1
            return view if done else None

        view = wait_until(counted, "the connections counted in hv1's report", timeout=15,
                          describe=lambda: admin.rules(rule="shop/web-in/http"))
    http = _find(view, "shop/web-in/http", "ingress")
    assert http is not None
    # Only a connection's first packet meets the policy (established ones are accepted before it).
    assert http["packets"] == 2 and http["bytes"] >= 2 * 40 and not http["unused"]
    assert [h["host"] for h in http["hosts"]] == ["hv1"]
    out = _find(view, "shop/client-out/any-out", "egress")
    assert out is not None and out["packets"] >= 3  # both connections and the refused attempt left the client
    assert view["hosts"] == ["hv1"] and view["omitted"] == {}
