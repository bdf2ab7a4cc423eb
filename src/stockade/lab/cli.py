"""`stockade lab up|down|status`: a typer sub-app the main CLI mounts. Parsing and printing only.

Settings come from the environment (see `state.LabSettings.from_env`):
STOCKADE_STATE_DIR, STOCKADE_LAB_PREFIX, STOCKADE_CONFIG. Errors print once
and exit with the error's own exit code.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Callable, Optional, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from stockade.errors import StockadeError

if TYPE_CHECKING:  # the supervisor pulls in the controller's web stack: imported when a lab command runs
    from stockade.lab import supervisor

lab_app = typer.Typer(help="Build, inspect and tear down the one-machine lab.", no_args_is_help=True)
_out = Console()
_err = Console(stderr=True)
T = TypeVar("T")


def _run(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except StockadeError as e:
        _err.print(f"[red]error:[/red] {e.message}", highlight=False, soft_wrap=True, markup=True)
        raise typer.Exit(e.exit_code) from None


def _render(st: supervisor.LabStatus) -> None:
    _out.print(f"lab [bold]{st.prefix}[/bold]  state {st.state_dir}  controller "
               f"{st.controller_url or '-'}  logs {st.state_dir}/logs", highlight=False)
    table = Table("process", "role", "pid", "alive")
    for p in st.processes:
        table.add_row(p.name, p.role, str(p.pid or "-"), "yes" if p.alive else "[red]no[/red]")
    if st.processes:
        _out.print(table)
    hosts = Table("host", "netns", "node addresses", "workloads", "agent", "reporting")
    for h in st.hosts:
        reporting = "-" if st.reporting is None else ("yes" if h["name"] in st.reporting else "[red]no[/red]")
        netns = h["netns"] or "[red]missing[/red]"
        if h["netns"] and not h["uplink_up"]:
            netns += " [red](fab0 down)[/red]"
        addresses = " ".join(a.split("/")[0] for a in h["node_addresses"])
        hosts.add_row(h["name"], netns, addresses, str(h["workloads"]),
                      "alive" if h["agent_alive"] else "[red]stopped[/red]", reporting)
    if st.hosts:
        _out.print(hosts)
    else:
        _out.print("no lab hypervisors: run `stockade lab up`")


@lab_app.command()
def up(hosts: Optional[int] = typer.Option(None, "--hosts", min=1, max=240,
                                          help="Number of hypervisors (default 2; never fewer than exist)."),
       store: Optional[str] = typer.Option(None, "--store", help="sqlite (default) or etcd: a 3-member etcd "
                                           "cluster in the lab; fixed when the lab is made."),
       controllers: Optional[int] = typer.Option(None, "--controllers", min=1, max=3,
                                                 help="Controller replicas (default 1; more need --store etcd)."),
       with_prometheus: bool = typer.Option(False, "--prometheus",
                                            help="Also run Debian's Prometheus on the fabric, scraping the "
                                                 "controller(s) and agents with Stockade's SLI rules.")
       ) -> None:
    """Build the lab and start its controller(s), agents (and etcd); idempotent. Configures the CLI."""
    from stockade.lab import prometheus, state, supervisor

    settings = state.LabSettings.from_env()
    st = _run(lambda: supervisor.up(settings, hosts, store, controllers, with_prometheus))
    _render(st)
    _out.print(f"ready: the CLI now talks to {st.controller_url}", highlight=False)
    if prometheus.wanted(settings):
        _out.print(f"Prometheus: http://{prometheus.address()} inside the control-plane netns "
                   f"(`ip netns exec {st.prefix}-cp curl ...`)", highlight=False)


@lab_app.command()
def down() -> None:
    """Stop the lab's processes and remove its namespaces, state and CLI config."""
    from stockade.lab import state, supervisor

    removed = _run(lambda: supervisor.down(state.LabSettings.from_env()))
    _out.print(f"lab down: removed {len(removed)} item(s)", highlight=False)
    for item in removed:
        _out.print(f"  {item}", highlight=False)


@lab_app.command()
def status(output: str = typer.Option("table", "--output", "-o", help="table or json")) -> None:
    """Show the lab's hypervisors, processes and controller address."""
    if output not in ("table", "json"):
        _err.print(f"[red]error:[/red] --output: {output!r} is not one of table, json")
        raise typer.Exit(2)
    from stockade.lab import state, supervisor

    st = _run(lambda: supervisor.status(state.LabSettings.from_env()))
    if output == "json":
        sys.stdout.write(json.dumps(st.to_dict(), indent=2) + "\n")
    else:
        _render(st)


vm_app = typer.Typer(help="Run a lab workload as a real QEMU virtual machine.", no_args_is_help=True)
lab_app.add_typer(vm_app, name="vm")


def _labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            _err.print(f"[red]error:[/red] --label {pair!r}: expected KEY=VALUE")
            raise typer.Exit(2)
        labels[key] = value
    return labels


@vm_app.command("start")
def vm_start(name: str = typer.Argument(..., help="The Workload's name."),
             namespace: str = typer.Option(..., "--namespace", "-n", help="The Workload's namespace (must exist)."),
             host: str = typer.Option(..., "--host", help="The lab hypervisor the VM runs on."),
             label: list[str] = typer.Option([], "--label", "-l", help="KEY=VALUE; repeat for more."),
             output: str = typer.Option("table", "--output", "-o", help="table or json")) -> None:
    """Register the Workload (addresses from IPAM), then boot the VM on a tap of HOST (KVM when it
    runs guests, else TCG); `stockade probe` reaches it like any workload, `lab vm stop` ends it."""
    from stockade.client_config import load_config
    from stockade.lab import state, vms

    labels = _labels(label)
    with load_config(None, None).client() as client:
        started = _run(lambda: vms.start(state.LabSettings.from_env(), client, namespace, name, host, labels))
    if output == "json":
        sys.stdout.write(json.dumps(started, indent=2) + "\n")
    else:
        _out.print(f"VM {started['workload']} runs on {host} ({started['accel']}, booted in "
                   f"{started['bootSeconds']} s): {', '.join(started['ips'])} on {started['interface']}",
                   highlight=False)


@vm_app.command("stop")
def vm_stop(name: str = typer.Argument(..., help="The Workload's name."),
            namespace: str = typer.Option(..., "--namespace", "-n")) -> None:
    """Stop the VM and delete its Workload."""
    from stockade.client_config import load_config
    from stockade.lab import state, vms

    with load_config(None, None).client() as client:
        was = _run(lambda: vms.stop(state.LabSettings.from_env(), client, namespace, name))
    _out.print(f"VM {namespace}/{name} {'stopped' if was else 'was not running'}; its Workload is deleted",
               highlight=False)


@lab_app.command("migrate")
def migrate(workload: str = typer.Argument(..., help="NAMESPACE/NAME of a lab namespace workload."),
            to: str = typer.Option(..., "--to", help="The lab hypervisor it moves to."),
            state: bool = typer.Option(True, "--state/--no-state",
                                       help="--no-state: drop the connections the new host took over before "
                                            "the switch (they then meet its policy as new ones)."),
            output: str = typer.Option("table", "--output", "-o", help="table or json")) -> None:
    """Move a running workload to another hypervisor, live: its processes and sockets stay, the
    policy and its open connections follow it (docs/operations.md, "Live migration")."""
    from stockade.client_config import load_config
    from stockade.lab import migration
    from stockade.lab.state import LabSettings

    with load_config(None, None).client() as client:
        moved = _run(lambda: migration.migrate(LabSettings.from_env(), client, workload, to, carry_state=state))
    if output == "json":
        sys.stdout.write(json.dumps(moved.to_dict(), indent=2) + "\n")
    else:
        _out.print(f"Workload {moved.workload} moved {moved.source} -> {moved.target} in revision {moved.revision}: "
                   f"{moved.connections} open connections carried; handoff {moved.handoff_seconds * 1000:.0f} ms, "
                   f"switch {moved.switch_seconds * 1000:.0f} ms, plumbed {moved.plumbed_seconds * 1000:.0f} ms "
                   f"(total {moved.total_seconds * 1000:.0f} ms)", highlight=False)


external_app = typer.Typer(help="Endpoints outside every workload, published in the lab's DNS server.",
                           no_args_is_help=True)
lab_app.add_typer(external_app, name="external")


def _lab_up_settings():  # type: ignore[no-untyped-def]
    from stockade.errors import LabError
    from stockade.lab import state

    settings = state.LabSettings.from_env()
    if state.read_record(settings) is None:
        raise LabError("no lab here: run `stockade lab up` first")
    return settings


@external_app.command("add")
def external_add(name: str = typer.Argument(..., help="A short name: its netns is PREFIX-ext-NAME."),
                 dns: list[str] = typer.Option([], "--dns", help="A domain name it is published under; repeat."),
                 ttl: int = typer.Option(300, "--ttl", help="The TTL of its records, in seconds."),
                 cname: list[str] = typer.Option([], "--cname", help="An alias (CNAME) of its first --dns name; "
                                                                     "repeat."),
                 output: str = typer.Option("table", "--output", "-o", help="table or json")) -> None:
    """An endpoint outside every workload (its own netns on the fabric, addresses from 198.19.0.0/16
    and 2001:db8:e::/48), published under the given names in the lab's DNS server."""
    from stockade.lab import outside

    def add() -> dict:  # type: ignore[type-arg]
        settings = _lab_up_settings()
        return outside.add_external(settings, name, dns, ttl, cname).to_dict(settings.prefix)

    made = _run(add)
    if output == "json":
        sys.stdout.write(json.dumps(made, indent=2) + "\n")
    else:
        _out.print(f"external {made['name']}: {', '.join(made['ips'])} in {made['netns']}"
                   + (f", published as {', '.join(made['dns'])} (ttl {made['ttl']} s)" if made["dns"] else ""),
                   highlight=False)


@external_app.command("list")
def external_list(output: str = typer.Option("table", "--output", "-o", help="table or json")) -> None:
    """The lab's external endpoints: name, netns, addresses, DNS names."""
    from stockade.lab import outside

    def listing() -> list:  # type: ignore[type-arg]
        settings = _lab_up_settings()
        return [e.to_dict(settings.prefix) for e in outside.read_externals(settings)]

    found = _run(listing)
    if output == "json":
        sys.stdout.write(json.dumps(found, indent=2) + "\n")
        return
    table = Table("name", "netns", "addresses", "dns", "ttl", "cnames")
    for e in found:
        table.add_row(e["name"], e["netns"], " ".join(e["ips"]), " ".join(e["dns"]), str(e["ttl"]),
                      " ".join(e["cnames"]))
    _out.print(table)


@external_app.command("remove")
def external_remove(name: str = typer.Argument(...)) -> None:
    """Remove an external endpoint and unpublish its names."""
    from stockade.lab import outside

    _run(lambda: outside.remove_external(_lab_up_settings(), name))
    _out.print(f"external {name} removed", highlight=False)
