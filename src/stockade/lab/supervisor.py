"""The lab's processes: build the topology, start a controller and one agent per hypervisor, stop all.

    up(settings, hosts)   topology + tokens + CA and certificate + controller + agents + CLI context; idempotent
    down(settings)        stop processes, tear the topology down, remove state and the CLI's lab context
    status(settings)      what runs and what exists, changes nothing

State directory ($STOCKADE_STATE_DIR, default /var/lib/stockade/lab):

    lab.json              prefix, hosts, port, known hosts: marks the directory as the lab's
    tokens.json           hashed tokens (`controller init-tokens`); plaintexts, 0600: admin.token (the CLI's),
                          agent-hvN.token (one per agent: an agent token may report for its own host only)
    ca.crt, ca.key        the lab's own CA (lab.pki); the CLI verifies the controller against ca.crt
    controller.crt, controller.key   the controller's certificate, for 127.0.0.1 and its fabric address
    controller.db         the controller's SQLite store

Processes: the controller runs in the control-plane netns (P-cp) and serves HTTPS on the
fabric (naming.CONTROLLER_V4:7470), where every agent reaches it with the lab CA and its own
host token, as an agent on a real host does; the CLI reaches it on 127.0.0.1:port, a socket
`up` binds here and hands over (`controller serve --listen-fd`). Each agent runs in its
hypervisor's netns.
    run/<name>.pid        one per process: "controller", "agent-hv1", ...
    logs/<name>.log       stdout and stderr of each process

Invariants:
- `up` keeps what runs and restarts what died; the port, the tokens and the
  controller's database survive repeated `up`s. A process counts as running
  only when its pid is alive and its command line names this state directory
  (a recycled pid is not mistaken for ours).
- Processes run in their own session (they outlive the `lab up` command) and
  are only ever signalled by the pid recorded in their pid file (or, in
  `down`, when they run inside one of the lab's own netns).
- `down` deletes the state directory only if it holds `lab.json`; otherwise
  only the files named above, so a mistyped STOCKADE_STATE_DIR cannot wipe
  anything else. It removes the CLI config's "lab" context only if it still points
  at this lab, keeps every other context, and deletes the file only when none is left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from stockade.client import ControllerClient
from stockade.client_config import LEGACY_CONTEXT, ConfigFile, Context, config_path
from stockade.clock import utc_now
from stockade.errors import LabError, StockadeError
from stockade.lab import naming, pki, topology
from stockade.private_files import write_private

DEFAULT_STATE_DIR = Path("/var/lib/stockade/lab")
DEFAULT_HOSTS = 2
HEALTH_TIMEOUT = 20.0
AGENTS_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
MAX_UNIX_PATH = 107  # sun_path is 108 bytes, with the terminating NUL
CLI_CONTEXT = "lab"  # the context `up` writes into the CLI config, and the only one `down` removes


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


@dataclass(frozen=True)
class ProcessStatus:
    name: str
    role: str   # controller | agent (DESIGN: also etcd, dns, prometheus, vm, container)
    pid: int | None
    alive: bool
    log: str


@dataclass(frozen=True)
class LabStatus:
    prefix: str
    state_dir: str
    controller_url: str | None
    processes: list[ProcessStatus]
    hosts: list[dict[str, Any]]       # per hypervisor: name, netns, uplink_up, workloads, agent
    reporting: list[str] | None       # hosts the controller has reports from; None: not reachable

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------ command lines

def controller_argv(settings: LabSettings, cli_fd: int, hosts: list[str], replica: int = 1,
                    store: str = "sqlite") -> list[str]:
    """A controller replica runs in the control-plane netns and listens on the fabric, where
    agents reach it over TLS as on real hosts; the CLI's socket (127.0.0.1:port, in the host's
    own netns, bound by `_bind_cli_socket`) is handed to it as file descriptor `cli_fd`."""
    cp = naming.control_netns(settings.prefix)
    where = ["--db", str(settings.db)] if store == "sqlite" else ["--store", etcd_store_url()]
    return ["nsenter", f"--net=/run/netns/{cp}", sys.executable, "-m", "stockade", "controller", "serve",
            *where, "--listen", f"{naming.controller_addresses(replica)[0]}:{naming.CONTROLLER_PORT}",
            "--listen-fd", str(cli_fd),
            "--tokens", str(settings.tokens), "--known-hosts", ",".join(hosts),
            "--tls-cert", str(settings.tls_cert), "--tls-key", str(settings.tls_key)]


def etcd_store_url() -> str:
    return "etcd://" + ",".join(f"{naming.etcd_address(j)}:{naming.ETCD_CLIENT_PORT}"
                                for j in range(1, naming.ETCD_MEMBERS + 1))


def etcd_argv(settings: LabSettings, member: int) -> list[str]:
    """One member of the lab's 3-member etcd cluster, in the control-plane netns on the fabric
    (plain HTTP: it never leaves the lab's namespaces). Transaction limits raised so that one
    revision of 10,000 objects is one transaction (docs/operations.md)."""
    cp = naming.control_netns(settings.prefix)
    address = naming.etcd_address(member)
    cluster = ",".join(f"etcd-{j}=http://{naming.etcd_address(j)}:{naming.ETCD_PEER_PORT}"
                       for j in range(1, naming.ETCD_MEMBERS + 1))
    return ["nsenter", f"--net=/run/netns/{cp}", "etcd", "--name", f"etcd-{member}",
            "--data-dir", str(settings.etcd_dir(member)),
            "--listen-client-urls", f"http://{address}:{naming.ETCD_CLIENT_PORT}",
            "--advertise-client-urls", f"http://{address}:{naming.ETCD_CLIENT_PORT}",
            "--listen-peer-urls", f"http://{address}:{naming.ETCD_PEER_PORT}",
            "--initial-advertise-peer-urls", f"http://{address}:{naming.ETCD_PEER_PORT}",
            "--initial-cluster", cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", f"stockade-{settings.prefix}",
            "--max-txn-ops", "60000", "--max-request-bytes", "67108864", "--log-level", "warn", "--logger", "zap"]


def _bind_cli_socket(port: int) -> socket.socket:
    """The CLI's listening socket on 127.0.0.1:port here (the host's netns), for the controller."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise LabError(f"cannot listen on 127.0.0.1:{port} for the CLI: {e}; is another lab or program "
                       f"on that port? (`stockade lab down` and `up` picks a new one)") from e
    return sock


AGENT_METRICS_PORT = 9301


def agent_argv(settings: LabSettings, host: str, controllers: int = 1) -> list[str]:
    # nsenter --net only: the agent's own netns is the hypervisor's, while it still
    # shares the mount namespace, so it sees /run/netns and can make workload netns.
    # `python -m stockade.lab.agent`: the agent with the lab's endpoint driver, without the rest
    # of the CLI (~35 MB less resident memory per lab host, docs/performance.md); the options of
    # `python -m stockade.agent run` and the lab's prefix.
    hv = naming.host_netns(settings.prefix, host)
    return ["nsenter", f"--net=/run/netns/{hv}", sys.executable, "-m", "stockade.lab.agent", "run",
            "--host", host, "--controller", naming.controller_url(controllers), "--ca", str(settings.ca_cert),
            "--token-file", str(settings.agent_token(host)), "--lab-prefix", settings.prefix,
            "--state-dir", str(settings.state_dir),
            # Each agent serves /metrics inside its own hypervisor's namespace, as on a real host.
            "--metrics-address", f"{naming.node_addresses(host)[0]}:{AGENT_METRICS_PORT}"]


def _agent_is_current(settings: LabSettings, host: str, controllers: int = 1) -> bool:
    """False for a running agent of an earlier lab, which reached the controller on a unix socket,
    or which was given other controller replicas."""
    args = _proc_args(_read_pid(settings, _agent_name(host)))
    return not args or naming.controller_url(controllers).encode() in args  # not running: nothing to replace


def _agent_name(host: str) -> str:
    return f"agent-{host}"


# ---------------------------------------------------------------- processes

def _read_pid(settings: LabSettings, name: str) -> int | None:
    try:
        return int(settings.pid_file(name).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _is_ours(pid: int, settings: LabSettings, marker: list[str]) -> bool:
    """Alive, not a zombie, and its command line holds our state dir and `marker` in order."""
    cmdline = _proc_args(pid)
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


def controller_name(replica: int) -> str:
    return "controller" if replica == 1 else f"controller-{replica}"


def _role(name: str) -> str:
    return "controller" if name.startswith("controller") else "etcd" if name.startswith("etcd-") else "agent"


def _marker(name: str) -> list[str]:
    role = _role(name)
    if role == "controller":
        return ["controller", "serve"]
    if role == "etcd":
        return ["--name", name]
    return ["stockade.lab.agent", "run", "--host", name.removeprefix("agent-")]


def _process_status(settings: LabSettings, name: str) -> ProcessStatus:
    pid = _read_pid(settings, name)
    alive = pid is not None and _is_ours(pid, settings, _marker(name))
    return ProcessStatus(name, _role(name), pid, alive, str(settings.log_file(name)))


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


def _start(settings: LabSettings, name: str, argv: list[str], pass_fds: tuple[int, ...] = (),
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
    # the last exec, so that a liveness check right after `_start` is right.
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and proc.poll() is None:
        if _runs_program(proc.pid, program) and _is_ours(proc.pid, settings, _marker(name)):
            break
        time.sleep(0.01)
    return proc.pid


def _proc_args(pid: int | None) -> list[bytes] | None:
    """Process `pid`'s command line, argument by argument; None when there is no such process."""
    if pid is None:
        return None
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return None


def _runs_program(pid: int, program: str) -> bool:
    args = _proc_args(pid)
    return args is not None and args[0] == program.encode()


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our child (a test calling `up` in-process)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _stop(settings: LabSettings, names: list[str]) -> list[str]:
    """TERM all of `names` at once, KILL what is left after STOP_TIMEOUT; the names that were running.

    Together rather than one by one, so stopping N slow processes costs one
    timeout, not N.
    """
    running: dict[str, int] = {}
    for name in names:
        status = _process_status(settings, name)
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


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text[-lines:])


# --------------------------------------------------------------------- state

def _read_record(settings: LabSettings) -> LabRecord | None:
    try:
        raw = json.loads(settings.lab_file.read_text())
        return LabRecord(raw["prefix"], int(raw["hosts"]), int(raw["port"]), bool(raw.get("config_written")),
                         str(raw.get("store", "sqlite")), tuple(int(p) for p in raw.get("more_ports", ())))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as e:
        raise LabError(f"{settings.lab_file} is damaged ({e}); run `stockade lab down` and `lab up` again") from e


def _write_record(settings: LabSettings, record: LabRecord) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    write_private(settings.lab_file, json.dumps(asdict(record), indent=2) + "\n")




def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ensure_tokens(settings: LabSettings, hosts: list[str]) -> list[str]:
    """Make the tokens whose plaintext file is missing; the hosts whose agent token is new.

    Only hashes are in tokens.json, so a lost plaintext cannot be recovered: its
    entry is replaced by a new token. The controller re-reads the file by
    itself; an agent whose token changed must be restarted. The tokens are made by the
    controller's own bootstrap command (`controller init-tokens`), run as a process: the
    lab never imports the controller.
    """
    if not settings.tokens.exists() or not settings.admin_token.exists():
        specs = [f"lab-admin:admin={settings.admin_token}"]
        specs += [f"{_agent_name(h)}:agent:{h}={settings.agent_token(h)}" for h in hosts]
        _init_tokens(settings, specs, fresh=True)
        return list(hosts)
    renewed = [h for h in hosts if not settings.agent_token(h).exists()]
    if renewed:
        _init_tokens(settings, [f"{_agent_name(h)}:agent:{h}={settings.agent_token(h)}" for h in renewed])
    return renewed


def init_tokens_argv(settings: LabSettings, specs: list[str], fresh: bool = False) -> list[str]:
    argv = [sys.executable, "-m", "stockade.controller", "init-tokens", "--tokens", str(settings.tokens)]
    for spec in specs:
        argv += ["--token", spec]
    return argv + (["--fresh"] if fresh else [])


def _init_tokens(settings: LabSettings, specs: list[str], fresh: bool = False) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(init_tokens_argv(settings, specs, fresh), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, env=lab_process_env(os.environ), timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise LabError(f"cannot make the lab's tokens: {e}") from e
    if done.returncode != 0:
        raise LabError(f"cannot make the lab's tokens: {done.stderr.strip() or f'exit {done.returncode}'}")


def _write_cli_config(settings: LabSettings, record: LabRecord, token: str) -> None:
    """Make the "lab" context (admin token, the lab CA) current; keep the file's other contexts."""
    try:
        cfg = ConfigFile.read(settings.config_path)
    except StockadeError:
        cfg = ConfigFile()  # unreadable: `up` must still leave a working CLI behind
    if cfg.legacy and cfg.contexts[LEGACY_CONTEXT].controller in (record.url, record.urls, record.plain_url):
        cfg.contexts.clear()  # the flat file an earlier `lab up` wrote for this same lab
    cfg.contexts[CLI_CONTEXT] = Context(record.urls, token, str(settings.ca_cert))
    cfg.current_context = CLI_CONTEXT
    cfg.write(settings.config_path)


def _remove_cli_config(settings: LabSettings, record: LabRecord) -> bool:
    """Remove what `up` wrote: the "lab" context (or an earlier flat file) if it points at this lab."""
    try:
        cfg = ConfigFile.read(settings.config_path)
    except StockadeError:
        return False  # not ours to repair or delete
    ours = [name for name, c in cfg.contexts.items()
            if (name == CLI_CONTEXT or cfg.legacy) and c.controller in (record.url, record.urls, record.plain_url)]
    if not ours:
        return False
    for name in ours:
        del cfg.contexts[name]
    if cfg.current_context in ours:
        cfg.current_context = next(iter(cfg.contexts)) if len(cfg.contexts) == 1 else None
    cfg.write(settings.config_path)  # deletes the file when no context is left
    return True


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


def _controller_is_current(settings: LabSettings) -> bool:
    """A controller started by an earlier lab (plain HTTP, or on 127.0.0.1 with the agents on a
    unix socket) must be restarted on the fabric."""
    args = _proc_args(_read_pid(settings, "controller")) or []
    return b"--tls-cert" in args and b"--listen-fd" in args


# ------------------------------------------------------------------ up/down

def up(settings: LabSettings, hosts: int | None = None, store: str | None = None,
       controllers: int | None = None) -> LabStatus:
    """Bring the lab up (or complete it); returns its status once every agent has reported.

    `store` (sqlite, the default, or etcd: a 3-member cluster in the control-plane netns) is
    fixed when the lab is first made; `controllers` replicas (etcd only) may grow."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, nftables): run it with sudo")
    record = _read_record(settings)
    if record is not None and record.prefix != settings.prefix:
        raise LabError(f"{settings.state_dir} belongs to the lab with prefix {record.prefix!r}, not "
                       f"{settings.prefix!r}: set STOCKADE_LAB_PREFIX={record.prefix} or another STOCKADE_STATE_DIR")
    kind = store or (record.store if record else "sqlite")
    if kind not in ("sqlite", "etcd"):
        raise LabError(f"--store {kind!r}: the lab runs on sqlite or etcd")
    if record is not None and kind != record.store:
        raise LabError(f"this lab runs on {record.store}: `stockade lab down` first to make one on {kind}")
    replicas = max(controllers or 0, record.controllers if record else 0) or 1
    if replicas > 1 and kind != "etcd":
        raise LabError(f"--controllers {replicas}: several controller replicas need a shared store (--store etcd)")
    if not 1 <= replicas <= naming.MAX_CONTROLLERS:
        raise LabError(f"--controllers {replicas}: a lab runs 1 to {naming.MAX_CONTROLLERS} replicas")
    # Additive: asking for fewer hosts than exist keeps the others.
    wanted = max(hosts or 0, record.hosts if record else 0) or DEFAULT_HOSTS
    topology.build(settings.prefix, wanted, controllers=replicas,
                   etcd_members=naming.ETCD_MEMBERS if kind == "etcd" else 0)

    ports = list(record.ports if record else ())
    ports += [_free_port() for _ in range(replicas - len(ports))]
    # --known-hosts is fixed at start: more hypervisors need a controller restart.
    restart_controllers = record is None or record.hosts != wanted
    grown = record is not None and record.controllers != replicas
    record = LabRecord(settings.prefix, wanted, ports[0], True, kind, tuple(ports[1:]))
    _write_record(settings, record)
    renewed = _ensure_tokens(settings, record.host_names)
    # A new CA or certificate (first up, lost or expiring files) is only served after a restart.
    certs = pki.ensure_pki(settings.state_dir)

    names = [controller_name(i) for i in range(1, replicas + 1)]
    if restart_controllers or certs.changed or not _controller_is_current(settings):
        _stop(settings, names)
    # An agent whose token was renewed runs with one that no longer exists; one from an earlier lab
    # (on the unix socket), or that knows fewer replicas, must be given the controllers anew.
    _stop(settings, [_agent_name(h) for h in renewed]
          + [_agent_name(h) for h in record.host_names if grown or not _agent_is_current(settings, h, replicas)])
    if kind == "etcd":
        _ensure_etcd(settings)
    for replica, name in enumerate(names, start=1):
        if _process_status(settings, name).alive:
            continue
        settings.socket.unlink(missing_ok=True)  # an earlier lab's
        cli_socket = _bind_cli_socket(record.ports[replica - 1])
        try:
            _start(settings, name, controller_argv(settings, cli_socket.fileno(), record.host_names, replica, kind),
                   pass_fds=(cli_socket.fileno(),))
        finally:
            cli_socket.close()  # the controller holds it now
    for replica, name in enumerate(names, start=1):
        _wait_healthy(settings, name, f"https://127.0.0.1:{record.ports[replica - 1]}")
    for host in record.host_names:
        name = _agent_name(host)
        if not _process_status(settings, name).alive:
            _start(settings, name, agent_argv(settings, host, replicas))

    admin = settings.admin_token.read_text().strip()
    _write_cli_config(settings, record, admin)
    _wait_agents(settings, record, admin)
    return status(settings)


def _ensure_etcd(settings: LabSettings) -> None:
    """Start the members that do not run and wait until the cluster answers, with quorum."""
    for member in range(1, naming.ETCD_MEMBERS + 1):
        name = f"etcd-{member}"
        if not _process_status(settings, name).alive:
            settings.etcd_dir(member).parent.mkdir(parents=True, exist_ok=True)
            _start(settings, name, etcd_argv(settings, member), program="etcd")
    cp = naming.control_netns(settings.prefix)
    endpoints = ",".join(f"http://{naming.etcd_address(j)}:{naming.ETCD_CLIENT_PORT}"
                         for j in range(1, naming.ETCD_MEMBERS + 1))
    deadline = time.monotonic() + HEALTH_TIMEOUT
    while time.monotonic() < deadline:
        for member in range(1, naming.ETCD_MEMBERS + 1):
            if not _process_status(settings, f"etcd-{member}").alive:
                log = settings.log_file(f"etcd-{member}")
                raise LabError(f"etcd member {member} exited; read {log}:\n{_log_tail(log)}")
        done = subprocess.run(["nsenter", f"--net=/run/netns/{cp}", "etcdctl", "--endpoints", endpoints,
                               "--command-timeout", "2s", "endpoint", "health"],
                              capture_output=True, text=True, env={**lab_process_env(os.environ), "ETCDCTL_API": "3"})
        if done.returncode == 0:
            return
        time.sleep(0.2)
    raise LabError(f"the lab's etcd cluster did not become healthy within {HEALTH_TIMEOUT:.0f} s; read "
                   f"{settings.log_dir}/etcd-*.log")


def _wait_healthy(settings: LabSettings, name: str, url: str) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT
    log = settings.log_file(name)
    if not _ca_readable(settings):
        raise LabError(f"cannot read the lab CA {settings.ca_cert}; run `stockade lab down` and `lab up` again")
    with _client(settings, url) as client:
        while time.monotonic() < deadline:
            if not _process_status(settings, name).alive:
                raise LabError(f"the {name} exited; read {log}:\n{_log_tail(log)}")
            try:
                if client.healthz().get("ok"):
                    return
            except StockadeError:
                pass
            time.sleep(0.1)
    raise LabError(f"the {name} did not answer {url}/healthz within {HEALTH_TIMEOUT:.0f} s; "
                   f"read {log}:\n{_log_tail(log)}")


def _reporting_hosts(settings: LabSettings, url: str, token: str, timeout: float = 2.0) -> list[str] | None:
    """Hosts the controller has a report from; None when it cannot be asked (or not over verified TLS)."""
    if not _ca_readable(settings):
        return None
    try:
        with _client(settings, url, token, timeout) as client:
            agents = client.status().get("agents") or []
    except StockadeError:
        return None
    return sorted(str(a.get("host")) for a in agents if isinstance(a, dict) and a.get("host"))


def _wait_agents(settings: LabSettings, record: LabRecord, token: str) -> None:
    deadline = time.monotonic() + AGENTS_TIMEOUT
    missing = record.host_names
    while time.monotonic() < deadline:
        for host in missing:
            name = _agent_name(host)
            if not _process_status(settings, name).alive:
                log = settings.log_file(name)
                raise LabError(f"the agent of {host} exited; read {log}:\n{_log_tail(log)}")
        seen = _reporting_hosts(settings, record.url, token) or []
        missing = [h for h in record.host_names if h not in seen]
        if not missing:
            return
        time.sleep(0.2)
    logs = ", ".join(str(settings.log_file(_agent_name(h))) for h in missing)
    raise LabError(f"no report from the agent of {', '.join(missing)} within {AGENTS_TIMEOUT:.0f} s; "
                   f"read {logs}")


def down(settings: LabSettings) -> list[str]:
    """Stop everything and remove every trace of the lab; what was removed (for the user)."""
    removed: list[str] = []
    record = _read_record(settings)
    names = [p.stem for p in settings.run_dir.glob("*.pid")] if settings.run_dir.exists() else []
    # Agents first: a stopping agent must not find its controller gone and log noise for nothing;
    # then the controllers, then the store they use.
    for role in ("agent", "controller", "etcd"):
        removed += [f"process {n}" for n in _stop(settings, sorted(n for n in names if _role(n) == role))]
    removed += [f"netns {n}" for n in topology.teardown(settings.prefix, kill_processes=True)]
    if record is not None and record.config_written and _remove_cli_config(settings, record):
        removed.append(f"CLI config context {CLI_CONTEXT!r} in {settings.config_path}")
    if settings.lab_file.exists():
        shutil.rmtree(settings.state_dir, ignore_errors=True)
        removed.append(f"state {settings.state_dir}")
    elif settings.state_dir.exists():
        _remove_known_files(settings)
    return removed


def _remove_known_files(settings: LabSettings) -> None:
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


# -------------------------------------------------------------------- status

def status(settings: LabSettings) -> LabStatus:
    record = _read_record(settings)
    inventory = topology.inspect(settings.prefix)
    host_names = sorted(set(inventory.host_names) | set(record.host_names if record else []),
                        key=naming.host_index)
    processes = [_process_status(settings, controller_name(i)) for i in range(1, record.controllers + 1)] \
        if record else []
    if record and record.store == "etcd":
        processes += [_process_status(settings, f"etcd-{j}") for j in range(1, naming.ETCD_MEMBERS + 1)]
    processes += [_process_status(settings, _agent_name(h)) for h in host_names if record]
    alive = {p.name: p.alive for p in processes}
    by_host = {h.name: h for h in inventory.hosts}
    hosts = []
    for name in host_names:
        inv = by_host.get(name)
        hosts.append({
            "name": name,
            "netns": naming.host_netns(settings.prefix, name) if inv else None,
            "uplink_up": bool(inv and inv.uplink_up),
            "node_addresses": list(inv.node_addresses) if inv else [],
            "workloads": len(inv.workloads) if inv else 0,
            "agent_alive": alive.get(_agent_name(name), False),
        })
    reporting = None
    if record and settings.admin_token.exists() and alive.get("controller"):
        reporting = _reporting_hosts(settings, record.url, settings.admin_token.read_text().strip(), timeout=1.0)
    return LabStatus(settings.prefix, str(settings.state_dir), record.urls if record else None,
                     processes, hosts, reporting)
