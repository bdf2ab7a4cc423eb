"""The lab's settings and its state directory: where each file lives, and lab.json.

    LabSettings.from_env()     prefix, state directory and CLI config path, from the environment
    read_record / write_record lab.json: what `up` decided, so the next `up`, `status` and `down` agree
    remove_known_files         what `down` deletes in a directory that is not marked as the lab's

State directory ($STOCKADE_STATE_DIR, default /var/lib/stockade/lab):

    lab.json              prefix, hosts, port, known hosts: marks the directory as the lab's
    tokens.json           hashed tokens (`controller init-tokens`); plaintexts, 0600: admin.token (the CLI's),
                          agent-hvN.token (one per agent: an agent token may report for its own host only)
    ca.crt, ca.key        the lab's own CA (lab.pki); the CLI verifies the controller against ca.crt
    controller.crt, controller.key   the controller's certificate, for 127.0.0.1 and its fabric address
    controller.db         the controller's SQLite store
    controller.db.flows.jsonl  the controller's flow log (controller/flow_file.py), read back when it restarts
    etcd/etcd-<n>/        each etcd member's data (a lab on etcd)
    run/<name>.pid        one per process: "controller", "agent-hv1", ...
    logs/<name>.log       stdout and stderr of each process

Invariants:
- Every path of the lab is a property of LabSettings: no other module joins a
  file name onto the state directory.
- lab.json is written 0600 (private_files); a damaged one is a LabError that
  names the file, never a traceback.
- `remove_known_files` deletes only the files named above, and the directory
  only when it is then empty, so a mistyped STOCKADE_STATE_DIR cannot wipe anything else.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from stockade.client_config import config_path
from stockade.errors import LabError
from stockade.lab import naming, pki
from stockade.private_files import write_private

DEFAULT_STATE_DIR = Path("/var/lib/stockade/lab")


@dataclass(frozen=True)
class LabSettings:
    prefix: str
    state_dir: Path
    config_path: Path

    @classmethod
    def from_env(cls) -> "LabSettings":
        state = os.environ.get("STOCKADE_STATE_DIR") or str(DEFAULT_STATE_DIR)
        prefix = os.environ.get("STOCKADE_LAB_PREFIX") or naming.DEFAULT_PREFIX
        # The client contexts' own lookup ($STOCKADE_CONFIG or ~/.config/stockade/config.json): one definition.
        return cls(naming.check_prefix(prefix), Path(state).absolute(), config_path().absolute())

    # -- files
    @property
    def lab_file(self) -> Path:
        return self.state_dir / "lab.json"

    @property
    def db(self) -> Path:
        return self.state_dir / "controller.db"

    @property
    def socket(self) -> Path:
        return self.state_dir / "controller.sock"

    @property
    def tokens(self) -> Path:
        return self.state_dir / "tokens.json"

    def etcd_dir(self, member: int) -> Path:
        return self.state_dir / "etcd" / f"etcd-{member}"

    @property
    def admin_token(self) -> Path:
        return self.state_dir / "admin.token"

    def agent_token(self, host: str) -> Path:
        return self.state_dir / f"agent-{host}.token"

    @property
    def ca_cert(self) -> Path:
        return pki.paths(self.state_dir)[0]

    @property
    def tls_cert(self) -> Path:
        return pki.paths(self.state_dir)[2]

    @property
    def tls_key(self) -> Path:
        return pki.paths(self.state_dir)[3]

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"


@dataclass(frozen=True)
class LabRecord:
    """lab.json: what `up` decided, so the next `up`, `status` and `down` agree with it."""

    prefix: str
    hosts: int
    port: int                       # the CLI's port of the first controller replica
    config_written: bool = False
    store: str = "sqlite"           # sqlite | etcd (a 3-member cluster in the control-plane netns)
    more_ports: tuple[int, ...] = ()  # the CLI's ports of replicas 2..N (etcd only)

    @property
    def controllers(self) -> int:
        return 1 + len(self.more_ports)

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.port, *self.more_ports)

    @property
    def url(self) -> str:
        """The first replica, as the CLI reaches it."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def urls(self) -> str:
        """Every replica as the CLI reaches it (what its context holds)."""
        return ",".join(f"https://127.0.0.1:{p}" for p in self.ports)

    @property
    def plain_url(self) -> str:
        """What the lab's URL was before it served HTTPS: a config still naming it is the lab's too."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def host_names(self) -> list[str]:
        return [naming.host_name(i) for i in range(1, self.hosts + 1)]


def read_record(settings: LabSettings) -> LabRecord | None:
    """lab.json, or None when the directory holds no lab."""
    try:
        raw = json.loads(settings.lab_file.read_text())
        return LabRecord(raw["prefix"], int(raw["hosts"]), int(raw["port"]), bool(raw.get("config_written")),
                         str(raw.get("store", "sqlite")), tuple(int(p) for p in raw.get("more_ports", ())))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as e:
        raise LabError(f"{settings.lab_file} is damaged ({e}); run `stockade lab down` and `lab up` again") from e


def write_record(settings: LabSettings, record: LabRecord) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    write_private(settings.lab_file, json.dumps(asdict(record), indent=2) + "\n")


def remove_known_files(settings: LabSettings) -> None:
    """Delete the lab's own files from a state directory without lab.json; leave anything else."""
    for path in (settings.tokens, settings.admin_token, settings.socket, settings.lab_file,
                 *pki.paths(settings.state_dir),
                 settings.db, Path(f"{settings.db}-wal"), Path(f"{settings.db}-shm"),
                 *settings.state_dir.glob("agent-hv*.token")):
        path.unlink(missing_ok=True)
    for directory in (settings.run_dir, settings.log_dir, settings.state_dir / "etcd"):
        shutil.rmtree(directory, ignore_errors=True)
    try:
        settings.state_dir.rmdir()
    except OSError:
        pass  # not empty: someone else's files, leave them
