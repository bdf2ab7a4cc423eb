"""Wait until what `up` started answers: the etcd cluster, each controller replica, every agent.

    wait_etcd_healthy(settings)            every member runs and `etcdctl endpoint health` says so
    wait_healthy(settings, name, url)      a controller replica answers /healthz
    wait_agents(settings, record, token)   every hypervisor's agent reported since, or enforces the store's revision
    reporting_hosts(settings, url, token)  the hosts the controller has reports from (also for `status`)

Invariants:
- The controller is only ever asked over HTTPS, verified against the lab CA, through the
  project's own client; an unreadable CA means nothing is asked.
- A process that exits while it is waited for is a LabError at once, with its log's tail;
  one that does not answer in time is a LabError that names its log. No wait is unbounded.
- An agent counts as ready by a report that is current, not merely by one the controller holds:
  a replica restarted after a crash loads the reports its store kept, which may predate the
  last change (reports are written behind), and `up` must not return while they are all it has.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import time
from datetime import datetime
from typing import Callable

from stockade.client import ControllerClient
from stockade.clock import utc_now
from stockade.errors import LabError, StockadeError
from stockade.lab import naming
from stockade.lab import netns as ns
from stockade.lab.processes import agent_name, lab_process_env, log_tail, process_status
from stockade.lab.state import LabRecord, LabSettings

HEALTH_TIMEOUT = 20.0
AGENTS_TIMEOUT = 30.0


def _ca_readable(settings: LabSettings) -> bool:
    """The lab CA can be loaded (else nothing is asked: nothing would be trusted)."""
    try:
        ssl.create_default_context(cafile=str(settings.ca_cert))
    except OSError:
        return False
    return True


def _client(settings: LabSettings, url: str, token: str | None = None, timeout: float = 1.0) -> ControllerClient:
    """The lab's controller through the project's own client, verified against the lab CA."""
    return ControllerClient(url, token, timeout=timeout, ca=settings.ca_cert)


def wait_etcd_healthy(settings: LabSettings) -> None:
    """Wait until the cluster answers, with quorum."""
    cp = naming.control_netns(settings.prefix)
    endpoints = ",".join(f"http://{naming.etcd_address(j)}:{naming.ETCD_CLIENT_PORT}"
                         for j in range(1, naming.ETCD_MEMBERS + 1))
    deadline = time.monotonic() + HEALTH_TIMEOUT
    while time.monotonic() < deadline:
        for member in range(1, naming.ETCD_MEMBERS + 1):
            if not process_status(settings, f"etcd-{member}").alive:
                log = settings.log_file(f"etcd-{member}")
                raise LabError(f"etcd member {member} exited; read {log}:\n{log_tail(log)}")
        done = subprocess.run(["nsenter", f"--net=/run/netns/{cp}", "etcdctl", "--endpoints", endpoints,
                               "--command-timeout", "2s", "endpoint", "health"],
                              capture_output=True, text=True, env={**lab_process_env(os.environ), "ETCDCTL_API": "3"})
        if done.returncode == 0:
            return
        time.sleep(0.2)
    raise LabError(f"the lab's etcd cluster did not become healthy within {HEALTH_TIMEOUT:.0f} s; read "
                   f"{settings.log_dir}/etcd-*.log")


def wait_healthy(settings: LabSettings, name: str, url: str) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT
    log = settings.log_file(name)
    if not _ca_readable(settings):
        raise LabError(f"cannot read the lab CA {settings.ca_cert}; run `stockade lab down` and `lab up` again")
    with _client(settings, url) as client:
        while time.monotonic() < deadline:
            if not process_status(settings, name).alive:
                raise LabError(f"the {name} exited; read {log}:\n{log_tail(log)}")
            try:
                if client.healthz().get("ok"):
                    return
            except StockadeError:
                pass
            time.sleep(0.1)
    raise LabError(f"the {name} did not answer {url}/healthz within {HEALTH_TIMEOUT:.0f} s; "
                   f"read {log}:\n{log_tail(log)}")


def reporting_hosts(settings: LabSettings, url: str, token: str, timeout: float = 2.0) -> list[str] | None:
    """Hosts the controller has a report from; None when it cannot be asked (or not over verified TLS)."""
    if not _ca_readable(settings):
        return None
    try:
        with _client(settings, url, token, timeout) as client:
            agents = client.status().get("agents") or []
    except StockadeError:
        return None
    return sorted(str(a.get("host")) for a in agents if isinstance(a, dict) and a.get("host"))


def current_hosts(settings: LabSettings, url: str, token: str, since: datetime) -> list[str] | None:
    """Hosts whose agent enforces the store's revision in sync, or reported at or after `since`
    (an agent that holds an older program on purpose, e.g. on a store conflict, still answers);
    None when the controller cannot be asked."""
    if not _ca_readable(settings):
        return None
    try:
        with _client(settings, url, token, 2.0) as client:
            status = client.status()
    except StockadeError:
        return None
    revision = status.get("revision")
    current = []
    for agent in status.get("agents") or []:
        if not isinstance(agent, dict) or not agent.get("host"):
            continue
        in_force = agent.get("inSync") and agent.get("revision") == revision
        seen = _parse_time(agent.get("lastSeen"))
        if in_force or (seen is not None and seen >= since):
            current.append(str(agent["host"]))
    return sorted(current)


def _parse_time(text: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text))
    except ValueError:
        return None


def wait_agents(settings: LabSettings, record: LabRecord, token: str) -> None:
    since = utc_now()
    deadline = time.monotonic() + AGENTS_TIMEOUT
    missing = record.host_names
    while time.monotonic() < deadline:
        for host in missing:
            name = agent_name(host)
            if not process_status(settings, name).alive:
                log = settings.log_file(name)
                raise LabError(f"the agent of {host} exited; read {log}:\n{log_tail(log)}")
        current = current_hosts(settings, record.url, token, since) or []
        missing = [h for h in record.host_names if h not in current]
        if not missing:
            return
        time.sleep(0.2)
    logs = ", ".join(str(settings.log_file(agent_name(h))) for h in missing)
    raise LabError(f"no current report from the agent of {', '.join(missing)} within {AGENTS_TIMEOUT:.0f} s; "
                   f"read {logs}")


def wait_answering(settings: LabSettings, name: str, netns: str, answers: Callable[[], bool], what: str,
                   timeout: float, interval: float = 0.05) -> None:
    """Until `answers()`, run inside `netns` (where process `name` listens), says yes; LabError with
    the process's log when it has not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ns.run_in(netns, answers):
            return
        time.sleep(interval)
    raise LabError(f"{what} did not answer within {timeout:.0f} s: {log_tail(settings.log_file(name))}")
