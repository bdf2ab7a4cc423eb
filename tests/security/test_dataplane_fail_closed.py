"""Issue 13 in the real kernel: the dataplane fails closed and spoofing is checked first.

- A workload cannot inject a packet into a neighbour's established UDP flow by forging the
  neighbour's address and port: the spoof check runs before `ct state established accept`.
- A port in the workload naming scheme that Stockade has no program for (a VM started before
  its object exists) is dropped, to the host and to workloads, and counted.

One lab (two hypervisors) for the module; the verdicts are real sockets in the namespaces.
"""

from __future__ import annotations

import json
import secrets
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterator

import pytest

from stockade.lab.probe import probe
from tests.e2e.conftest import Lab, ipv4, make_lab
from tests.waiting import wait_until

pytestmark = pytest.mark.kernel

WAIT = ("--wait", "--timeout", "60")
PORT = 5353

WORLD = f"""
apiVersion: stockade.io/v1
kind: Namespace
metadata: {{name: fc}}
---
apiVersion: stockade.io/v1
kind: Namespace
metadata: {{name: fc-open}}
spec: {{defaultAction: allowUntilSelected}}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {{name: client, namespace: fc, labels: {{role: client}}}}
spec: {{host: hv1}}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {{name: attacker, namespace: fc, labels: {{role: attacker}}}}
spec: {{host: hv1}}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {{name: server, namespace: fc, labels: {{role: server}}}}
spec: {{host: hv2}}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {{name: open, namespace: fc-open}}
spec: {{host: hv1}}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {{name: peer, namespace: fc-open}}
spec: {{host: hv1}}
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {{name: client-to-server, namespace: fc}}
spec:
  appliesTo: {{selector: {{matchLabels: {{role: client}}}}}}
  egress: [{{action: allow, to: [{{selector: {{matchLabels: {{role: server}}}}}}], ports: [{{protocol: UDP, port: {PORT}}}]}}]
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {{name: server-from-client, namespace: fc}}
spec:
  appliesTo: {{selector: {{matchLabels: {{role: server}}}}}}
  ingress: [{{action: allow, from: [{{selector: {{matchLabels: {{role: client}}}}}}], ports: [{{protocol: UDP, port: {PORT}}}]}}]
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    for lab in make_lab(tmp_path_factory.mktemp("failclosed"), hosts=2):
        lab.apply_text(WORLD, *WAIT)
        yield lab


def _in_netns(netns: str, code: str, timeout: float = 30) -> subprocess.Popen[str]:
    return subprocess.Popen(["nsenter", f"--net=/run/netns/{netns}", sys.executable, "-c", textwrap.dedent(code)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", {port}))
s.settimeout(20)
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    print(data.decode(), flush=True)
    if data == b"END":
        break
    s.sendto(b"ack " + data, peer)
"""

CLIENT = """
import socket, sys
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c.bind(("{src}", {sport}))
c.settimeout(3)
def ask(text):
    for _ in range(5):
        c.sendto(text.encode(), ("{dst}", {port}))
        try:
            return c.recvfrom(2048)[0].decode()
        except socket.timeout:
            continue
    sys.exit("no answer to " + text)
print(ask("genuine-1"), flush=True)      # the flow is established in both hosts' conntrack
sys.stdin.readline()                     # the attacker forges now
print(ask("genuine-2"), flush=True)      # answered after the forged packets were sent
c.sendto(b"END", ("{dst}", {port}))
"""

FORGER = """
import socket
f = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
f.bind(("{src}", {sport}))  # the neighbour's address, which the test gave the attacker's eth0 too
for i in range(3):
    f.sendto(b"forged-%d" % i, ("{dst}", {port}))
print("sent", flush=True)
"""


def test_a_forged_packet_cannot_ride_a_neighbours_established_udp_flow(lab: Lab) -> None:
    client, attacker, server = (lab.workload(f"fc/{n}") for n in ("client", "attacker", "server"))
    src, dst, sport = ipv4(client), ipv4(server), 40000 + secrets.randbelow(20000)
    srv = _in_netns(server["status"]["netns"], SERVER.format(port=PORT))
    cli: subprocess.Popen[str] | None = None
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready", srv.stderr
        cli = subprocess.Popen(["nsenter", f"--net=/run/netns/{client['status']['netns']}", sys.executable, "-c",
                                textwrap.dedent(CLIENT.format(src=src, sport=sport, dst=dst, port=PORT))],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert cli.stdout is not None and cli.stdin is not None
        assert cli.stdout.readline().strip() == "ack genuine-1", cli.stderr.read() if cli.stderr else ""
        # The attacker, on the same host, sends as the client: same address, same port, same flow.
        subprocess.run(["ip", "-n", attacker["status"]["netns"], "addr", "add", f"{src}/32", "dev", "eth0"], check=True)
        forged = subprocess.run(["nsenter", f"--net=/run/netns/{attacker['status']['netns']}", sys.executable, "-c",
                                 textwrap.dedent(FORGER.format(src=src, sport=sport, dst=dst, port=PORT))],
                                capture_output=True, text=True, timeout=30)
        assert forged.stdout.strip() == "sent", forged.stderr
        cli.stdin.write("go\n")
        cli.stdin.flush()
        assert cli.stdout.readline().strip() == "ack genuine-2"
        cli.wait(10)
        received = srv.communicate(timeout=20)[0].split()
    finally:
        subprocess.run(["ip", "-n", attacker["status"]["netns"], "addr", "del", f"{src}/32", "dev", "eth0"],
                       capture_output=True)
        for proc in (cli, srv):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert received[:1] == ["genuine-1"] and received[-2:] == ["genuine-2", "END"], received
    assert not [r for r in received if r.startswith("forged")], received


@pytest.fixture
def rogue_port(lab: Lab) -> Iterator[str]:
    """A VM-like port on hv1 (`stk...`) that no Workload describes, with a namespace behind it
    on 198.18.249.2/30; hv1's end is 198.18.249.1. Removed after the test."""
    port = f"stkr{secrets.token_hex(4)}"
    netns = f"{lab.prefix}-rogue{secrets.token_hex(2)}"
    hv = lab.hv_netns("hv1")
    steps = [["ip", "netns", "add", netns],
             ["ip", "-n", hv, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", netns],
             ["ip", "-n", hv, "addr", "add", "198.18.249.1/30", "dev", port],
             ["ip", "-n", hv, "link", "set", port, "up"],
             ["ip", "-n", netns, "addr", "add", "198.18.249.2/30", "dev", "eth0"],
             ["ip", "-n", netns, "link", "set", "lo", "up"],
             ["ip", "-n", netns, "link", "set", "eth0", "up"],
             ["ip", "-n", netns, "route", "add", "default", "via", "198.18.249.1"]]
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True)
        yield netns
    finally:
        subprocess.run(["ip", "-n", hv, "link", "del", port], capture_output=True)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)


def _unknown_drops(lab: Lab) -> float:
    # Awaited, not read once: another test of this module may have just restarted hv1's agent
    # (its last report before the restart still says in sync), whose metrics listener comes up
    # a moment after it starts.
    def answered() -> tuple[float] | None:  # a tuple: 0.0 drops is an answer too
        try:
            return (lab.agent_metrics("hv1").get(("stockade_agent_unknown_interface_drops_total", ()), 0.0),)
        except subprocess.CalledProcessError:
            return None

    return wait_until(answered, "hv1's agent to serve its metrics", timeout=15)[0]


def test_a_port_without_a_program_is_dropped_to_the_host_and_to_workloads_and_counted(
        lab: Lab, rogue_port: str) -> None:
    before = _unknown_drops(lab)
    # To the host itself (input): the hypervisor's end of the port answers ping when allowed.
    assert probe(rogue_port, None, "198.18.249.1", "icmp", None).verdict == "denied"
    # To a workload whose namespace is open to everyone (allowUntilSelected, no policy).
    open_wl = lab.workload("fc-open/open")
    assert probe(rogue_port, open_wl["status"]["netns"], ipv4(open_wl), "tcp", 80).verdict == "denied"
    wait_until(lambda: _unknown_drops(lab) > before, "hv1's agent to count the unknown port's drops",
               describe=lambda: _unknown_drops(lab))
    # Control: the open workload is reachable from a known workload (of its open namespace).
    peer = lab.workload("fc-open/peer")
    assert probe(peer["status"]["netns"], open_wl["status"]["netns"], ipv4(open_wl), "tcp", 80).verdict == "allowed"


def test_a_rebooted_host_enforces_its_saved_program_while_the_controller_is_down(lab: Lab) -> None:
    saved = lab.state_dir / "agent-hv1.program.json"
    in_status = next(a for a in lab.json("status")["agents"] if a["host"] == "hv1")["programHash"]
    wait_until(lambda: saved.exists() and json.loads(saved.read_text())["programHash"] == in_status,
               "hv1's agent to save the program it enforces")
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    peer, client = lab.workload("fc-open/peer"), lab.workload("fc/client")
    assert probe(peer["status"]["netns"], client["status"]["netns"], ipv4(client), "tcp", 80).verdict == "denied"

    agent_pid = lab.pid("agent-hv1")
    # The agent runs in its hypervisor's netns (the lab starts it through nsenter, which execs it).
    argv = [b"nsenter", f"--net=/run/netns/{lab.hv_netns('hv1')}".encode(),
            *Path(f"/proc/{agent_pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")]
    restarted: subprocess.Popen[bytes] | None = None
    try:
        # A power cut: controller and agent gone, and the kernel's tables with them.
        lab.kill9("controller")
        lab.kill9("agent-hv1")
        assert lab.nft("hv1", "delete", "table", "inet", "stockade").returncode == 0
        # The host boots; its agent starts while the controller is still down.
        log = (lab.state_dir / "logs" / "agent-hv1-restarted.log").open("wb")
        restarted = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: lab.has_table("hv1"), "the restarted agent to put its saved program back", timeout=10,
                   describe=lab.logs)
        assert probe(peer["status"]["netns"], client["status"]["netns"], ipv4(client), "tcp", 80).verdict == "denied"
        # Before the first sync too, a removal of our table is repaired within about a second.
        assert lab.nft("hv1", "delete", "table", "inet", "stockade").returncode == 0
        wait_until(lambda: lab.has_table("hv1"), "the saved program to be put back after a removal", timeout=5)
        assert probe(peer["status"]["netns"], client["status"]["netns"], ipv4(client), "tcp", 80).verdict == "denied"
    finally:
        if restarted is not None and restarted.poll() is None:
            restarted.kill()
            restarted.wait()
        lab.cli("lab", "up", "--hosts", "2")  # controller and agent back under the lab's supervision
    wait_until(lambda: next(a for a in lab.json("status")["agents"] if a["host"] == "hv1")["inSync"],
               "hv1's agent, supervised again, to report in sync")


def test_a_controller_on_an_empty_database_does_not_empty_the_hosts(lab: Lab) -> None:
    peer, client, srv = (lab.workload(ref) for ref in ("fc-open/peer", "fc/client", "fc/server"))
    db = lab.state_dir / "controller.db"
    aside = lab.state_dir / "aside"
    aside.mkdir(exist_ok=True)
    try:
        # The controller is restarted on an empty database (a wrong path, a lost volume).
        lab.kill9("controller")
        for f in lab.state_dir.glob("controller.db*"):
            f.rename(aside / f.name)
        lab.cli("lab", "up", "--hosts", "2")
        assert lab.json("status")["revision"] == 0

        def conflicts() -> dict[str, str] | None:
            agents = {a["host"]: a.get("error") or "" for a in lab.json("status")["agents"]}
            return agents if len(agents) == 2 and all("store conflict" in e for e in agents.values()) else None

        errors = wait_until(conflicts, "both agents to report the store conflict", timeout=20,
                            describe=lambda: lab.json("status"))
        assert all("--accept-new-store" in e for e in errors.values())
        # Every host still enforces the last policy of the real store.
        assert lab.has_table("hv1") and lab.has_table("hv2")
        assert probe(peer["status"]["netns"], client["status"]["netns"], ipv4(client), "tcp", 80).verdict == "denied"
        assert probe(client["status"]["netns"], srv["status"]["netns"], ipv4(srv), "udp", PORT).verdict == "allowed"
    finally:
        # The operator puts the right database back: the agents carry on from it.
        lab.kill9("controller")
        for f in lab.state_dir.glob("controller.db*"):
            f.unlink()
        for f in aside.glob("controller.db*"):
            f.rename(lab.state_dir / f.name)
        lab.cli("lab", "up", "--hosts", "2")
    assert db.exists()
    wait_until(lambda: all(a["inSync"] and not a.get("error") for a in lab.json("status")["agents"]),
               "the agents to report in sync without a conflict once the right store is back", timeout=20,
               describe=lambda: lab.json("status"))


def _tracked(lab: Lab, host: str, address: str) -> int:
    """How many conntrack entries of `host` have `address` as source or destination."""
    total = 0
    for direction in ("-s", "-d"):
        out = subprocess.run(["ip", "netns", "exec", lab.hv_netns(host), "conntrack", "-L", direction, address],
                             capture_output=True, text=True, timeout=10).stdout
        total += len([line for line in out.splitlines() if line.strip()])
    return total


def test_deleting_a_workload_ends_its_connections_on_every_host(lab: Lab) -> None:
    lab.apply_text("""
apiVersion: stockade.io/v1
kind: Workload
metadata: {name: leaving, namespace: fc-open}
spec: {host: hv2}
""", *WAIT)
    peer, leaving = lab.workload("fc-open/peer"), lab.workload("fc-open/leaving")
    address = ipv4(leaving)
    assert probe(peer["status"]["netns"], leaving["status"]["netns"], address, "udp", PORT).verdict == "allowed"
    assert _tracked(lab, "hv1", address) > 0 and _tracked(lab, "hv2", address) > 0  # UDP lives 30 s and more
    lab.cli("delete", "workload", "leaving", "-n", "fc-open", "--wait")
    for host in ("hv1", "hv2"):  # the address may go to someone else: nothing of it stays open
        wait_until(lambda: _tracked(lab, host, address) == 0, f"{host} to forget the connections of {address}",
                   timeout=5, describe=lambda: _tracked(lab, host, address))


UDP_SESSION = """
import socket, sys
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c.settimeout(1.5)
def ask(text):
    c.sendto(text.encode(), ("{dst}", {port}))
    try:
        return c.recvfrom(2048)[0].decode()
    except socket.timeout:
        return "no answer"
print(ask("first"), flush=True)
sys.stdin.readline()
print(ask("second"), flush=True)
"""


def _second_answer_after(lab: Lab, policy: str) -> str:
    """Open a UDP 'connection' peer -> open, apply `policy` in between, and say what the same
    socket's second datagram got."""
    peer, open_wl = lab.workload("fc-open/peer"), lab.workload("fc-open/open")
    srv = _in_netns(open_wl["status"]["netns"], SERVER.format(port=PORT))
    cli: subprocess.Popen[str] | None = None
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"  # bound before the first
        cli = subprocess.Popen(["nsenter", f"--net=/run/netns/{peer['status']['netns']}", sys.executable, "-c",
                                textwrap.dedent(UDP_SESSION.format(dst=ipv4(open_wl), port=PORT))],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert cli.stdout is not None and cli.stdin is not None
        assert cli.stdout.readline().strip() == "ack first"
        lab.apply_text(policy, *WAIT)
        cli.stdin.write("go\n")
        cli.stdin.flush()
        return cli.stdout.readline().strip()
    finally:
        for proc in (cli, srv):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        lab.cli("delete", "policy", "closing", "-n", "fc-open", "--wait", check=False)


def _closing(enforce: bool) -> str:
    return f"""
apiVersion: stockade.io/v1
kind: Policy
metadata: {{name: closing, namespace: fc-open}}
spec:
  appliesTo: {{selector: {{}}}}
  enforceEstablished: {str(enforce).lower()}
  ingress: []
  types: [Ingress]
"""


def test_established_connections_survive_a_new_deny_by_default(lab: Lab) -> None:
    assert _second_answer_after(lab, _closing(enforce=False)) == "ack second"


def test_enforce_established_cuts_open_connections_at_rollout(lab: Lab) -> None:
    assert _second_answer_after(lab, _closing(enforce=True)) == "no answer"


def test_a_flushed_ruleset_is_back_within_about_a_second(lab: Lab) -> None:
    peer, client = lab.workload("fc-open/peer"), lab.workload("fc/client")
    wait_until(lambda: all(a["inSync"] for a in lab.json("status")["agents"]), "the agents to be in sync")
    # What a stock nftables.conf does at boot or on `systemctl reload nftables`.
    assert lab.nft("hv1", "flush", "ruleset").returncode == 0
    started = time.monotonic()
    wait_until(lambda: lab.has_table("hv1"), "hv1's agent to put its table back", timeout=2.5, interval=0.02)
    assert time.monotonic() - started < 2.5  # the drift check runs every second
    assert probe(peer["status"]["netns"], client["status"]["netns"], ipv4(client), "tcp", 80).verdict == "denied"
