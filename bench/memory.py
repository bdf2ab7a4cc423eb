"""Figure 5 — memory: the real agent's RSS with the policy of 10,000 workloads.

A standalone controller (`stockade controller serve`, SQLite in a temporary
directory, HTTP on 127.0.0.1 for us and a unix socket for the agent) is given
the synthetic desired state in batches of at most 2,000 objects. Then one real
agent process (`stockade agent run --host node-0`, flow logging on, as in
production) starts in a network namespace of our own, lists the whole state,
compiles and programs its host's table there. Once it reports the last revision
in sync we read its RSS (current and peak, from /proc) and the controller's.
The ratio is the agent's peak RSS over the 100 MiB budget (met when < 1).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import synthetic
from bench.common import Figure, cli_client, new_prefix, remove_netns, rss_mib, run as sh, stop, wait_until

BUDGET_MIB = 100.0
AGENT_HOST = "node-0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tokens(path: Path) -> dict[str, str]:
    from stockade.controller.auth import create_token_file

    return create_token_file(path, [{"name": "bench-admin", "role": "admin"},
                                    {"name": f"agent-{AGENT_HOST}", "role": "agent", "host": AGENT_HOST}])


def _agent_status(client: Any) -> dict[str, Any] | None:
    for a in client.status().get("agents", []):
        if a.get("host") == AGENT_HOST:
            return a
    return None


def run(workloads: int = 10_000, policies: int = 2_000, batch: int = 2_000, timeout: float = 300) -> Figure:
    prefix = new_prefix()
    netns = f"{prefix}-mem"
    controller: subprocess.Popen[bytes] | None = None
    saved_env = {k: os.environ.get(k) for k in ("STOCKADE_CONFIG", "STOCKADE_CONTROLLER", "STOCKADE_TOKEN",
                                                "STOCKADE_CA", "STOCKADE_CONTEXT")}
    with tempfile.TemporaryDirectory(prefix=f"stockade-{prefix}-") as tmp:
        d = Path(tmp)
        try:
            plain = _tokens(d / "tokens.json")
            (d / "agent.token").write_text(plain[f"agent-{AGENT_HOST}"] + "\n")
            port = _free_port()
            sock = d / "c.sock"
            with open(d / "controller.log", "wb") as log:
                controller = subprocess.Popen(
                    [sys.executable, "-m", "stockade", "controller", "serve", "--db", str(d / "db.sqlite"),
                     "--tokens", str(d / "tokens.json"), "--listen", f"127.0.0.1:{port}", "--socket", str(sock)],
                    stdout=log, stderr=subprocess.STDOUT)
            from stockade.client_config import write_config

            for k in saved_env:
                os.environ.pop(k, None)
            os.environ["STOCKADE_CONFIG"] = str(d / "config.json")
            write_config(f"http://127.0.0.1:{port}", plain["bench-admin"], d / "config.json")
            client = cli_client(timeout=120)

            def healthy() -> bool:
                try:
                    client.healthz()
                    return True
                except Exception:  # noqa: BLE001 - not up yet
                    return controller is not None and controller.poll() is not None and _raise_exited(d)
            wait_until(healthy, 30, 0.1, "the controller to start")
            started = time.monotonic()
            revision = 0
            for part in synthetic.batches(synthetic.documents(workloads, policies), batch):
                revision = int(client.apply(part, message="bench: synthetic state")["revision"])
            apply_s = time.monotonic() - started
            agent_rss, agent_peak, sync_s = _agent(d, f"{netns}1", ["-m", "stockade.agent", "run"], sock, revision,
                                                   timeout, lambda: _agent_status(client))
            cli_rss, cli_peak, _ = _agent(d, f"{netns}2", ["-m", "stockade", "agent", "run"], sock, revision,
                                          timeout, None)
            ctl_rss, ctl_peak = rss_mib(controller.pid)
        finally:
            stop(controller, timeout=10)
            remove_netns(prefix)
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    ratio = agent_peak / BUDGET_MIB
    return Figure(
        name="memory",
        title=f"agent RSS with the policy of {workloads:,} workloads ({policies:,} policies)",
        values={"agent_rss_mib": round(agent_rss, 1), "agent_peak_rss_mib": round(agent_peak, 1),
                "agent_peak_rss_mib_via_stockade_cli": round(cli_peak, 1),
                "agent_rss_mib_via_stockade_cli": round(cli_rss, 1),
                "controller_rss_mib": round(ctl_rss, 1), "controller_peak_rss_mib": round(ctl_peak, 1),
                "workloads": workloads, "policies": policies, "revision": revision,
                "apply_all_batches_s": round(apply_s, 2), "agent_first_sync_s": round(sync_s, 2)},
        ratio=round(ratio, 3), target=f"agent peak RSS < {BUDGET_MIB:g} MiB (ratio < 1)", met=ratio < 1.0,
        notes=["ratio = agent peak RSS / 100 MiB, agent started as `python -m stockade.agent run`; "
               "started as `stockade agent run` (the whole CLI loaded first) it holds "
               f"{cli_peak:.0f} MiB at peak; controller RSS reported"],
    )


def _agent(d: Path, netns: str, entry: list[str], sock: Path, revision: int, timeout: float,
           status: Any) -> tuple[float, float, float]:
    """Start one real agent for AGENT_HOST in a fresh namespace; once it enforces `revision` (its
    own log says so, and the controller's status too when `status` is given), wait a few drift
    checks and heartbeats and read its (RSS, peak RSS, seconds to first sync); then stop it."""
    log_path = d / f"agent-{netns}.log"
    agent: subprocess.Popen[bytes] | None = None
    try:
        sh(["ip", "netns", "add", netns])
        sh(["ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up"])
        with open(log_path, "wb") as log:
            agent = subprocess.Popen(
                ["ip", "netns", "exec", netns, sys.executable, *entry, "--host", AGENT_HOST,
                 "--controller", f"unix://{sock}", "--token-file", str(d / "agent.token")],
                stdout=log, stderr=subprocess.STDOUT)
        started = time.monotonic()

        def enforced() -> bool:
            if agent is not None and agent.poll() is not None:
                raise RuntimeError(f"the agent exited: {log_path.read_text()[-3000:]}")
            if f"revision {revision}: full transaction" not in log_path.read_text():
                return False
            a = status() if status is not None else {"revision": revision, "inSync": True}
            return bool(a and (a.get("revision") or 0) >= revision and a.get("inSync"))
        wait_until(enforced, timeout, 0.2, "the agent to enforce the synthetic state")
        sync_s = time.monotonic() - started
        time.sleep(3)  # a few drift checks and heartbeats: the steady state, not only the first sync
        rss, peak = rss_mib(agent.pid)
        return rss, peak, sync_s
    finally:
        stop(agent)
        sh(["ip", "netns", "del", netns], check=False)


def _raise_exited(d: Path) -> bool:
    raise RuntimeError(f"the controller exited: {(d / 'controller.log').read_text()[-3000:]}")
