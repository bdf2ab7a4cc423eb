"""The plugin under a real container runtime: Debian's podman with its CNI backend.

podman runs with a configuration of this test's own (CONTAINERS_CONF: the CNI backend, the
plugin directory and the network directory here, vfs storage under a temporary root), so the
machine's podman setup is not touched. The image is built here from busybox-static (`podman
import` of a root file system tarball): no registry is needed.

Two things of this machine are worked around, each only inside the test:
- podman runs in a mount namespace of its own (a holder process, `unshare -m`) where the
  cgroup2 hierarchy at /sys/fs/cgroup/unified is unmounted: crun refuses a "hybrid" cgroup
  layout whose cgroup2 half has a controller (`crun: cgroups in hybrid mode not supported`);
  the containers run with `cgroups = "disabled"`. Its mounts (storage, the containers'
  network namespaces) die with that mount namespace.
- the containers' rlimits are set below this process's hard limits: without CAP_SYS_RESOURCE,
  crun may not raise them to podman's defaults (`setrlimit RLIMIT_NOFILE: Operation not permitted`).

podman itself runs in the scratch host netns (`nsenter --net`), so the host side of every veth,
its addresses and routes are there, never in the machine's own namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from stockade.cni.identity import CONTAINER_ID
from stockade.model.naming import ATTACHED_BY
from stockade.lab.probe import probe
from tests.cni.conftest import HOST, PEER_V4, PEER_V6, SRC, Stack, enforced
from tests.waiting import wait_until

pytestmark = pytest.mark.kernel

BUSYBOX = Path("/bin/busybox")
IMAGE = "localhost/cnih-busybox:latest"


@dataclass
class Podman:
    holder: subprocess.Popen[bytes]
    workdir: Path
    host_netns: str

    def run(self, *args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        d = self.workdir
        cmd = ["nsenter", "-t", str(self.holder.pid), "-m", f"--net=/run/netns/{self.host_netns}",
               "podman", "--root", str(d / "root"), "--runroot", str(d / "run"), "--storage-driver", "vfs",
               "--tmpdir", str(d / "tmp"), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "CONTAINERS_CONF": str(d / "containers.conf"), **(env or {})})
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")
        return done


def _rootfs(path: Path) -> None:
    """A root file system of busybox-static and its applets, as a tarball."""
    with tarfile.open(path, "w") as tar:
        info = tar.gettarinfo(str(BUSYBOX), "bin/busybox")
        with BUSYBOX.open("rb") as f:
            tar.addfile(info, f)
        for applet in ("sh", "ping", "sleep", "ip", "cat"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)


def _configure(d: Path, stack: Stack) -> None:
    (d / "bin").mkdir()
    (d / "cni").mkdir()
    launcher = d / "bin" / "stockade-cni"
    launcher.write_text(f"#!/bin/sh\nPYTHONPATH={SRC} exec {sys.executable} -m stockade.cni \"$@\"\n")
    launcher.chmod(0o755)
    (d / "cni" / "stockade.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "stockade",
        "plugins": [{"type": "stockade-cni", "controller": stack.controller.unix_url,
                     "tokenFile": str(stack.token_file), "host": HOST, "namespace": "default",
                     "labels": {"runtime": "podman"}}]}))
    nofile = min(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    nproc = min(4096, resource.getrlimit(resource.RLIMIT_NPROC)[1])
    (d / "containers.conf").write_text(
        "[containers]\n"
        'cgroups = "disabled"\n'
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "[network]\n"
        'network_backend = "cni"\n'
        f'cni_plugin_dirs = ["{d / "bin"}"]\n'
        f'network_config_dir = "{d / "cni"}"\n'
        "[engine]\n"
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "none"\n')


@pytest.fixture(scope="module")
def podman(stack: Stack) -> Iterator[Podman]:
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed (deps/commands.tsv: podman)")
    d = stack.workdir / f"podman-{secrets.token_hex(2)}"
    d.mkdir()
    _configure(d, stack)
    _rootfs(d / "rootfs.tar")
    holder = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sleep", "infinity"])
    try:
        mine = os.readlink("/proc/self/ns/mnt")
        wait_until(lambda: os.readlink(f"/proc/{holder.pid}/ns/mnt") != mine, "the holder's mount namespace")
        if Path("/sys/fs/cgroup/unified").is_mount():
            subprocess.run(["nsenter", "-t", str(holder.pid), "-m", "umount", "/sys/fs/cgroup/unified"], check=True)
        p = Podman(holder, d, stack.host_netns)
        p.run("import", str(d / "rootfs.tar"), IMAGE)
        yield p
        p.run("rm", "--all", "--force", "--time", "0", check=False)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)


def test_podman_run_registers_the_container_and_stop_removes_it(stack: Stack, podman: Podman) -> None:
    name = f"cnih-{secrets.token_hex(3)}"
    # The host's agent may run in this module (the test below starts it): the pings need a policy.
    stack.admin.apply([{"apiVersion": "stockade.io/v1", "kind": "Policy",
                        "metadata": {"name": f"{name}-out", "namespace": "default"},
                        "spec": {"appliesTo": {"selector": {"matchLabels": {"app": "web"}}},
                                 "egress": [{"action": "allow", "to": [{"cidr": "198.18.200.0/24"},
                                                                       {"cidr": "2001:db8:200::/64"}]}]}}])
    started = time.monotonic()
    podman.run("run", "--detach", "--name", name, "--network", "stockade", IMAGE, "sleep", "600",
               env={"CNI_ARGS": "STOCKADE_LABELS=app=web"})
    run_seconds = time.monotonic() - started
    try:
        wl = stack.workload("default", name)
        assert wl is not None, "podman run returned and the Workload is not registered"
        assert wl["metadata"]["annotations"][ATTACHED_BY] == "stockade-cni"
        cid = podman.run("inspect", "--format", "{{.Id}}", name).stdout.strip()
        assert wl["metadata"]["annotations"][CONTAINER_ID] == cid
        assert wl["metadata"]["labels"] == {"runtime": "podman", "app": "web"}
        ips = wl["status"]["ips"]
        seen = json.loads(podman.run("inspect", "--format", "{{json .NetworkSettings.Networks}}", name).stdout)
        assert seen["stockade"]["IPAddress"] == ips[0]
        assert seen["stockade"]["GlobalIPv6Address"] == ips[1]
        assert seen["stockade"]["MacAddress"] == wl["spec"]["mac"]
        host_if = wl["spec"]["interface"]
        assert host_if in stack.host_links()
        for target in (PEER_V4, PEER_V6):
            # With the agent running, the container's port is dropped until its program is in.
            wait_until(lambda: podman.run("exec", name, "ping", "-c", "1", "-W", "1", target,
                                          check=False).returncode == 0, f"ping {target} from the container")
    finally:
        started = time.monotonic()
        podman.run("stop", "--time", "0", name)
        stop_seconds = time.monotonic() - started
        podman.run("rm", "--force", name, check=False)
        stack.admin.delete([("Policy", "default", f"{name}-out")])
    assert stack.workload("default", name) is None, "podman stop returned and the Workload is still there"
    assert host_if not in stack.host_links()
    print(f"podman run -d {run_seconds * 1000:.0f} ms, podman stop {stop_seconds * 1000:.0f} ms")


@contextlib.contextmanager
def _named_netns(podman: Podman, container: str) -> Iterator[str]:
    """The container's network namespace under a name of ours (`ip netns attach`), for probes."""
    pid = podman.run("inspect", "--format", "{{.State.Pid}}", container).stdout.strip()
    name = f"{container}-ns"
    subprocess.run(["ip", "netns", "attach", name, pid], check=True, capture_output=True, timeout=10)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def _enforcing(stack: Stack, agent: subprocess.Popen[bytes], interface: str, present: bool) -> bool:
    """The agent enforces the newest revision and its program names `interface` (or not)."""
    if not enforced(stack, stack.admin.status()["revision"]):
        return False
    ruleset = subprocess.run(["ip", "netns", "exec", stack.host_netns, "nft", "list", "table", "inet", "stockade"],
                             capture_output=True, text=True, timeout=10).stdout
    return (f'"{interface}"' in ruleset) == present


def test_a_podman_container_is_allowed_and_denied_like_any_workload(stack: Stack, podman: Podman,
                                                                   agent: subprocess.Popen[bytes]) -> None:
    """`podman run --network stockade` with the host's agent running: the container is filtered at
    its veth by the same policy as any workload, both ways, IPv4 and IPv6; the time from `podman
    run` to enforcement and from `podman stop` to nothing left is printed (make bench has no
    figure for it: see docs/operations.md)."""
    name = f"cnih-{secrets.token_hex(3)}"
    peer = f"{stack.prefix}-p"
    policy = {"apiVersion": "stockade.io/v1", "kind": "Policy", "metadata": {"name": name, "namespace": "default"},
              "spec": {"appliesTo": {"selector": {"matchLabels": {"app": name}}},
                       "egress": [{"id": "to-peer", "action": "allow",
                                   "to": [{"cidr": "198.18.200.0/24"}, {"cidr": "2001:db8:200::/64"}],
                                   "ports": [{"protocol": "TCP", "port": 8080}]}],
                       "ingress": [{"id": "from-peer", "action": "allow",
                                    "from": [{"cidr": "198.18.200.0/24"}, {"cidr": "2001:db8:200::/64"}],
                                    "ports": [{"protocol": "TCP", "port": 9090}]}]}}
    stack.admin.apply([policy])
    started = time.monotonic()
    podman.run("run", "--detach", "--name", name, "--network", "stockade", IMAGE, "sleep", "600",
               env={"CNI_ARGS": f"STOCKADE_LABELS=app={name}"})
    wl = stack.workload("default", name)
    assert wl is not None
    interface = wl["spec"]["interface"]
    try:
        wait_until(lambda: _enforcing(stack, agent, interface, True), "the agent enforcing on the container's veth")
        enforced_after = time.monotonic() - started
        with _named_netns(podman, name) as netns:
            for family, peer_ip, own_ip in ((4, PEER_V4, wl["status"]["ips"][0]), (6, PEER_V6, wl["status"]["ips"][1])):
                assert probe(netns, peer, peer_ip, "tcp", 8080).verdict == "allowed", family
                assert probe(netns, peer, peer_ip, "tcp", 8081, timeout=0.5).verdict == "denied", family
                assert probe(peer, netns, own_ip, "tcp", 9090).verdict == "allowed", family
                assert probe(peer, netns, own_ip, "tcp", 9091, timeout=0.5).verdict == "denied", family
    finally:
        started = time.monotonic()
        podman.run("stop", "--time", "0", name)
        podman.run("rm", "--force", name, check=False)
        stack.admin.delete([("Policy", "default", name)])
    wait_until(lambda: stack.workload("default", name) is None and _enforcing(stack, agent, interface, False),
               "the container's Workload and program gone")
    gone_after = time.monotonic() - started
    print(f"podman run -> enforced {enforced_after * 1000:.0f} ms; podman stop -> nothing left {gone_after * 1000:.0f} ms")
