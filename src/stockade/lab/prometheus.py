"""`stockade lab up --prometheus`: Debian's Prometheus scraping the lab, with Stockade's SLI rules (issue 19).

It runs in the control-plane netns, on the fabric beside the controller, and listens there on
PROMETHEUS_ADDRESS:9090. It scrapes every controller replica (job `stockade-controller`, HTTPS
verified against the lab CA) and every agent (job `stockade-agent`, each in its hypervisor's
netns at its node address), every second, and evaluates the repository's rules
(deploy/prometheus/stockade-rules.yml: recording rules for the SLIs and the burn-rate alerts) —
the same file an operator loads, so what the lab shows is what production computes.

Invariants: its configuration, data (one day kept) and pid live in the lab's state directory; a
lab with that configuration gets Prometheus back on the next `lab up` (as any lab process), and
`lab down` stops it and removes all of it with the state.
"""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

import yaml

from stockade.errors import LabError
from stockade.lab import naming, processes, readiness
from stockade.lab.commands import AGENT_METRICS_PORT, PROMETHEUS_PORT
from stockade.lab import netns as ns
from stockade.lab.state import LabSettings

PROCESS = "prometheus"
PORT = PROMETHEUS_PORT
SCRAPE_INTERVAL = "1s"
READY_TIMEOUT = 30.0
# The rules ship in the repository (deploy/), beside the systemd units; the lab runs from it.
RULES = Path(__file__).resolve().parents[3] / "deploy" / "prometheus" / "stockade-rules.yml"


def address() -> str:
    """Where it listens: the control plane's first address (the first controller's), port 9090."""
    return f"{naming.CONTROLLER_V4}:{PORT}"


def config_file(settings: LabSettings) -> Path:
    return settings.state_dir / "prometheus" / "prometheus.yml"


def wanted(settings: LabSettings) -> bool:
    """Was this lab brought up with --prometheus (its configuration exists)?"""
    return config_file(settings).exists()


def render_config(settings: LabSettings, hosts: list[str], controllers: int) -> str:
    if not RULES.exists():
        raise LabError(f"the SLI rules are not at {RULES}: `lab up --prometheus` runs from a source tree")
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "stockade-controller", "scheme": "https",
             "tls_config": {"ca_file": str(settings.ca_cert)},
             "static_configs": [{"targets": [f"{naming.controller_addresses(i)[0]}:{naming.CONTROLLER_PORT}"
                                             for i in range(1, controllers + 1)]}]},
            {"job_name": "stockade-agent",
             "static_configs": [{"targets": [f"{naming.node_addresses(h)[0]}:{AGENT_METRICS_PORT}"],
                                 "labels": {"host": h}} for h in hosts]},
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


def argv(settings: LabSettings) -> list[str]:
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    return ["nsenter", f"--net=/run/netns/{naming.control_netns(settings.prefix)}", binary,
            f"--config.file={config_file(settings)}",
            f"--storage.tsdb.path={settings.state_dir / 'prometheus' / 'data'}",
            "--storage.tsdb.retention.time=1d", f"--web.listen-address={address()}", "--web.enable-lifecycle"]


def ensure(settings: LabSettings, hosts: list[str], controllers: int) -> None:
    """Prometheus running with a configuration for today's hosts and replicas (reloaded when it changed)."""
    path = config_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render_config(settings, hosts, controllers)
    changed = not path.exists() or path.read_text() != text
    path.write_text(text)
    status = processes.process_status(settings, PROCESS)
    if status.alive and changed:
        processes.stop(settings, [PROCESS])
    if not status.alive or changed:
        processes.start(settings, PROCESS, argv(settings), program=argv(settings)[2])
    wait_ready(settings)


def query(settings: LabSettings, promql: str, timeout: float = 5.0) -> list[dict]:  # type: ignore[type-arg]
    """An instant query's result vector (from inside the control-plane netns, where it listens)."""
    import json
    from urllib.parse import quote

    url = f"http://{address()}/api/v1/query?query={quote(promql)}"

    def ask() -> list[dict]:  # type: ignore[type-arg]
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return list(json.loads(answer.read())["data"]["result"])

    return ns.run_in(naming.control_netns(settings.prefix), ask)


def wait_ready(settings: LabSettings) -> None:
    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://{address()}/-/ready", timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    readiness.wait_answering(settings, PROCESS, naming.control_netns(settings.prefix), ready, "Prometheus",
                             READY_TIMEOUT, interval=0.2)
