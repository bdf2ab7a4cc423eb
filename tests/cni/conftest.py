"""Fixtures for the CNI plugin's tests: a real controller (uvicorn in a thread, unix socket), the
host's credential, and a scratch "host" network namespace with a routed peer.

    stack       (module) controller with IPv4/IPv6 pools, Namespaces `default` and `shop`, an
                agent token bound to host `node1` in a file, the host netns (forwarding on) and
                a peer netns routed from it (198.18.200.2, 2001:db8:200::2)
    container   a fresh netns for one container (what a runtime makes before ADD)
    agent       (module) the host's real agent, its own process in the host netns, same credential

The plugin runs as its own process inside the host netns (`nsenter --net`); it reaches the
controller over the unix socket, which no network namespace hides. Every netns is named
`cnih-<random>-…` and deleted in teardown (with every interface in it), also after a failure.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from stockade.client import ControllerClient
from stockade.controller.api import build_app
from stockade.controller.auth import create_token_file
from stockade.controller.config import ControllerConfig
from stockade.controller.main import RunningController, start_in_thread
from stockade.model.validation import ValidationSettings
from tests.waiting import wait_until

SRC = Path(__file__).resolve().parents[2] / "src"
HOST = "node1"
PEER_V4 = "198.18.200.2"
PEER_V6 = "2001:db8:200::2"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=60)


def in_netns(netns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", netns, *args, check=check)


def add_netns(name: str) -> None:
    sh("ip", "netns", "add", name)


def del_netns(name: str) -> None:
    sh("ip", "netns", "del", name, check=False)


@dataclass
class PluginRun:
    rc: int
    out: dict[str, Any] | None
    stdout: str
    stderr: str


@dataclass
class Stack:
    controller: RunningController
    admin: ControllerClient
    tokens: dict[str, str]
    token_file: Path
    workdir: Path
    host_netns: str
    prefix: str

    def netconf(self, **overrides: Any) -> dict[str, Any]:
        conf: dict[str, Any] = {"cniVersion": "1.0.0", "name": "stockade", "type": "stockade-cni",
                                "controller": self.controller.unix_url, "tokenFile": str(self.token_file),
                                "host": HOST}
        for key, value in overrides.items():
            if value is None:
                conf.pop(key, None)
            else:
                conf[key] = value
        return conf

    def plugin(self, command: str, conf: dict[str, Any] | str, container_id: str = "", netns: str = "",
               ifname: str = "eth0", args: str = "") -> PluginRun:
        """Run `python -m stockade.cni` as a runtime would: CNI env, config on stdin, in the host netns."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(SRC), "CNI_COMMAND": command,
               "CNI_PATH": "/usr/lib/cni"}
        for key, value in (("CNI_CONTAINERID", container_id), ("CNI_NETNS", netns), ("CNI_IFNAME", ifname),
                           ("CNI_ARGS", args)):
            if value:
                env[key] = value
        stdin = conf if isinstance(conf, str) else json.dumps(conf)
        done = subprocess.run(["nsenter", f"--net=/run/netns/{self.host_netns}", sys.executable, "-m", "stockade.cni"],
                              input=stdin, env=env, capture_output=True, text=True, timeout=60)
        try:
            out = json.loads(done.stdout) if done.stdout.strip() else None
        except ValueError:
            out = None
        return PluginRun(done.returncode, out, done.stdout, done.stderr)

    def workload(self, namespace: str, name: str) -> dict[str, Any] | None:
        items = self.admin.list("workload", namespace)["items"]
        return next((w for w in items if w["metadata"]["name"] == name), None)

    def host_links(self) -> str:
        return in_netns(self.host_netns, "ip", "-o", "link").stdout


def _wire_peer(host: str, peer: str, tag: str) -> None:
    """A peer namespace on a connected /24 and /64 from the host: where the container's packets go."""
    hside = f"cnihp{tag}"[:15]
    sh("ip", "link", "add", hside, "netns", host, "type", "veth", "peer", "name", "eth0", "netns", peer)
    for ns, iface, v4, v6 in ((host, hside, "198.18.200.1/24", "2001:db8:200::1/64"),
                              (peer, "eth0", f"{PEER_V4}/24", f"{PEER_V6}/64")):
        in_netns(ns, "ip", "addr", "add", v4, "dev", iface)
        in_netns(ns, "ip", "-6", "addr", "add", v6, "dev", iface, "nodad")
        in_netns(ns, "ip", "link", "set", iface, "up")
        in_netns(ns, "ip", "link", "set", "lo", "up")
    in_netns(peer, "ip", "route", "add", "default", "via", "198.18.200.1")
    in_netns(peer, "ip", "-6", "route", "add", "default", "via", "2001:db8:200::1")
    in_netns(host, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    tag = secrets.token_hex(3)
    prefix = f"cnih-{tag}"
    workdir = Path(tempfile.mkdtemp(prefix=f"cnih-{tag}-", dir="/tmp"))
    host, peer = f"{prefix}-h", f"{prefix}-p"
    running: RunningController | None = None
    admin: ControllerClient | None = None
    try:
        tokens = create_token_file(workdir / "tokens.json", [
            {"name": "admin", "role": "admin"},
            {"name": f"agent-{HOST}", "role": "agent", "host": HOST},
        ])
        token_file = workdir / "agent.token"
        token_file.write_text(tokens[f"agent-{HOST}"] + "\n")
        token_file.chmod(0o600)
        config = ControllerConfig(db_path=workdir / "stockade.db", tokens_file=workdir / "tokens.json",
                                  validation=ValidationSettings(known_hosts=frozenset({HOST, "node2"})))
        running = start_in_thread(config, unix_socket=workdir / "ctl.sock", app=build_app(config))
        admin = ControllerClient(running.url, tokens["admin"])
        admin.apply([{"apiVersion": "stockade.io/v1", "kind": "Namespace", "metadata": {"name": n}}
                     for n in ("default", "shop")])
        add_netns(host)
        add_netns(peer)
        _wire_peer(host, peer, tag)
        yield Stack(running, admin, tokens, token_file, workdir, host, prefix)
    finally:
        del_netns(peer)
        del_netns(host)
        if admin is not None:
            admin.close()
        if running is not None:
            running.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def container(stack: Stack) -> Iterator[str]:
    """A container's network namespace (its path), as a runtime makes it before ADD."""
    name = f"{stack.prefix}-c{secrets.token_hex(2)}"
    add_netns(name)
    try:
        yield f"/run/netns/{name}"
    finally:
        del_netns(name)


@pytest.fixture(scope="module")
def agent(stack: Stack) -> Iterator[subprocess.Popen[bytes]]:
    log = (stack.workdir / "agent.log").open("wb")
    proc = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{stack.host_netns}", sys.executable, "-m", "stockade.agent", "run",
         "--host", HOST, "--controller", str(stack.controller.unix_url), "--token-file", str(stack.token_file),
         "--state-dir", str(stack.workdir / "agent"), "--flow-log-group", "0", "--no-flow-conntrack"],
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


def enforced(stack: Stack, revision: int) -> bool:
    status = stack.admin.status()
    agents = [a for a in status.get("agents", []) if a.get("host") == HOST]
    return bool(agents) and all(a.get("inSync") and (a.get("revision") or 0) >= revision for a in agents)


def wait_enforced(stack: Stack, agent: subprocess.Popen[bytes]) -> None:
    revision = stack.admin.status()["revision"]
    wait_until(lambda: agent.poll() is not None or enforced(stack, revision), f"{HOST}'s agent enforcing r{revision}",
               describe=lambda: (stack.workdir / "agent.log").read_text()[-2000:])
    assert agent.poll() is None, (stack.workdir / "agent.log").read_text()[-2000:]
