"""Egress by domain name with real DNS and real sockets (issue 18).

A two-host lab with its outside world: the lab's resolver (dnsmasq, `lab up`) and external
endpoints published under names (`lab external add`). The workloads resolve through their
netns's resolv.conf, as any program does, and connect at once: the first connection after a
lookup must already be allowed, with no retry. Denied connections are timeouts (deny drops).
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any, Iterator

import dns.message
import dns.query
import dns.rrset
import pytest

from stockade.lab import netns as lab_netns
from stockade.lab import probe
from stockade.lab.naming import DNS_SERVER_V4
from stockade.lab.stream import Stream, echo_server
from tests.e2e.conftest import Lab, make_lab

pytestmark = pytest.mark.kernel

SHORT_TTL = 3  # seconds (the lab's agents learn with a 1 s minimum)
EXTERNALS = {
    # name: (its DNS names, ttl, CNAMEs pointing at its first name)
    "partner": (["api.partner.example"], 300, []),
    "first": (["first.partner.example"], 300, []),   # resolved by one test only: "not before" holds in any order
    "other": (["other.partner.example"], 300, []),
    "cdn": (["img.cdn.example"], 300, []),
    "hosting": (["lb.hosting.example"], 300, ["www.partner.example"]),
    "short": (["short.partner.example"], SHORT_TTL, []),
    "evil": (["evil.example"], 300, []),
}
POLICY = f"""
apiVersion: stockade.io/v1
kind: Namespace
metadata: {{name: app}}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {{name: client, namespace: app, labels: {{role: client}}}}
spec: {{host: hv1}}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {{name: quiet, namespace: app, labels: {{role: quiet}}}}
spec: {{host: hv2}}
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {{name: out, namespace: app}}
spec:
  appliesTo: {{selector: {{matchLabels: {{role: client}}}}}}
  egress:
    - id: dns
      action: allow
      to: [{{cidr: {DNS_SERVER_V4}/32}}]
      ports: [{{protocol: UDP, port: 53}}, {{protocol: TCP, port: 53}}]
    - id: partner-api
      action: allow
      to: [{{fqdn: api.partner.example}}, {{fqdn: www.partner.example}}, {{fqdn: short.partner.example}},
           {{fqdn: first.partner.example}}]
      ports: [{{protocol: TCP, port: 443}}]
    - id: cdn
      action: allow
      to: [{{fqdn: "*.cdn.example"}}]
    - id: any-dns-server-out-there
      action: allow
      to: [{{cidr: 198.19.0.0/16}}]
      ports: [{{protocol: UDP, port: 5353}}]
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, dict[str, dict[str, Any]]]]:
    for lab in make_lab(tmp_path_factory.mktemp("fqdn"), 2):
        for name, (names, ttl, cnames) in EXTERNALS.items():
            args = ["lab", "external", "add", name, "--ttl", str(ttl)]
            for n in names:
                args += ["--dns", n]
            for c in cnames:
                args += ["--cname", c]
            lab.cli(*args)
        externals = {e["name"]: e for e in lab.json("lab", "external", "list")}
        lab.apply_text(POLICY, "--wait", "--timeout", "60")
        with _servers(externals):
            yield lab, externals


class _servers:
    """TCP 443 and 80 in every external endpoint (probe servers, for the whole module)."""

    def __init__(self, externals: dict[str, dict[str, Any]]) -> None:
        # Not `short`: its test runs an echo server on 443 for a long-lived connection.
        self.contexts = [probe.serve(e["netns"], "tcp", port) for name, e in externals.items() if name != "short"
                         for port in (443, 80)]

    def __enter__(self) -> None:
        for c in self.contexts:
            c.__enter__()

    def __exit__(self, *exc: object) -> None:
        for c in reversed(self.contexts):
            c.__exit__(None, None, None)


def wl_netns(lab: Lab, name: str) -> str:
    return lab.workload(f"app/{name}")["status"]["netns"]


def ipv4(external: dict[str, Any]) -> str:
    return next(ip for ip in external["ips"] if ":" not in ip)


def ipv6(external: dict[str, Any]) -> str:
    return next(ip for ip in external["ips"] if ":" in ip)


# What a program in the workload does: resolve with the system's resolver (the netns's resolv.conf),
# then connect at once, once. Prints the address and the outcome.
RESOLVE_AND_CONNECT = r"""
import socket, sys
name, port, family = sys.argv[1], int(sys.argv[2]), socket.AF_INET6 if sys.argv[3] == "6" else socket.AF_INET
try:
    ip = socket.getaddrinfo(name, port, family, socket.SOCK_STREAM)[0][4][0]
except OSError as e:
    print("unresolved", e); sys.exit(0)
s = socket.socket(family, socket.SOCK_STREAM); s.settimeout(1.5)
try:
    s.connect((ip, port)); print(ip, "allowed")
except OSError as e:
    print(ip, "denied", e)
"""


def resolve_and_connect(lab: Lab, workload: str, name: str, port: int, family: int = 4) -> tuple[str, str]:
    out = subprocess.run(["ip", "netns", "exec", wl_netns(lab, workload), "python3", "-c", RESOLVE_AND_CONNECT,
                          name, str(port), str(family)], capture_output=True, text=True, timeout=30).stdout.split()
    return out[0], out[1]


def connect(lab: Lab, workload: str, ip: str, port: int) -> str:
    """One TCP connection from the workload: "allowed" when the handshake completes, else "denied"."""
    import socket

    def attempt() -> str:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            try:
                sock.connect((ip, port))
            except OSError:
                return "denied"
            return "allowed"

    return lab_netns.run_in(wl_netns(lab, workload), attempt)


def test_the_first_connection_after_a_lookup_is_allowed_and_not_before(world) -> None:
    lab, ext = world
    first = ipv4(ext["first"])
    assert connect(lab, "client", first, 443) == "denied"  # an address nobody resolved yet
    assert resolve_and_connect(lab, "client", "first.partner.example", 443) == (first, "allowed")
    assert connect(lab, "client", first, 80) == "denied"   # the rule's port only


def test_another_name_in_the_same_range_stays_denied(world) -> None:
    lab, ext = world
    assert resolve_and_connect(lab, "client", "other.partner.example", 443) == (ipv4(ext["other"]), "denied")


def test_a_wildcard_opens_every_name_below_it(world) -> None:
    lab, ext = world
    assert resolve_and_connect(lab, "client", "img.cdn.example", 80) == (ipv4(ext["cdn"]), "allowed")


def test_a_cname_chain_opens_the_address_at_its_end(world) -> None:
    lab, ext = world
    assert resolve_and_connect(lab, "client", "www.partner.example", 443) == (ipv4(ext["hosting"]), "allowed")
    # The CNAME's target is not itself a name the rule allows: only what was learned for the chain.
    assert connect(lab, "client", ipv4(ext["hosting"]), 80) == "denied"


def test_aaaa_answers_open_ipv6(world) -> None:
    lab, ext = world
    assert resolve_and_connect(lab, "client", "api.partner.example", 443, family=6) == (ipv6(ext["partner"]), "allowed")


def test_dns_over_tcp_is_learned_too(world) -> None:
    lab, ext = world
    query = dns.message.make_query("img.cdn.example", "A")
    answer = lab_netns.run_in(wl_netns(lab, "client"), lambda: dns.query.tcp(query, DNS_SERVER_V4, timeout=3))
    assert [rr.address for rrset in answer.answer for rr in rrset] == [ipv4(ext["cdn"])]


def test_an_answer_from_an_untrusted_server_grants_nothing(world) -> None:
    """The client asks a DNS server it runs next door (in an external endpoint, which policy lets it
    reach): it answers api.partner.example with the evil endpoint's address. Nothing is learned."""
    lab, ext = world
    evil = ipv4(ext["evil"])
    forger_ip = ipv4(ext["other"])
    answered = _forged_answer(lab, ext["other"]["netns"], forger_ip, evil)
    assert answered == [evil]
    assert connect(lab, "client", evil, 443) == "denied"


def _forged_answer(lab: Lab, forger_netns: str, forger_ip: str, lie: str) -> list[str]:
    import socket
    import threading

    stop = threading.Event()
    sock = lab_netns.run_in(forger_netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    sock.bind(("0.0.0.0", 5353))
    sock.settimeout(0.2)

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(512)
            except OSError:
                continue
            q = dns.message.from_wire(data)
            r = dns.message.make_response(q)
            r.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "A", lie))
            sock.sendto(r.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        query = dns.message.make_query("api.partner.example", "A")
        answer = lab_netns.run_in(wl_netns(lab, "client"),
                                  lambda: dns.query.udp(query, forger_ip, port=5353, timeout=3))
        return [rr.address for rrset in answer.answer for rr in rrset]
    finally:
        stop.set()
        thread.join(2)
        sock.close()


def test_policy_still_decides_who_may_ask(world) -> None:
    """`quiet` has no egress rule: its DNS is not taken to the proxy and meets the namespace's deny."""
    lab, _ = world
    assert resolve_and_connect(lab, "quiet", "api.partner.example", 443)[0] == "unresolved"


def test_expiry_stops_new_connections_but_not_an_open_one(world) -> None:
    lab, ext = world
    short = ipv4(ext["short"])
    with echo_server(ext["short"]["netns"], "tcp", 443):
        assert resolve_and_connect(lab, "client", "short.partner.example", 443) == (short, "allowed")
        with Stream(wl_netns(lab, "client"), "tcp", short, 443) as stream:
            assert stream.wait_answers(10)
            time.sleep(SHORT_TTL + 1.5)  # the record's TTL runs out in the kernel: nothing to await
            assert connect(lab, "client", short, 443) == "denied"
            before = stream.answers
            assert stream.wait_answers(before + 20), "the open connection must outlive the expiry"
            assert stream.stop().broken is None


def test_trace_flows_and_metrics_name_what_was_learned(world) -> None:
    lab, ext = world
    partner = ipv4(ext["partner"])
    traced = lab.json("trace", "--from", "app/client", "--to-fqdn", "api.partner.example", "--port", "443")
    assert (traced["verdict"], traced["egress"]["rules"][-1]["rule"]) == ("allow", "app/out/partner-api")
    assert traced["dst_fqdn"] == "api.partner.example" and traced["ingress"] is None
    assert lab.json("trace", "--from", "app/client", "--to-fqdn", "other.partner.example", "--port", "443")[
        "verdict"] == "deny"
    assert resolve_and_connect(lab, "client", "api.partner.example", 443) == (partner, "allowed")

    def recorded() -> list[dict[str, Any]]:
        out = lab.cli("flows", "-o", "json", "--limit", "1000").stdout
        return [r for r in map(json.loads, out.splitlines()) if r.get("dst", {}).get("ip") == partner
                and r.get("rule") == "app/out/partner-api"]

    from tests.waiting import wait_until
    found = wait_until(recorded, "a flow record of the connection to api.partner.example", timeout=10)
    assert "api.partner.example" in found[0]["dst"]["names"]
    metrics = lab.agent_metrics("hv1")
    assert metrics[("stockade_agent_fqdn_names", ())] >= 1
    assert metrics[("stockade_agent_dns_proxy_up", (("fail_mode", "-"),))] == 1


def test_an_agent_restart_keeps_what_was_learned_and_the_open_flows(world) -> None:
    lab, ext = world
    cdn = ipv4(ext["cdn"])
    with echo_server(ext["cdn"]["netns"], "tcp", 8081):
        assert resolve_and_connect(lab, "client", "img.cdn.example", 80) == (cdn, "allowed")
        with Stream(wl_netns(lab, "client"), "tcp", cdn, 8081) as stream:
            assert stream.wait_answers(10)
            lab.kill9("agent-hv1")
            lab.cli("lab", "up", "--hosts", "2")  # starts the agent again; it takes the kernel's sets back
            assert connect(lab, "client", cdn, 80) == "allowed"  # no new lookup: still learned
            before = stream.answers
            assert stream.wait_answers(before + 20)
            assert stream.stop().broken is None


def test_the_outside_world_is_listed_shown_and_refuses_bad_input(world) -> None:
    lab, ext = world
    listed = {e["name"]: e for e in lab.json("lab", "external", "list")}
    assert listed["partner"]["dns"] == ["api.partner.example"] and listed["partner"]["netns"].endswith("-ext-partner")
    assert all(ip.startswith(("198.19.", "2001:db8:e:")) for e in listed.values() for ip in e["ips"])
    dns_process = [p for p in lab.json("lab", "status")["processes"] if p["role"] == "dns"]
    assert len(dns_process) == 1 and dns_process[0]["alive"]
    bad = lab.cli("lab", "external", "add", "x", "--dns", "not..a.name", check=False)
    assert bad.returncode != 0 and "--dns" in bad.stderr and "not a valid label" in bad.stderr
    taken = lab.cli("lab", "external", "add", "again", "--dns", "api.partner.example", check=False)
    assert taken.returncode != 0 and "another external's name" in taken.stderr
    assert "x" not in {e["name"] for e in lab.json("lab", "external", "list")}


def test_a_removed_external_is_no_longer_published(world) -> None:
    lab, _ = world
    lab.cli("lab", "external", "add", "gone", "--dns", "gone.partner.example")
    assert resolve_and_connect(lab, "quiet", "gone.partner.example", 80)[0] == "unresolved"  # quiet: no DNS at all
    resolved = subprocess.run(["ip", "netns", "exec", wl_netns(lab, "client"), "getent", "hosts", "gone.partner.example"],
                              capture_output=True, text=True)
    assert resolved.returncode == 0
    lab.cli("lab", "external", "remove", "gone")
    resolved = subprocess.run(["ip", "netns", "exec", wl_netns(lab, "client"), "getent", "hosts", "gone.partner.example"],
                              capture_output=True, text=True)
    assert resolved.returncode != 0
