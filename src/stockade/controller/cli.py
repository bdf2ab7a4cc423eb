"""`stockade controller ...`: a typer sub-app the main CLI mounts (and `python -m stockade.controller` runs).
Parsing only; `main.run_controller` and `bootstrap.init_tokens` do the work."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

# The web stack (FastAPI, uvicorn) is imported when `serve` runs, not when the CLI starts:
# every `stockade get` loads this module to mount the sub-app (~0.3 s of imports).
DEFAULT_PORT = 7470  # controller.main.DEFAULT_PORT; a test keeps the two equal

controller_app = typer.Typer(help="Run the policy controller.", no_args_is_help=True)


@controller_app.callback()
def _group() -> None:
    """Run the policy controller."""
    # A callback keeps `serve` a subcommand even while it is the only one.


@controller_app.command()
def serve(
    tokens: Annotated[Path, typer.Option(help="JSON file of hashed API tokens")],
    store: Annotated[Optional[str], typer.Option(
        help="where desired state lives: sqlite:PATH (one file, created if absent) or "
             "etcd://HOST:PORT[,HOST:PORT...] (an etcd v3 cluster, shared by controller replicas)")] = None,
    db: Annotated[Optional[Path], typer.Option(help="SQLite database file (created if absent); "
                                                    "the same as --store sqlite:PATH")] = None,
    etcd_ca: Annotated[Optional[Path], typer.Option(
        help="PEM CA certificate of the etcd members: TLS to etcd (with --store etcd://...)")] = None,
    etcd_cert: Annotated[Optional[Path], typer.Option(
        help="PEM client certificate for etcd (its --client-cert-auth); needs --etcd-key")] = None,
    etcd_key: Annotated[Optional[Path], typer.Option(help="PEM private key of --etcd-cert")] = None,
    listen: Annotated[str, typer.Option(help="HOST:PORT for the HTTP API")] = f"127.0.0.1:{DEFAULT_PORT}",
    socket: Annotated[Optional[Path], typer.Option(help="also serve on this unix socket (for agents)")] = None,
    known_hosts: Annotated[Optional[str], typer.Option(
        help="comma-separated host names a Workload may run on (default: any)")] = None,
    ipv4_pool: Annotated[Optional[str], typer.Option(help="IPv4 pool for workloads without addresses")] = None,
    ipv6_pool: Annotated[Optional[str], typer.Option(help="IPv6 pool for workloads without addresses")] = None,
    interface_pattern: Annotated[Optional[str], typer.Option(
        help="regular expression a Workload's spec.interface must fully match (default: "
             "stk*, tap*, vnet*, macvtap*, veth*)")] = None,
    reserved_interfaces: Annotated[Optional[str], typer.Option(
        help="comma-separated interfaces of the hosts no Workload may name (default: lo,fab0)")] = None,
    stale_after: Annotated[Optional[float], typer.Option(
        help="seconds after its last report an agent stops counting as reporting")] = None,
    tls_cert: Annotated[Optional[Path], typer.Option(
        help="PEM certificate (chain): serve HTTPS on HOST:PORT (needs --tls-key)")] = None,
    tls_key: Annotated[Optional[Path], typer.Option(help="PEM private key of --tls-cert")] = None,
    metrics_auth: Annotated[bool, typer.Option(
        "--metrics-auth", help="/metrics needs an admin, network-admin or viewer token (default: open)")] = False,
    auth_failure_burst: Annotated[Optional[int], typer.Option(
        help="failed authentications a client (address, IPv6 /64, unix-socket process) may make in a row "
             "before it gets 429 (default 10)")] = None,
    auth_failure_refill: Annotated[Optional[float], typer.Option(
        help="seconds after which a client regains one failed authentication (default 6)")] = None,
    namespace_workloads: Annotated[Optional[int], typer.Option(
        help="default quota: workloads per namespace (default 2000; a Namespace's spec.quota overrides)")] = None,
    namespace_policies: Annotated[Optional[int], typer.Option(
        help="default quota: Policies and NetworkPolicies per namespace (default 1000)")] = None,
    namespace_pool_share: Annotated[Optional[float], typer.Option(
        help="default quota: share of the IPv4 pool's addresses one namespace may hold (default 0.25)")] = None,
    listen_fd: Annotated[Optional[List[int]], typer.Option(
        help="also serve the listening socket inherited as this file descriptor (socket activation; "
             "HTTPS if TCP and --tls-cert is given); repeat for more")] = None,
    prometheus: Annotated[Optional[str], typer.Option(
        help="a Prometheus that scrapes this controller and the agents (http://HOST:9090): the dashboard's "
             "trends come from it")] = None,
    flow_log: Annotated[Optional[str], typer.Option(
        help="JSON-lines file of every accepted flow record, read back on start (default with SQLite: "
             "DB.flows.jsonl beside the database; 'off': memory only)")] = None,
    flow_log_max_bytes: Annotated[Optional[int], typer.Option(
        help="rotate the flow log at this size (default 64 MiB)")] = None,
    flow_log_keep: Annotated[Optional[int], typer.Option(
        help="rotated flow logs kept as PATH.1 ... PATH.N (default 4)")] = None,
    otlp_endpoint: Annotated[Optional[str], typer.Option(
        help="also send each flow record as an OpenTelemetry log (OTLP HTTP/protobuf) to this URL, "
             "e.g. http://collector:4318/v1/logs")] = None,
) -> None:
    """Serve the REST API on HOST:PORT (HTTPS with --tls-cert/--tls-key) and, with --socket,
    plain HTTP on a unix socket too."""
    from stockade.controller.main import run_controller

    if db is None and store is None:
        raise typer.BadParameter("give the store: --store sqlite:PATH | etcd://HOST:PORT[,HOST:PORT...] "
                                 "(or --db PATH)", param_hint="'--store'")
    try:
        run_controller(db, listen, socket, tokens, known_hosts, ipv4_pool, ipv6_pool, stale_after,
                       tls_cert, tls_key, interface_pattern, reserved_interfaces, auth_failure_burst,
                       auth_failure_refill, namespace_workloads, namespace_policies, namespace_pool_share,
                       metrics_auth=metrics_auth, listen_fds=tuple(listen_fd or ()), store=store,
                       etcd_ca=etcd_ca, etcd_cert=etcd_cert, etcd_key=etcd_key, prometheus=prometheus,
                       flow_log=flow_log,
                       flow_log_max_bytes=flow_log_max_bytes, flow_log_keep=flow_log_keep,
                       otlp_endpoint=otlp_endpoint)
    except (ValueError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None


@controller_app.command("init-tokens")
def init_tokens(
    tokens: Annotated[Path, typer.Option(help="JSON file of hashed API tokens (created if absent)")],
    token: Annotated[List[str], typer.Option(
        help="NAME:ROLE[:HOST]=PATH: make this token (replacing one of that name) and write its "
             "plaintext to PATH, mode 0600; repeat for more")],
    fresh: Annotated[bool, typer.Option(
        "--fresh", help="start the tokens file over with only these tokens")] = False,
) -> None:
    """Write the tokens a controller starts with (its first admin, its agents) before serving:
    hashes to --tokens, each plaintext to its own 0600 file, never to the terminal."""
    from stockade.controller.bootstrap import init_tokens as run, parse_spec

    try:
        run(tokens, [parse_spec(t) for t in token], fresh=fresh)
    except (ValueError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
