"""Live-migrate a running lab VM to another hypervisor namespace with QEMU's own migration.

    moved = live_migrate(source_run_dir, dest_spec, image, dest_run_dir, accel)

The destination QEMU starts in the destination's namespace with the source's machine (same
memory, CPUs, devices, MAC and accelerator: QEMU refuses anything else) and `-incoming` on a
unix socket; its tap appears there at once, which the destination's agent plumbs (the VM's
Workload already names that host). The source's QMP is told to migrate; QEMU copies the
guest's memory while it runs, then stops it for the last pages and the device state, and the
destination resumes it: the guest's processes, sockets, addresses and its control channel's
port carry on. The source QEMU then quits, and its tap goes with it.

Invariants: the destination QEMU is stopped again when the migration fails or times out, and
the source keeps running (QEMU resumes a guest whose migration failed); every wait is bounded.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stockade.errors import LabError
from stockade.lab import netns as ns
from stockade.lab.vm.control import ControlChannel
from stockade.lab.vm.image import GuestImage
from stockade.lab.vm.qemu import Accel, VmSpec, qemu_argv

MIGRATE_TIMEOUT = 60.0


@dataclass(frozen=True)
class VmMigration:
    pid: int                  # the destination QEMU, which runs the guest now
    seconds: float            # from starting the destination to the source's end
    paused_ms: float          # how long the guest was stopped (QEMU's own `downtime`)


class Qmp:
    """Just enough of QEMU's machine protocol: connect, negotiate, execute."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        self._sock.connect(str(path))
        self._file = self._sock.makefile("rw")
        self._read()  # the greeting
        self.execute("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        while True:
            line = self._file.readline()
            if not line:
                raise LabError("QEMU closed its QMP socket")
            message: dict[str, Any] = json.loads(line)
            if "event" not in message:  # events (STOP, RESUME, MIGRATION...) are not answers
                return message

    def execute(self, command: str, **arguments: Any) -> Any:
        self._file.write(json.dumps({"execute": command, **({"arguments": arguments} if arguments else {})}) + "\n")
        self._file.flush()
        answer = self._read()
        if "error" in answer:
            raise LabError(f"QEMU refused {command}: {answer['error'].get('desc', answer['error'])}")
        return answer.get("return")

    def close(self) -> None:
        self._file.close()
        self._sock.close()


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def live_migrate(source_run_dir: Path, dest: VmSpec, image: GuestImage, dest_run_dir: Path,
                 accel: Accel, timeout: float = MIGRATE_TIMEOUT) -> VmMigration:
    started = time.monotonic()
    source_pid = int((source_run_dir / "qemu.pid").read_text().strip())
    dest_run_dir.mkdir(parents=True, exist_ok=True)
    incoming = dest_run_dir / "migrate.sock"
    for name in ("control.sock", "qmp.sock", "migrate.sock", "qemu.pid"):
        (dest_run_dir / name).unlink(missing_ok=True)
    argv = ["nsenter", f"--net={ns.netns_path(dest.netns)}",
            *qemu_argv(dest, image, dest_run_dir, accel, incoming=incoming)]
    with open(dest_run_dir / "qemu.log", "wb") as qemu_log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=qemu_log,
                                start_new_session=True)
    control: ControlChannel | None = None
    qmp: Qmp | None = None
    try:
        # The control port's chardev waits for its client (wait=on) before QEMU goes on to listen.
        control = ControlChannel.connect(dest_run_dir / "control.sock", f"VM {dest.name} (incoming)", timeout=20)
        deadline = time.monotonic() + 20
        while not incoming.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"VM {dest.name}: the destination QEMU does not wait for the migration: "
                               f"{(dest_run_dir / 'qemu.log').read_text(errors='replace')[-600:]}")
            time.sleep(0.02)
        qmp = Qmp(source_run_dir / "qmp.sock")
        qmp.execute("migrate", uri=f"unix:{incoming}")
        deadline = time.monotonic() + timeout
        while True:
            state = qmp.execute("query-migrate") or {}
            status = state.get("status")
            if status == "completed":
                break
            if status in ("failed", "cancelled") or time.monotonic() > deadline:
                if status not in ("failed", "cancelled"):
                    qmp.execute("migrate_cancel")
                raise LabError(f"VM {dest.name}: the migration {status or 'did not complete'} "
                               f"({state.get('error-desc', 'no reason given')})")
            time.sleep(0.05)
        paused = float(state.get("downtime", 0))
        try:
            qmp.execute("quit")
        except LabError:
            pass  # QEMU may close the socket before it answers
        qmp.close()
        qmp = None
        deadline = time.monotonic() + 10
        while _pid_alive(source_pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _pid_alive(source_pid):
            os.kill(source_pid, 9)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        raise
    finally:
        if qmp is not None:
            qmp.close()
        if control is not None:
            control.close()  # `stockade probe` connects to it from its own process
    return VmMigration(proc.pid, round(time.monotonic() - started, 3), paused)
