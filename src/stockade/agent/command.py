"""The agent's command line, defined once: `run --host H --controller URL --token-file F ...`.

Every way of starting an agent parses its arguments here, with argparse:
`python -m stockade.agent run` (agent.__main__), `stockade agent run` (the `stockade`
program hands those arguments over before it loads typer or the rest of the CLI:
cli.entry, and agent.cli when the typer app is already running) and the lab's
`python -m stockade.lab.agent run ... --lab-prefix P` (which adds its own option).
So neither typer (~7 MB resident) nor the CLI's stack is loaded on a host (docs/performance.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from stockade.agent.main import AgentSettings, run_agent
from stockade.agent.fqdn_learning import DEFAULT_MAX_TTL, DEFAULT_MIN_TTL
from stockade.compile.dns import DnsInterception

PROG = "python -m stockade.agent"


def parser(prog: str = PROG, more: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.ArgumentParser:
    """The `run` command's options; `more` adds a caller's own (the lab's prefix) to them."""
    p = argparse.ArgumentParser(prog=prog, description="Run the per-host agent.")
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="Run the per-host agent.", description="Run the per-host agent.")
    run.add_argument("--host", required=True, help="This host's name, as workloads' spec.host gives it.")
    run.add_argument("--controller", required=True,
                     help="Controller URL: https://HOST:PORT (or http://, unix:///PATH); several replicas as a "
                          "comma-separated list")
    run.add_argument("--ca", type=Path,
                     help="PEM CA bundle the controller's certificate is verified against (default: the system's)")
    run.add_argument("--token-file", required=True, type=Path, help="File holding this agent's API token.")
    run.add_argument("--table", default="stockade", help="The nftables table this agent owns.")
    run.add_argument("--state-dir", type=Path,
                     help="Directory for the agent's own files: the last applied program, put back at boot.")
    run.add_argument("--metrics-address", help="Serve Prometheus /metrics on HOST:PORT.")
    run.add_argument("--flow-log-group", type=int, default=100,
                     help="NFLOG group for flow records; 0 turns flow logging off.")
    run.add_argument("--flow-conntrack", action=argparse.BooleanOptionalAction, default=True,
                     help="End records with packets and bytes from conntrack events "
                          "(turns on net.netfilter.nf_conntrack_acct).")
    run.add_argument("--accept-new-store", action="store_true",
                     help="Take the controller's state even from another store (another identity) or one "
                          "behind the revision this host enforces; without it the agent keeps its program.")
    run.add_argument("--attach", action=argparse.BooleanOptionalAction, default=True,
                     help="Plumb the host side of this host's workloads when their interface appears (up, "
                          "fe80::1, proxy ARP, host routes); --no-attach where the runtime does it.")
    run.add_argument("--carry-connections", action=argparse.BooleanOptionalAction, default=True,
                     help="When a workload moves (live migration), hand its open connections (conntrack "
                          "entries) from the host it left to the host it moved to; --no-carry-connections: "
                          "they meet the new host's policy as new connections.")
    run.add_argument("--dns-resolver", action="append", default=[], metavar="IPV4",
                     help="A trusted resolver (repeatable): workloads' DNS to it goes through this agent's "
                          "proxy, whose answers open fqdn rules. None: no interception, fqdn rules open nothing.")
    run.add_argument("--dns-proxy", default="198.18.255.1:1053", metavar="IPV4:PORT",
                     help="Where the DNS proxy listens: an address of this host workloads' packets reach "
                          "(the lab's workloads' gateway by default).")
    run.add_argument("--dns-fail", choices=("closed", "open"), default="closed",
                     help="If the proxy cannot start: closed keeps workloads' DNS to the trusted resolvers "
                          "sent to it (no answers: lookups fail); open leaves their DNS alone (lookups work, "
                          "fqdn rules open nothing). Either way it is logged and shown by a metric.")
    run.add_argument("--fqdn-min-ttl", type=int, default=DEFAULT_MIN_TTL,
                     help="Seconds a learned address stays at least, whatever the record's TTL.")
    run.add_argument("--fqdn-max-ttl", type=int, default=DEFAULT_MAX_TTL,
                     help="Seconds a learned address stays at most.")
    run.add_argument("--verbose", "-v", action="store_true")
    if more is not None:
        more(run)
    return p


def settings_from_args(args: argparse.Namespace) -> AgentSettings:
    token = args.token_file.read_text().strip()
    return AgentSettings(args.host, args.controller, token, args.table, metrics_address=args.metrics_address,
                         flow_log_group=args.flow_log_group or None, flow_conntrack=args.flow_conntrack,
                         state_dir=args.state_dir, accept_new_store=args.accept_new_store, ca=args.ca,
                         attach=args.attach, carry_connections=args.carry_connections,
                         dns=_dns_interception(args), dns_fail=args.dns_fail,
                         fqdn_ttl=(args.fqdn_min_ttl, args.fqdn_max_ttl))


def _dns_interception(args: argparse.Namespace) -> DnsInterception | None:
    if not args.dns_resolver:
        return None
    address, _, port = args.dns_proxy.rpartition(":")
    try:
        return DnsInterception(tuple(args.dns_resolver), address, int(port))
    except ValueError as e:
        raise SystemExit(f"stockade agent: --dns-resolver/--dns-proxy: {e}") from None


def main(argv: list[str] | None = None, prog: str = PROG) -> None:
    """Parse `argv` (`run ...`; default: sys.argv[1:]) and run the agent until SIGTERM or SIGINT."""
    args = parser(prog).parse_args(argv)
    run_agent(settings_from_args(args), args.verbose)
