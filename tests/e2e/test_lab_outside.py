"""The lab's outside world (issue 18): a real DNS server and external endpoints, seen from workloads.

A two-host lab (`lab up` builds the DNS server netns and dnsmasq) with one external endpoint
published under two names with a TTL of 7 s and a CNAME, and a workload on each hypervisor in an
`allowUntilSelected` namespace with no policy, so Stockade allows what they send: what is tested
here is the lab's plumbing, not policy. Workloads resolve as any program does, through their
netns's resolv.conf (`ip netns exec ... getent`), and reach the external through their
hypervisor, which masquerades them to its node address. Queries that check the records
themselves (TTL, TCP, CNAME, NXDOMAIN) go straight to the lab's resolver with dnspython.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path
from typing import Any, Iterator

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from stockade.lab import netns as lab_netns
from stockade.lab import probe
from stockade.lab.naming import DNS_SERVER_V4, DNS_SERVER_V6, node_addresses
from tests.e2e.conftest import Lab, make_lab, netns_with_prefix
from tests.waiting import process_gone

pytestmark = pytest.mark.kernel

TTL = 7
NAMES = ["www.site.example", "api.site.example"]
ALIAS = "alias.elsewhere.example"
HOSTS = ("hv1", "hv2")


def workloads(hosts: tuple[str, ...]) -> str:
    """Namespace `open` (allowed until a policy selects: no policy here) and workload wN on hvN."""
    docs = ["apiVersion: stockade.io/v1\nkind: Namespace\nmetadata: {name: open}\n"
            "spec: {defaultAction: allowUntilSelected}\n"]
    docs += [f"apiVersion: stockade.io/v1\nkind: Workload\nmetadata: {{name: w{i}, namespace: open}}\n"
             f"spec: {{host: {host}}}\n" for i, host in enumerate(hosts, 1)]
    return "---\n".join(docs)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, dict[str, Any], dict[str, str]]]:
    for lab in make_lab(tmp_path_factory.mktemp("outside"), len(HOSTS)):
        lab.apply_text(workloads(HOSTS), "--wait", "--timeout", "60")
        add = ["lab", "external", "add", "site", "--ttl", str(TTL), "--cname", ALIAS]
        for name in NAMES:
            add += ["--dns", name]
        lab.cli(*add)
        site = next(e for e in lab.json("lab", "external", "list") if e["name"] == "site")
        netns = {host: lab.workload(f"open/w{i}")["status"]["netns"] for i, host in enumerate(HOSTS, 1)}
        yield lab, site, netns


def v4(ips: list[str]) -> str:
    return next(ip for ip in ips if ":" not in ip)


def v6(ips: list[str]) -> str:
    return next(ip for ip in ips if ":" in ip)


def getent(netns: str, database: str, name: str) -> set[str]:
    """The addresses `getent DATABASE NAME` prints in the workload's netns (its resolv.conf applies)."""
    res = subprocess.run(["ip", "netns", "exec", netns, "getent", database, name],
                         capture_output=True, text=True, timeout=30)
    return {line.split()[0] for line in res.stdout.splitlines() if line.strip()}


def ask(netns: str, name: str, rdtype: str, server: str = DNS_SERVER_V4, tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    send = dns.query.tcp if tcp else dns.query.udp
    return lab_netns.run_in(netns, lambda: send(query, server, timeout=3))


def records(answer: dns.message.Message, rdtype: str) -> dict[str, int]:
    """{address or target: TTL} of the answer's records of one type."""
    kind = dns.rdatatype.from_text(rdtype)
    return {(rr.address if hasattr(rr, "address") else str(rr.target)): rrset.ttl
            for rrset in answer.answer if rrset.rdtype == kind for rr in rrset}


# ------------------------------------------------------------------ names, from a workload on each host

@pytest.mark.parametrize("host", HOSTS)
def test_a_workload_resolves_both_names_with_its_system_resolver(world, host: str) -> None:
    lab, site, netns = world
    resolv = Path("/etc/netns") / netns[host] / "resolv.conf"
    assert f"nameserver {DNS_SERVER_V4}" in resolv.read_text()
    for name in NAMES:
        assert getent(netns[host], "ahostsv4", name) == {v4(site["ips"])}
        assert getent(netns[host], "ahostsv6", name) == {v6(site["ips"])}
        assert getent(netns[host], "hosts", name) <= set(site["ips"]) and getent(netns[host], "hosts", name)


@pytest.mark.parametrize("rdtype", ["A", "AAAA"])
def test_records_carry_the_externals_ttl(world, rdtype: str) -> None:
    lab, site, netns = world
    want = v4(site["ips"]) if rdtype == "A" else v6(site["ips"])
    for name in NAMES:
        assert records(ask(netns["hv1"], name, rdtype), rdtype) == {want: TTL}


def test_the_resolver_answers_over_tcp_and_on_ipv6(world) -> None:
    lab, site, netns = world
    assert records(ask(netns["hv2"], NAMES[0], "A", tcp=True), "A") == {v4(site["ips"]): TTL}
    assert records(ask(netns["hv2"], NAMES[1], "AAAA", server=DNS_SERVER_V6), "AAAA") == {v6(site["ips"]): TTL}


def test_a_cname_resolves_to_its_targets_addresses(world) -> None:
    lab, site, netns = world
    answer = ask(netns["hv1"], ALIAS, "A")
    assert records(answer, "CNAME") == {f"{NAMES[0]}.": TTL}
    assert records(answer, "A") == {v4(site["ips"]): TTL}
    assert getent(netns["hv2"], "ahostsv6", ALIAS) == {v6(site["ips"])}


def test_only_the_labs_names_are_answered(world) -> None:
    lab, site, netns = world
    assert ask(netns["hv1"], "nothing.site.example", "A").rcode() == dns.rcode.NXDOMAIN
    assert ask(netns["hv1"], "debian.org", "AAAA").rcode() == dns.rcode.NXDOMAIN


# ------------------------------------------------------------------ reaching the external

@pytest.mark.parametrize("host", HOSTS)
def test_a_workload_connects_to_a_server_in_the_external(world, host: str) -> None:
    lab, site, netns = world
    with probe.serve(site["netns"], "tcp", 8443):
        for ip in site["ips"]:
            result = probe.probe(netns[host], None, ip, "tcp", 8443, timeout=2.0, reuse_server=True)
            assert result.verdict == "allowed", (ip, result)


@pytest.mark.parametrize("host", HOSTS)
def test_the_external_sees_the_hypervisors_node_address(world, host: str) -> None:
    """Outside endpoints do not know workloads: each hypervisor masquerades its workloads to itself."""
    lab, site, netns = world
    for ip, node in zip((v4(site["ips"]), v6(site["ips"])), node_addresses(host)):
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET

        def listen() -> socket.socket:  # a socket stays in the netns it was made in
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.bind((ip, 0))
            sock.listen(1)
            sock.settimeout(5)
            return sock

        def connect(port: int) -> socket.socket:
            return socket.create_connection((ip, port), timeout=5)

        with lab_netns.run_in(site["netns"], listen) as listener:
            with lab_netns.run_in(netns[host], lambda: connect(listener.getsockname()[1])):
                peer, _ = listener.accept()
                with peer:
                    assert peer.getpeername()[0] == node


# ------------------------------------------------------------------ the lab's view and commands

def test_external_list_shape(world) -> None:
    lab, site, netns = world
    assert site["netns"] == f"{lab.prefix}-ext-site"
    assert site["netns"] in netns_with_prefix(lab.prefix)
    assert site["dns"] == NAMES and site["ttl"] == TTL and site["cnames"] == [ALIAS]
    assert v4(site["ips"]).startswith("198.19.1.") and v6(site["ips"]).startswith("2001:db8:e::1:")
    assert len(site["ips"]) == 2
    assert {"name", "netns", "ips", "dns"} <= set(site)


def test_lab_status_has_a_live_dns_process(world) -> None:
    lab, site, netns = world
    status = lab.json("lab", "status")
    dns_processes = [p for p in status["processes"] if p["role"] == "dns"]
    assert [(p["name"], p["alive"]) for p in dns_processes] == [("dns", True)]
    assert not process_gone(dns_processes[0]["pid"])
    cmdline = Path(f"/proc/{dns_processes[0]['pid']}/cmdline").read_bytes().split(b"\0")
    assert any(arg.endswith(b"dnsmasq") for arg in cmdline)


def test_removing_an_external_unpublishes_its_names(world) -> None:
    lab, site, netns = world
    made = lab.json("lab", "external", "add", "gone", "--dns", "gone.example", "--ttl", "30")
    assert made["netns"] in netns_with_prefix(lab.prefix)
    assert made["ips"] != site["ips"]  # the next free addresses
    assert records(ask(netns["hv1"], "gone.example", "A"), "A") == {v4(made["ips"]): 30}
    lab.cli("lab", "external", "remove", "gone")
    assert ask(netns["hv1"], "gone.example", "A").rcode() == dns.rcode.NXDOMAIN
    assert made["netns"] not in netns_with_prefix(lab.prefix)
    assert [e["name"] for e in lab.json("lab", "external", "list")] == ["site"]
    # The others are still published.
    assert records(ask(netns["hv1"], NAMES[0], "A"), "A") == {v4(site["ips"]): TTL}


@pytest.mark.parametrize(("args", "field"), [
    (["site", "--dns", "other.example"], "NAME"),                   # an external of that name exists
    (["Bad_Name", "--dns", "x.example"], "NAME"),
    (["a" * 30, "--dns", "x.example"], "NAME"),
    (["a.b", "--dns", "x.example"], "NAME"),
    (["dash-", "--dns", "x.example"], "NAME"),
    (["fine", "--dns", "not a name"], "--dns"),
    (["fine", "--dns", "*.wild.example"], "--dns"),
    (["fine", "--dns", NAMES[1]], "--dns"),                        # another external's name
    (["fine", "--dns", "x.example", "--ttl", "0"], "--ttl"),
    (["fine", "--cname", "alias.example"], "--cname"),              # an alias of nothing
    (["fine", "--dns", "x.example", "--cname", "bad..example"], "--cname"),
])
def test_bad_input_is_refused_naming_the_field(world, args: list[str], field: str) -> None:
    lab, site, netns = world
    res = lab.cli("lab", "external", "add", *args, check=False)
    assert res.returncode != 0
    assert field in res.stderr, res.stderr
    assert [e["name"] for e in lab.json("lab", "external", "list")] == ["site"]  # nothing half-made


def test_removing_an_unknown_external_is_an_error(world) -> None:
    lab, site, netns = world
    res = lab.cli("lab", "external", "remove", "nosuch", check=False)
    assert res.returncode != 0 and "nosuch" in res.stderr


def test_externals_need_a_lab(tmp_path: Path) -> None:
    env = {**os.environ, "STOCKADE_STATE_DIR": str(tmp_path / "state"), "STOCKADE_LAB_PREFIX": "nolab",
           "STOCKADE_CONFIG": str(tmp_path / "config.json")}
    lab = Lab("nolab", env, tmp_path / "state")
    for args in (["add", "x", "--dns", "x.example"], ["list"], ["remove", "x"]):
        res = lab.cli("lab", "external", *args, check=False)
        assert res.returncode != 0 and "lab up" in res.stderr, res.stderr
    assert netns_with_prefix("nolab") == []


# ------------------------------------------------------------------ lab down

def test_lab_down_leaves_no_outside_world(tmp_path: Path) -> None:
    gen = make_lab(tmp_path, 1)
    lab = next(gen)
    try:
        lab.apply_text(workloads(("hv1",)), "--wait", "--timeout", "60")
        lab.cli("lab", "external", "add", "site", "--dns", "site.example")
        dns_pid = lab.pid("dns")
        assert {f"{lab.prefix}-dns", f"{lab.prefix}-ext-site"} <= set(netns_with_prefix(lab.prefix))
        assert any(n.startswith(f"{lab.prefix}-") for n in os.listdir("/etc/netns"))
    finally:
        try:
            next(gen)  # lab down
        except StopIteration:
            pass
    assert process_gone(dns_pid)
    assert netns_with_prefix(lab.prefix) == []
    assert not any(n.startswith(f"{lab.prefix}-") for n in os.listdir("/etc/netns")) \
        if os.path.isdir("/etc/netns") else True
    assert not lab.state_dir.exists()
