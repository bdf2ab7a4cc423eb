"""A real lab per test module: unique prefix, state dir and CLI config; torn down even on failure."""

from __future__ import annotations

import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stockade.client_config import Context, client_from_config, context_from_file
from stockade.client import ControllerClient
from stockade.lab.naming import node_addresses
from tests.waiting import process_gone, wait_until

def ipv4(workload: dict[str, Any]) -> str:
    """A workload's IPv4 address, as `stockade get -o json` shows it."""
    return next(ip for ip in workload["status"]["ips"] if ":" not in ip)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def metric_samples(text: str) -> Samples:
    """Prometheus text → {(sample name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "three-tier"


@dataclass
class Lab:
    prefix: str
    env: dict[str, str]
    state_dir: Path

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([sys.executable, "-m", "stockade", *args], env=self.env, capture_output=True,
                             text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"stockade {' '.join(args)} exited {res.returncode}\n"
                                 f"stdout: {res.stdout}\nstderr: {res.stderr}")
        return res

    def context(self) -> Context:
        """The admin context `lab up` wrote: controller URL (https), token, CA."""
        return context_from_file(Path(self.env["STOCKADE_CONFIG"]))

    def client(self) -> ControllerClient:
        """An admin client of this lab's controller, verified against the lab CA."""
        return client_from_config(Path(self.env["STOCKADE_CONFIG"]))

    def tls(self) -> ssl.SSLContext:
        """For plain urllib requests to the controller (e.g. /metrics): trusts the lab CA."""
        return ssl.create_default_context(cafile=self.context().ca)

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "-o", "json").stdout)

    def apply_text(self, text: str, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        path = self.state_dir.parent / f"apply-{secrets.token_hex(4)}.yaml"
        path.write_text(text)
        return self.cli("apply", "-f", str(path), *extra, check=check)

    def workload(self, ref: str) -> dict[str, Any]:
        ns, name = ref.split("/")
        return self.json("get", "workload", name, "-n", ns)

    def hv_netns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def nft(self, host: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.hv_netns(host), "nft", *args],
                              capture_output=True, text=True, timeout=30)

    def controller_metrics(self) -> Samples:
        first = self.context().controller.split(",")[0]  # one replica's (a lab on etcd lists several)
        with urllib.request.urlopen(f"{first}/metrics", timeout=5, context=self.tls()) as r:
            return metric_samples(r.read().decode())

    def agent_metrics(self, host: str) -> Samples:
        """Agents serve /metrics inside their hypervisor's namespace, as on a real host."""
        url = f"http://{node_addresses(host)[0]}:9301/metrics"
        code = f"import urllib.request;print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
        out = subprocess.run(["nsenter", f"--net=/run/netns/{self.hv_netns(host)}", sys.executable, "-c", code],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        return metric_samples(out)

    def pid(self, name: str) -> int:
        """The pid of a lab process (`controller`, `agent-hv1`, ...) from its pid file."""
        return int((self.state_dir / "run" / f"{name}.pid").read_text())

    def kill9(self, name: str) -> int:
        """SIGKILL a lab process and wait until it is gone; its pid."""
        pid = self.pid(name)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: process_gone(pid), f"{name} (pid {pid}) to die of SIGKILL", timeout=5)
        return pid

    def has_table(self, host: str) -> bool:
        return self.nft(host, "list", "table", "inet", "stockade").returncode == 0

    def logs(self) -> str:
        out = []
        for f in sorted((self.state_dir / "logs").glob("*.log")) if (self.state_dir / "logs").exists() else []:
            out.append(f"==== {f.name}\n{f.read_text()[-4000:]}")
        return "\n".join(out)


def netns_with_prefix(prefix: str) -> list[str]:
    res = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return [line.split()[0] for line in res.stdout.splitlines() if line.startswith(prefix + "-")]


def make_lab(tmp: Path, hosts: int, *up_args: str) -> Iterator[Lab]:
    prefix = "e" + secrets.token_hex(3)
    state = tmp / "state"
    env = {**os.environ, "STOCKADE_STATE_DIR": str(state), "STOCKADE_LAB_PREFIX": prefix,
           "STOCKADE_CONFIG": str(tmp / "config.json")}
    env.pop("STOCKADE_TOKEN", None)
    env.pop("STOCKADE_CONTROLLER", None)
    lab = Lab(prefix, env, state)
    try:
        lab.cli("lab", "up", "--hosts", str(hosts), *up_args, timeout=120)
        yield lab
    finally:
        down = subprocess.run([sys.executable, "-m", "stockade", "lab", "down"], env=env,
                              capture_output=True, text=True, timeout=120)
        for ns in netns_with_prefix(prefix):  # belt and braces: never leak namespaces
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        assert down.returncode == 0, down.stderr


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    yield from make_lab(tmp_path_factory.mktemp("lab"), hosts=2)


@pytest.fixture(scope="module")
def shop(lab: Lab) -> Lab:
    """The lab with the three-tier example applied and enforced."""
    lab.cli("apply", "-f", str(EXAMPLES), "--wait", "--timeout", "60")
    return lab
