"""The lab's orchestration: build the topology, start a controller and one agent per hypervisor, stop all.

    up(settings, hosts)   topology + tokens + CA and certificate + controller + agents + CLI context; idempotent
    down(settings)        stop processes, tear the topology down, remove state and the CLI's lab context
    status(settings)      what runs and what exists, changes nothing

Processes: the controller runs in the control-plane netns (P-cp) and serves HTTPS on the
fabric (naming.CONTROLLER_V4:7470), where every agent reaches it with the lab CA and its own
host token, as an agent on a real host does; the CLI reaches it on 127.0.0.1:port, a socket
`up` binds here and hands over (`controller serve --listen-fd`). Each agent runs in its
hypervisor's netns. With `--store etcd`, a 3-member etcd cluster runs in P-cp too.

The parts, each in its own module: the state directory and lab.json (state), each process's
command line (commands), starting, stopping and inspecting processes (processes), the tokens
(tokens), the CLI config's lab context (cli_context), waiting until what was started answers
(readiness).

Invariants:
- `up` keeps what runs and restarts what died; the port, the tokens and the
  controller's database survive repeated `up`s.
- Processes are only ever signalled by the pid recorded in their pid file (or, in
  `down`, when they run inside one of the lab's own netns).
- `down` deletes the state directory only if it holds `lab.json`; otherwise
  only the lab's own files (state.remove_known_files). It removes the CLI config's "lab"
  context only if it still points at this lab (cli_context).
"""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import asdict, dataclass
from typing import Any

from stockade.errors import LabError
from stockade.lab import (cli_context, commands, moves, naming, outside, pki, processes, prometheus, readiness,
                          resolv, tokens, topology)
from stockade.lab.processes import ProcessStatus, agent_name, controller_name
from stockade.lab.state import LabRecord, LabSettings, read_record, remove_known_files, write_record

DEFAULT_HOSTS = 2


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


# ------------------------------------------------------------------ up

def up(settings: LabSettings, hosts: int | None = None, store: str | None = None,
       controllers: int | None = None, with_prometheus: bool = False) -> LabStatus:
    """Bring the lab up (or complete it); returns its status once every agent has reported.

    `store` (sqlite, the default, or etcd: a 3-member cluster in the control-plane netns) is
    fixed when the lab is first made; `controllers` replicas (etcd only) may grow."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, nftables): run it with sudo")
    record = read_record(settings)
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
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    # The outside world and its DNS server, before the agents that trust it (lab.outside).
    outside.build(settings, [naming.host_name(i) for i in range(1, wanted + 1)])

    ports = list(record.ports if record else ())
    ports += [_free_port() for _ in range(replicas - len(ports))]
    # --known-hosts is fixed at start: more hypervisors need a controller restart.
    restart_controllers = record is None or record.hosts != wanted
    grown = record is not None and record.controllers != replicas
    record = LabRecord(settings.prefix, wanted, ports[0], True, kind, tuple(ports[1:]))
    write_record(settings, record)
    renewed = tokens.ensure_tokens(settings, record.host_names)
    # A new CA or certificate (first up, lost or expiring files) is only served after a restart.
    certs = pki.ensure_pki(settings.state_dir)

    names = [controller_name(i) for i in range(1, replicas + 1)]
    # The controllers read the dashboard's trends from the lab's Prometheus, once it has one.
    with_prometheus = with_prometheus or prometheus.wanted(settings)
    if restart_controllers or certs.changed or not _controller_is_current(settings, with_prometheus):
        processes.stop(settings, names)
    # An agent whose token was renewed runs with one that no longer exists; one from an earlier lab
    # (on the unix socket), or that knows fewer replicas, must be given the controllers anew.
    processes.stop(settings, [agent_name(h) for h in renewed]
                   + [agent_name(h) for h in record.host_names
                      if grown or not _agent_is_current(settings, h, replicas)])
    if kind == "etcd":
        _ensure_etcd(settings)
    for replica, name in enumerate(names, start=1):
        if processes.process_status(settings, name).alive:
            continue
        settings.socket.unlink(missing_ok=True)  # an earlier lab's
        cli_socket = _bind_cli_socket(record.ports[replica - 1])
        try:
            processes.start(settings, name, commands.controller_argv(settings, cli_socket.fileno(),
                                                                     record.host_names, replica, kind,
                                                                     with_prometheus),
                            pass_fds=(cli_socket.fileno(),))
        finally:
            cli_socket.close()  # the controller holds it now
    for replica, name in enumerate(names, start=1):
        readiness.wait_healthy(settings, name, f"https://127.0.0.1:{record.ports[replica - 1]}")
    for host in record.host_names:
        name = agent_name(host)
        if not processes.process_status(settings, name).alive:
            processes.start(settings, name, commands.agent_argv(settings, host, replicas))

    admin = settings.admin_token.read_text().strip()
    cli_context.write_cli_config(settings, record, admin)
    readiness.wait_agents(settings, record, admin)
    if with_prometheus:  # once asked for, it stays with the lab
        prometheus.ensure(settings, record.host_names, replicas)
    return status(settings)


def _ensure_etcd(settings: LabSettings) -> None:
    """Start the members that do not run and wait until the cluster answers, with quorum."""
    for member in range(1, naming.ETCD_MEMBERS + 1):
        name = f"etcd-{member}"
        if not processes.process_status(settings, name).alive:
            settings.etcd_dir(member).parent.mkdir(parents=True, exist_ok=True)
            processes.start(settings, name, commands.etcd_argv(settings, member), program="etcd")
    readiness.wait_etcd_healthy(settings)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def _controller_is_current(settings: LabSettings, with_prometheus: bool = False) -> bool:
    """A controller started by an earlier lab (plain HTTP, or on 127.0.0.1 with the agents on a
    unix socket) must be restarted on the fabric; one that does not know the lab's Prometheus
    yet, too."""
    args = processes.proc_args(processes.read_pid(settings, "controller")) or []
    return b"--tls-cert" in args and b"--listen-fd" in args and (not with_prometheus or b"--prometheus" in args)


def _agent_is_current(settings: LabSettings, host: str, controllers: int = 1) -> bool:
    """False for a running agent of an earlier lab, which reached the controller on a unix socket,
    or which was given other controller replicas."""
    args = processes.proc_args(processes.read_pid(settings, agent_name(host)))
    return not args or naming.controller_url(controllers).encode() in args  # not running: nothing to replace


# ------------------------------------------------------------------ down

def down(settings: LabSettings) -> list[str]:
    """Stop everything and remove every trace of the lab; what was removed (for the user)."""
    removed: list[str] = []
    record = read_record(settings)
    names = [p.stem for p in settings.run_dir.glob("*.pid")] if settings.run_dir.exists() else []
    # VMs and agents first: a stopping agent must not find its controller gone and log noise for
    # nothing; then the controllers, then the store they use.
    for role in ("vm", "prometheus", "agent", "controller", "etcd", "dns"):
        removed += [f"process {n}" for n in processes.stop(settings, sorted(n for n in names
                                                                            if processes.role(n) == role))]
    removed += [f"netns {n}" for n in topology.teardown(settings.prefix, kill_processes=True)]
    removed += [f"resolver config {p}" for p in resolv.remove_all(settings.prefix)]
    if moves.forget_all(settings.prefix):
        removed.append(f"marks of moves in flight in {moves.moving_dir(settings.prefix).parent}")
    if record is not None and record.config_written and cli_context.remove_cli_config(settings, record):
        removed.append(f"CLI config context {cli_context.CLI_CONTEXT!r} in {settings.config_path}")
    if settings.lab_file.exists():
        shutil.rmtree(settings.state_dir, ignore_errors=True)
        removed.append(f"state {settings.state_dir}")
    elif settings.state_dir.exists():
        remove_known_files(settings)
    return removed


# ------------------------------------------------------------------ status

def status(settings: LabSettings) -> LabStatus:
    record = read_record(settings)
    inventory = topology.inspect(settings.prefix)
    host_names = sorted(set(inventory.host_names) | set(record.host_names if record else []),
                        key=naming.host_index)
    running = [processes.process_status(settings, controller_name(i)) for i in range(1, record.controllers + 1)] \
        if record else []
    if record and record.store == "etcd":
        running += [processes.process_status(settings, f"etcd-{j}") for j in range(1, naming.ETCD_MEMBERS + 1)]
    running += [processes.process_status(settings, agent_name(h)) for h in host_names if record]
    running += [processes.process_status(settings, vm) for vm in processes.running_vms(settings)]
    if record:
        running.append(processes.process_status(settings, outside.DNS_PROCESS))
    if record and prometheus.wanted(settings):
        running.append(processes.process_status(settings, prometheus.PROCESS))
    alive = {p.name: p.alive for p in running}
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
            "agent_alive": alive.get(agent_name(name), False),
        })
    reporting = None
    if record and settings.admin_token.exists() and alive.get("controller"):
        reporting = readiness.reporting_hosts(settings, record.url, settings.admin_token.read_text().strip(),
                                              timeout=1.0)
    return LabStatus(settings.prefix, str(settings.state_dir), record.urls if record else None,
                     running, hosts, reporting)
