"""Start, stop and inspect the lab's own processes, by name: "controller", "etcd-1", "agent-hv1", ...

    start(settings, name, argv)   run argv in its own session, log to logs/<name>.log, pid to run/<name>.pid
    stop(settings, names)         TERM, then KILL what is left; the names that were running
    process_status(settings, name)  pid, alive, role and log of one process
    lab_process_env(environ)      the environment every lab process starts with

Invariants:
- A process counts as running only when its pid is alive (not a zombie) and its command line
  names this state directory and its role's marker: a recycled pid is not mistaken for ours.
- Processes run in their own session (they outlive the `lab up` command, and a Ctrl-C there
  does not reach them) and are only ever signalled by the pid recorded in their pid file.
- A lab process inherits only LAB_ENV_PASSTHROUGH from the operator's environment: no token,
  config or cloud credential.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from stockade.clock import utc_now
from stockade.errors import LabError
from stockade.lab.state import LabSettings
from stockade.model.naming import short_hash

STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class ProcessStatus:
    name: str
    role: str   # controller | agent (DESIGN: also etcd, dns, prometheus, vm, container)
    pid: int | None
    alive: bool
    log: str


# ------------------------------------------------------------------ names and roles

def controller_name(replica: int) -> str:
    return "controller" if replica == 1 else f"controller-{replica}"


def agent_name(host: str) -> str:
    return f"agent-{host}"


def vm_name(namespace: str, name: str) -> str:
    """The process name of a lab VM (`lab.vms`): short, so its run directory's socket path fits."""
    return "vm-" + short_hash(f"{namespace}/{name}", 10)


def running_vms(settings: LabSettings) -> list[str]:
    """The process names of the lab's VMs (`lab.vms`: those with a pid file)."""
    return sorted(p.stem for p in settings.run_dir.glob("vm-*.pid")) if settings.run_dir.exists() else []


def role(name: str) -> str:
    if name.startswith("vm-"):
        return "vm"
    if name in ("dns", "prometheus"):
        return name
    return "controller" if name.startswith("controller") else "etcd" if name.startswith("etcd-") else "agent"


def _marker(name: str) -> list[str]:
    """What the command line of process `name` holds, in order (see commands.py)."""
    kind = role(name)
    if kind == "controller":
        return ["controller", "serve"]
    if kind == "etcd":
        return ["--name", name]
    if kind == "vm":
        return ["-name", f"stockade-{name}"]  # lab.vms names the QEMU guest after its process
    if kind == "dns":
        return ["--keep-in-foreground", "--no-resolv"]  # lab.outside's dnsmasq
    if kind == "prometheus":
        return ["--storage.tsdb.retention.time=1d"]      # lab.prometheus
    return ["stockade.lab.agent", "run", "--host", name.removeprefix("agent-")]


# ------------------------------------------------------------------ inspection

def read_pid(settings: LabSettings, name: str) -> int | None:
    try:
        return int(settings.pid_file(name).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def proc_args(pid: int | None) -> list[bytes] | None:
    """Process `pid`'s command line, argument by argument; None when there is no such process."""
    if pid is None:
        return None
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return None


def _runs_program(pid: int, program: str) -> bool:
    args = proc_args(pid)
    return args is not None and args[0] == program.encode()


def _is_ours(pid: int, settings: LabSettings, marker: list[str]) -> bool:
    """Alive, not a zombie, and its command line holds our state dir and `marker` in order."""
    cmdline = proc_args(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    if cmdline is None:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        return False
    args = [a.decode(errors="replace") for a in cmdline]
    if not any(str(settings.state_dir) in a for a in args):
        return False
    joined = "\0".join(args)
    return "\0".join(marker) in joined


def process_status(settings: LabSettings, name: str) -> ProcessStatus:
    pid = read_pid(settings, name)
    alive = pid is not None and _is_ours(pid, settings, _marker(name))
    return ProcessStatus(name, role(name), pid, alive, str(settings.log_file(name)))


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text[-lines:])


# ------------------------------------------------------------------ environment

# What a lab process inherits from the operator's environment: how to find programs and Python,
# and the locale. Nothing else — in particular no STOCKADE_TOKEN, STOCKADE_CONFIG or cloud
# credentials: the controller and agents get every setting on their command line and their
# token from a 0600 file, and a long-lived daemon must not carry (nor leak into its
# /proc/PID/environ, its children or its crash reports) the credentials of whoever started it.
LAB_ENV_PASSTHROUGH = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH", "VIRTUAL_ENV", "HOME", "TMPDIR")


def lab_process_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment a lab process (controller, agent) starts with, built from `environ`."""
    env = {k: environ[k] for k in LAB_ENV_PASSTHROUGH if k in environ}
    env.setdefault("PATH", os.defpath)
    env["PYTHONUNBUFFERED"] = "1"
    return env


# ------------------------------------------------------------------ start and stop

def start(settings: LabSettings, name: str, argv: list[str], pass_fds: tuple[int, ...] = (),
          program: str = sys.executable) -> int:
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    env = lab_process_env(os.environ)
    with open(settings.log_file(name), "ab") as log:
        log.write(f"\n==== {utc_now().astimezone().strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        log.flush()
        try:
            # Own session: the process outlives `lab up`, and a Ctrl-C there does not reach it.
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True, close_fds=True, pass_fds=pass_fds)
        except OSError as e:
            raise LabError(f"cannot start {name} ({argv[0]}): {e}") from e
    settings.pid_file(name).write_text(f"{proc.pid}\n")
    # Until the child has exec'd Python, its /proc cmdline is ours or nsenter's, and
    # during each exec it is briefly empty, so `_is_ours` would call it dead. Wait for
    # the last exec, so that a liveness check right after `start` is right.
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and proc.poll() is None:
        if _runs_program(proc.pid, program) and _is_ours(proc.pid, settings, _marker(name)):
            break
        time.sleep(0.01)
    return proc.pid


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our child (a test calling `up` in-process)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop(settings: LabSettings, names: list[str]) -> list[str]:
    """TERM all of `names` at once, KILL what is left after STOP_TIMEOUT; the names that were running.

    Together rather than one by one, so stopping N slow processes costs one
    timeout, not N.
    """
    running: dict[str, int] = {}
    for name in names:
        status = process_status(settings, name)
        settings.pid_file(name).unlink(missing_ok=True)
        if status.alive and status.pid is not None:
            running[name] = status.pid
    left = dict(running)
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 2.0)):
        for pid in left.values():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while left and time.monotonic() < deadline:
            for name, pid in list(left.items()):
                _reap(pid)
                if not _is_ours(pid, settings, _marker(name)):
                    del left[name]
            time.sleep(0.05)
        if not left:
            break
    return list(running)
