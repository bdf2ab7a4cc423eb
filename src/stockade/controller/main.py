"""Run the controller: one uvicorn server, one app, listening on TCP and on a unix socket at once.

The TCP listener and the optional unix socket are bound here, before the server
starts, so a port or path that is taken fails loudly at once, and port 0 works
(tests read the bound port). More listening sockets may be handed over at start
(`--listen-fd N`, socket activation): the lab binds one in the host network
namespace for the CLI while the controller itself runs on the fabric, where
agents reach it over TLS.

With a certificate and key (`--tls-cert`/`--tls-key`) the TCP listener speaks
HTTPS; the unix socket always stays plain HTTP: it never leaves the machine and
the file's mode (0660, owner root) is what guards it, as for any local socket.

Invariants: the unix socket file is created by us and removed when we stop;
an existing socket file is replaced only when nothing answers on it; a
certificate or key that cannot be loaded fails before the server starts.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import signal
import socket
import ssl
import stat
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import uvicorn
from fastapi import FastAPI

from stockade.controller.api import build_app
from stockade.controller.config import ControllerConfig
from stockade.controller.ratelimit import UNIX_PEER, AuthFailureLimits
from stockade.controller.store.location import EtcdLocation, parse_store
from stockade.model.validation import ValidationSettings

DEFAULT_PORT = 7470
UNIX_SOCKET_MODE = 0o660  # owner and group: the lab's agents run as the same (root) user
GRACEFUL_SHUTDOWN_SECONDS = 2  # long-polling watches would otherwise hold shutdown for their timeout


def parse_listen(text: str) -> tuple[str, int]:
    """`127.0.0.1:7470`, `[::1]:7470`, `:7470` (all IPv4 interfaces: 0.0.0.0) → (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:{DEFAULT_PORT}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port_text)


def bind_tcp(host: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET  # a host name: resolved by bind() below
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only when the socket says
    # it is TCP; without it Nagle holds each response's body behind its headers until the client's
    # delayed ACK, ~40 ms per keep-alive request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock


def bind_unix(path: Path) -> socket.socket:
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale: left by a controller that did not stop cleanly
        else:
            raise OSError(errno.EADDRINUSE, f"another process is listening on {path}")
        finally:
            probe.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, UNIX_SOCKET_MODE)
    except OSError:
        sock.close()
        raise
    return sock


def inherited_socket(fd: int) -> socket.socket:
    """A listening socket handed to us as file descriptor `fd` by whoever started us (socket
    activation, as systemd's `ListenStream=` or the lab does): bound where that process could
    bind it (another network namespace, a privileged port), served here like our own. A TCP one
    speaks HTTPS when the controller has a certificate; a unix one stays plain."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as e:
        raise OSError(e.errno, f"--listen-fd {fd}: not a socket we were given: {e.strerror}") from None
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise OSError(errno.EINVAL, f"--listen-fd {fd}: not a listening stream socket")
    sock.set_inheritable(False)
    return sock


def _remove_socket_file(path: Path | None) -> None:
    if path is not None:
        try:
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()
        except FileNotFoundError:
            pass


@dataclass(frozen=True)
class TlsFiles:
    """The PEM certificate (chain) and private key the TCP listener serves HTTPS with."""

    cert: Path
    key: Path

    def check(self) -> None:
        """Load them once now, so a missing file, a wrong key or a bad PEM is an OSError
        (ssl.SSLError is one) before the server starts, not a failure inside its thread."""
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(self.cert, self.key)


def tls_files(cert: Path | str | None, key: Path | str | None) -> TlsFiles | None:
    if (cert is None) != (key is None):
        raise ValueError("--tls-cert and --tls-key go together: give both or neither")
    return TlsFiles(Path(cert), Path(key)) if cert is not None and key is not None else None


_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def _unix_peer_pid(transport: asyncio.BaseTransport) -> int | None:
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    try:
        pid, _uid, _gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    except OSError:
        return None
    return pid


def _naming_unix_peers(protocol: type) -> type:
    """uvicorn's HTTP protocol, giving a unix-socket connection the client ("unix-socket", peer pid)
    instead of none: the audit log then says which process called, and a process that keeps
    failing authentication is refused alone, not every agent sharing the socket (ratelimit)."""

    class UnixPeerProtocol(protocol):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            if self.client is None:
                pid = _unix_peer_pid(transport)
                if pid is not None:
                    self.client = (UNIX_PEER, pid)

    return UnixPeerProtocol


class _Server(uvicorn.Server):
    """uvicorn's server, telling the app that shutdown begins before it waits for requests
    to finish: long-polling watches then answer at once instead of being cancelled.

    uvicorn applies its TLS context to every socket it is given; here only the TCP
    sockets get it, and unix sockets are served plain (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None] | None) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if not getattr(self.config.http_protocol_class, "_names_unix_peers", False):
            self.config.http_protocol_class = _naming_unix_peers(self.config.http_protocol_class)
            self.config.http_protocol_class._names_unix_peers = True  # type: ignore[attr-defined]
        plain = [s for s in sockets or [] if s.family == socket.AF_UNIX]
        if self.config.ssl is None or not plain:
            await super().startup(sockets)
            return
        await super().startup([s for s in sockets or [] if s.family != socket.AF_UNIX])
        if not self.started:
            return
        config, loop = self.config, asyncio.get_running_loop()

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            # The same protocol uvicorn's own startup builds, minus the TLS context.
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state, _loop=_loop)

        for sock in plain:
            self.servers.append(await loop.create_server(create_protocol, sock=sock, ssl=None,
                                                         backlog=config.backlog))

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._on_shutdown is not None:
            self._on_shutdown()
        await super().shutdown(sockets)


def build_server(app: FastAPI, listen_host: str, listen_port: int, unix_socket: Path | None,
                 *, log_level: str = "info", log_config: dict[str, Any] | None | str = uvicorn.config.LOGGING_CONFIG,
                 tls: TlsFiles | None = None, listen_fds: tuple[int, ...] = ()
                 ) -> tuple[uvicorn.Server, list[socket.socket]]:
    """A uvicorn server for `app` (from `build_app`) and its sockets (TCP first, then the unix
    socket if any, then the inherited ones); with `tls`, TCP sockets serve HTTPS."""
    if tls is not None:
        tls.check()
    sockets = [bind_tcp(listen_host, listen_port)]
    try:
        if unix_socket is not None:
            sockets.append(bind_unix(unix_socket))
        sockets.extend(inherited_socket(fd) for fd in listen_fds)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    config = uvicorn.Config(app, log_level=log_level, log_config=log_config, access_log=False,
                            server_header=False, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
                            ssl_certfile=tls.cert if tls else None, ssl_keyfile=tls.key if tls else None)
    service = getattr(app.state, "service", None)
    return _Server(config, service.release_watchers if service is not None else None), sockets


def serve(config: ControllerConfig, listen_host: str = "127.0.0.1", listen_port: int = DEFAULT_PORT,
          unix_socket: Path | str | None = None, tls: TlsFiles | None = None,
          listen_fds: tuple[int, ...] = ()) -> None:
    """Serve the controller until SIGINT or SIGTERM (blocking)."""
    uds = Path(unix_socket) if unix_socket is not None else None
    server, sockets = build_server(build_app(config), listen_host, listen_port, uds, tls=tls, listen_fds=listen_fds)
    previous = _exit_on_stop_signals()
    try:
        server.run(sockets=sockets)
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sock in sockets:
            sock.close()
        _remove_socket_file(uds)


def _raise_exit(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _exit_on_stop_signals() -> dict[int, Any]:
    """After its graceful shutdown uvicorn re-raises the signal it caught, which by default
    kills the process before our cleanup runs. With this handler in place (uvicorn restores
    it before re-raising), the re-raised signal becomes a normal exit: socket file removed, status 0."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, _raise_exit) for sig in (signal.SIGINT, signal.SIGTERM)}


@dataclass
class RunningController:
    """A controller serving from a background thread (tests, embedding); `stop()` ends it."""

    server: uvicorn.Server
    thread: threading.Thread
    sockets: list[socket.socket]
    url: str
    unix_socket: Path | None

    @property
    def unix_url(self) -> str | None:
        return f"unix://{self.unix_socket}" if self.unix_socket is not None else None

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        for sock in self.sockets:
            sock.close()
        _remove_socket_file(self.unix_socket)


def start_in_thread(config: ControllerConfig, listen_host: str = "127.0.0.1", listen_port: int = 0,
                    unix_socket: Path | str | None = None, *, app: FastAPI | None = None,
                    startup_timeout: float = 10.0, tls: TlsFiles | None = None) -> RunningController:
    """Start the controller in a daemon thread and return once it accepts connections
    (HTTPS on TCP with `tls`; `url` then starts with https://)."""
    uds = Path(unix_socket) if unix_socket is not None else None
    app = app if app is not None else build_app(config)
    # No log_config: a server in a thread must not reconfigure the host process's logging.
    server, sockets = build_server(app, listen_host, listen_port, uds, log_level="warning", log_config=None,
                                   tls=tls)
    thread = threading.Thread(target=server.run, kwargs={"sockets": sockets}, name="stockade-controller",
                              daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(1.0)
            for sock in sockets:
                sock.close()
            _remove_socket_file(uds)
            raise RuntimeError("the controller did not start")
        time.sleep(0.01)
    host, port = sockets[0].getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if tls is not None else "http"
    return RunningController(server, thread, sockets, f"{scheme}://{shown}:{port}", uds)


def _names(text: str | list[str]) -> list[str]:
    return [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]


def validation_settings(known_hosts: str | list[str] | None = None, interface_pattern: str | None = None,
                        reserved_interfaces: str | list[str] | None = None) -> ValidationSettings:
    """The deployment's rules from the command line's plain values (comma-separated lists);
    what is not given keeps ValidationSettings' default. ValueError for a bad pattern."""
    extra: dict[str, Any] = {}
    if interface_pattern:
        extra["interface_pattern"] = interface_pattern
    if reserved_interfaces:
        extra["reserved_interfaces"] = frozenset(_names(reserved_interfaces))
    hosts = _names(known_hosts) if known_hosts else []
    return ValidationSettings(known_hosts=frozenset(hosts) if hosts else None, **extra)


def store_config(db: Path | str | None, store: str | None, etcd_ca: Path | str | None = None,
                 etcd_cert: Path | str | None = None, etcd_key: Path | str | None = None) -> dict[str, Any]:
    """The ControllerConfig fields for `--db PATH` or `--store sqlite:PATH | etcd://...` (with
    `--etcd-ca/--etcd-cert/--etcd-key`); ValueError naming the option when they do not fit.
    With SQLite, the audit log's JSON-lines mirror lives beside the database, for a log shipper
    to follow; on etcd the store's audit log is the only one (replicas share it)."""
    if db is not None and store is not None:
        raise ValueError("--db and --store both name the store: give one (--db PATH is --store sqlite:PATH)")
    location = parse_store(store if store is not None else f"sqlite:{db}", etcd_ca, etcd_cert, etcd_key)
    if isinstance(location, EtcdLocation):
        return {"etcd": location}
    return {"db_path": location.path, "audit_log": location.path.parent / "audit.jsonl"}


def flow_config(where: dict[str, Any], flow_log: str | None, max_bytes: int | None, keep: int | None,
                otlp_endpoint: str | None) -> dict[str, Any]:
    """The ControllerConfig fields for `--flow-log PATH|off --flow-log-max-bytes N --flow-log-keep N
    --otlp-endpoint URL`: the flow log defaults to `<db>.flows.jsonl` beside a SQLite store
    (`where`, from `store_config`) and to none on etcd (each replica would need its own)."""
    out: dict[str, Any] = {}
    if flow_log is not None:
        out["flow_log"] = None if flow_log.strip().lower() in ("off", "none", "") else Path(flow_log)
    elif where.get("db_path") is not None:
        db_path = Path(where["db_path"])
        out["flow_log"] = db_path.with_name(db_path.name + ".flows.jsonl")
    if max_bytes is not None:
        out["flow_log_max_bytes"] = max_bytes
    if keep is not None:
        out["flow_log_keep"] = keep
    if otlp_endpoint:
        out["otlp_endpoint"] = otlp_endpoint
    return out


def run_controller(db: Path | str | None, listen: str = f"127.0.0.1:{DEFAULT_PORT}", socket_path: Path | str | None = None,
                   tokens: Path | str | None = None, known_hosts: str | list[str] | None = None,
                   ipv4_pool: str | None = None, ipv6_pool: str | None = None,
                   stale_after: float | None = None, tls_cert: Path | str | None = None,
                   tls_key: Path | str | None = None, interface_pattern: str | None = None,
                   reserved_interfaces: str | None = None, auth_failure_burst: int | None = None,
                   auth_failure_refill: float | None = None, namespace_workloads: int | None = None,
                   namespace_policies: int | None = None, namespace_pool_share: float | None = None, *,
                   metrics_auth: bool = False, listen_fds: tuple[int, ...] = (), store: str | None = None,
                   etcd_ca: Path | str | None = None, etcd_cert: Path | str | None = None,
                   etcd_key: Path | str | None = None, prometheus: str | None = None, flow_log: str | None = None,
                   flow_log_max_bytes: int | None = None, flow_log_keep: int | None = None,
                   otlp_endpoint: str | None = None) -> None:
    """What `stockade controller serve --db PATH --listen HOST:PORT --socket PATH --tokens FILE
    --known-hosts hv1,hv2 [--tls-cert FILE --tls-key FILE] [--interface-pattern RE]
    [--reserved-interfaces lo,fab0] [--auth-failure-burst N --auth-failure-refill S]
    [--namespace-workloads N --namespace-policies N --namespace-pool-share F] [--metrics-auth]` (or
    `--store sqlite:PATH | etcd://HOST:PORT,... [--etcd-ca F --etcd-cert F --etcd-key F]` for `--db`) does: build the
    config from plain values and serve (blocking). A limit of 0 for workloads or policies is 0;
    omitted options keep ControllerConfig's defaults."""
    where = store_config(db, store, etcd_ca, etcd_cert, etcd_key)
    flows = flow_config(where, flow_log, flow_log_max_bytes, flow_log_keep, otlp_endpoint)
    host, port = parse_listen(listen)
    tls = tls_files(tls_cert, tls_key)
    settings = validation_settings(known_hosts, interface_pattern, reserved_interfaces)
    extra: dict[str, Any] = {}
    if ipv4_pool:
        extra["ipv4_pool"] = ipaddress.IPv4Network(ipv4_pool)
    if ipv6_pool:
        extra["ipv6_pool"] = ipaddress.IPv6Network(ipv6_pool)
    if stale_after is not None:
        extra["agent_stale_after"] = stale_after
    if auth_failure_burst is not None or auth_failure_refill is not None:
        default = AuthFailureLimits()
        extra["auth_failures"] = AuthFailureLimits(
            auth_failure_burst if auth_failure_burst is not None else default.burst,
            auth_failure_refill if auth_failure_refill is not None else default.refill_seconds)
    for name, value in (("namespace_workloads", namespace_workloads), ("namespace_policies", namespace_policies),
                        ("namespace_pool_share", namespace_pool_share)):
        if value is not None:
            extra[name] = value
    if prometheus:
        extra["prometheus_url"] = prometheus
    config = ControllerConfig(tokens_file=Path(tokens) if tokens else None, validation=settings,
                              metrics_auth=metrics_auth, **where, **flows, **extra)
    serve(config, host, port, socket_path, tls, listen_fds)
