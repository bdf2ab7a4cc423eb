"""The `stockade` command: typer commands that call the controller and print. No business logic.

Every error is a `StockadeError`; it is printed once, in red, and the process
exits with the error's own exit code.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import Any, Callable, Optional, TypeVar

import typer
import yaml
from rich.console import Console

from stockade.cli import render
from stockade.cli.config import load_config, read_token
from stockade.cli.documents import read_documents
from stockade.errors import StockadeError, TimeoutError_, ValidationError
from stockade.model.kinds import resolve_kind

app = typer.Typer(help="Stockade: a distributed, stateful firewall; policy as code, enforced at every workload's NIC.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
# Piped output (CI logs, `| grep`) keeps whole lines instead of wrapping at 80 columns.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True)

T = TypeVar("T")

ControllerOpt = typer.Option(None, "--controller", envvar="STOCKADE_CONTROLLER", help="Controller URL.")
# STOCKADE_TOKEN is read by `load_config`, after the flags: --token-file must win over it.
TokenOpt = typer.Option(None, "--token", help="API token (overrides STOCKADE_TOKEN and the config file). "
                        "Other users can read a command line (/proc/PID/cmdline): prefer --token-file.")
TokenFileOpt = typer.Option(None, "--token-file",
                            help="Read the API token from this file, or from standard input with -.")
OutputOpt = typer.Option("table", "--output", "-o", help="table, json or yaml")
SinceOpt = typer.Option(None, "--since", help="ISO 8601 time, or a duration back from now: 30s, 5m, 1h, 2d.")


def _client(controller: str | None, token: str | None, token_file: str | None = None) -> Any:
    """The one place every command's controller and credential options are resolved."""
    from stockade.client import ControllerClient

    cfg = load_config(controller, read_token(token, token_file))  # the CA comes from STOCKADE_CA or the config's context
    return ControllerClient(cfg.controller, cfg.token, ca=cfg.ca)


def _run(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except StockadeError as e:
        err.print(f"[red]error:[/red] {e.message}", highlight=False, soft_wrap=True)
        if isinstance(e, ValidationError) and len(e.problems) > 1:
            for p in e.problems:
                err.print(f"  - {p}", highlight=False, soft_wrap=True)
        raise typer.Exit(e.exit_code) from None


def _check_output(output: str, choices: tuple[str, ...] = ("table", "json", "yaml"), command: str = "") -> None:
    if output not in choices:
        raise ValidationError.single(command, "--output", f"{output!r} is not one of {', '.join(choices)}")


def _dump(data: Any, output: str) -> None:
    if output == "json":
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))


# ------------------------------------------------------------------ apply

def print_revision(client: Any, revision: int, wait: bool, timeout: float) -> None:
    """Print the revision a write made; with `wait`, block until every agent enforces it."""
    out.print(f"revision {revision}", style="dim")
    if wait:
        started = time.monotonic()
        wait_for_revision(client, revision, timeout)
        out.print(f"revision {revision} enforced by every agent "
                  f"({(time.monotonic() - started) * 1000:.0f} ms)", style="green")


def wait_for_revision(client: Any, revision: int, timeout: float) -> dict[str, Any]:
    """Block until every reporting agent enforces `revision` in sync; TimeoutError_ names the laggards."""
    deadline = time.monotonic() + timeout
    while True:
        status = client.status()
        agents = [a for a in status.get("agents", []) if a.get("reporting", True)]
        behind = [a for a in agents if (a.get("revision") or 0) < revision or not a.get("inSync")]
        if agents and not behind:
            return status
        if time.monotonic() > deadline:
            if not agents:
                raise TimeoutError_(f"revision {revision} is stored, but no agent is reporting")
            names = ", ".join(f"{a['host']} (at revision {a.get('revision')}"
                              f"{', error: ' + a['error'] if a.get('error') else ''})" for a in behind)
            raise TimeoutError_(f"revision {revision} is stored, but after {timeout:.0f}s these agents "
                                f"do not enforce it yet: {names}")
        time.sleep(0.05)


@app.command()
def apply(
    filename: str = typer.Option(..., "--filename", "-f", help="YAML/JSON file, directory, or - for stdin."),
    wait: bool = typer.Option(False, "--wait", help="Return once every agent enforces the new revision."),
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds --wait waits."),
    message: str = typer.Option("", "--message", "-m", help="Why: recorded with the revision."),
    namespace: Optional[str] = typer.Option(None, "--namespace", "-n", help="Namespace for objects without one."),
    controller: Optional[str] = ControllerOpt,
    token: Optional[str] = TokenOpt,
    token_file: Optional[str] = TokenFileOpt,
) -> None:
    """Create or update the objects in a file, all or nothing, as one revision."""
    def go() -> None:
        docs = read_documents(filename)
        if not docs:
            raise ValidationError.single(filename, "", "contains no objects")
        client = _client(controller, token, token_file)
        result = client.apply(docs, message=message or f"apply -f {filename}", namespace=namespace)
        for r in result["results"]:
            out.print(f"{r['kind'].lower()}/{(r['namespace'] + '/') if r.get('namespace') else ''}{r['name']} "
                      f"{r['action']}", highlight=False)
        print_revision(client, int(result["revision"]), wait, timeout)
    _run(go)


# ----------------------------------------------------------------- delete

@app.command()
def delete(
    kind: Optional[str] = typer.Argument(None, help="Kind, as kubectl takes it (workload, policies, ...)."),
    name: Optional[str] = typer.Argument(None),
    filename: Optional[str] = typer.Option(None, "--filename", "-f"),
    namespace: Optional[str] = typer.Option(None, "--namespace", "-n"),
    wait: bool = typer.Option(False, "--wait"),
    timeout: float = typer.Option(30.0, "--timeout"),
    controller: Optional[str] = ControllerOpt,
    token: Optional[str] = TokenOpt,
    token_file: Optional[str] = TokenFileOpt,
) -> None:
    """Remove objects named in a file, or one object by kind and name."""
    def go() -> None:
        refs: list[dict[str, str]] = []
        if filename:
            for i, d in enumerate(read_documents(filename)):
                meta = d.get("metadata") or {}
                k = resolve_kind(str(d.get("kind", "")))
                refs.append({"kind": k.name, "namespace": (meta.get("namespace") or namespace or "") if k.namespaced else "",
                             "name": str(meta.get("name", ""))})
        elif kind and name:
            k = resolve_kind(kind)
            if k.namespaced and not namespace:
                raise ValidationError.single(f"{k.name} {name}", "--namespace", f"a {k.name} needs -n NAMESPACE")
            refs.append({"kind": k.name, "namespace": (namespace or "") if k.namespaced else "", "name": name})
        else:
            raise ValidationError.single("", "arguments", "give -f FILE, or KIND NAME")
        client = _client(controller, token, token_file)
        result = client.delete(refs, message=f"delete {filename or f'{kind}/{name}'}")
        for r in result["results"]:
            out.print(f"{r['kind'].lower()}/{(r['namespace'] + '/') if r.get('namespace') else ''}{r['name']} deleted",
                      highlight=False)
        if wait:
            wait_for_revision(client, int(result["revision"]), timeout)
    _run(go)


# -------------------------------------------------------------------- get

@app.command()
def get(
    kind: str = typer.Argument(..., help="Kind, as kubectl takes it (workload, workloads, wl, policy, ...)."),
    name: Optional[str] = typer.Argument(None),
    namespace: Optional[str] = typer.Option(None, "--namespace", "-n"),
    all_namespaces: bool = typer.Option(False, "--all-namespaces", "-A"),
    output: str = OutputOpt,
    controller: Optional[str] = ControllerOpt,
    token: Optional[str] = TokenOpt,
    token_file: Optional[str] = TokenFileOpt,
) -> None:
    """List objects, or show one."""
    def go() -> None:
        _check_output(output)
        k = resolve_kind(kind)
        ns = None if (all_namespaces or not k.namespaced) else namespace
        result = _client(controller, token, token_file).list(k.name, namespace=ns, name=name)
        items = result["items"]
        if output == "table":
            render.objects_table(out, k.name, items)
        elif name and len(items) == 1:
            _dump(items[0], output)
        else:
            _dump({"apiVersion": "v1", "kind": "List", "items": items} if output == "yaml" else {"items": items}, output)
    _run(go)


# ----------------------------------------------------------------- status

@app.command()
def status(
    output: str = OutputOpt,
    controller: Optional[str] = ControllerOpt,
    token: Optional[str] = TokenOpt,
    token_file: Optional[str] = TokenFileOpt,
) -> None:
    """The controller's revision and, per agent, what it enforces and whether the kernel matches."""
    def go() -> None:
        _check_output(output)
        data = _client(controller, token, token_file).status()
        if output == "table":
            render.status_table(out, data)
        else:
            _dump(data, output)
    _run(go)


# ------------------------------------------------------------------ flows

FOLLOW_POLL = 30.0  # seconds each long-poll of `flows --follow` waits on the controller


@app.command()
def flows(
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new records as they arrive (Ctrl-C ends)."),
    denied: bool = typer.Option(False, "--denied", help="Only deny, reject, would-deny and would-reject."),
    namespace: Optional[str] = typer.Option(None, "--namespace", "-n", help="Either end is in this namespace."),
    workload: Optional[str] = typer.Option(None, "--workload", "-w", help="Either end is this workload (NS/NAME)."),
    since: Optional[str] = SinceOpt,
    limit: int = typer.Option(1000, "--limit", help="At most this many records (the newest) before following."),
    output: str = typer.Option("table", "--output", "-o", help="table, or json (one record per line)"),
    controller: Optional[str] = ControllerOpt,
    token: Optional[str] = TokenOpt,
    token_file: Optional[str] = TokenFileOpt,
) -> None:
    """Flow records: who talked to whom, the verdict and the rule that decided it."""
    def go() -> None:
        _check_output(output, ("table", "json"), "flows")
        when = render.parse_since(since, time.time()) if since else None
        client = _client(controller, token, token_file)
        filters: dict[str, Any] = {"since": when, "namespace": namespace, "workload": workload, "denied": denied}
        page = client.flows(limit=limit, **filters)
        if not follow:
            if output == "json":
                for r in page["records"]:
                    sys.stdout.write(json.dumps(r, separators=(",", ":")) + "\n")
                sys.stdout.write(json.dumps({"dropped": page["dropped"]}, separators=(",", ":")) + "\n")
            else:
                # Logs and pipes are not terminals: keep each record on one line there.
                render.flows_table(Console(width=max(out.width, 200)), page["records"])
                out.print(render.dropped_line(page["dropped"]), style="dim", highlight=False)
            return
        shown_dropped = None
        header = True
        # A shell without job control starts background commands with SIGINT ignored, and Python
        # then never raises KeyboardInterrupt. Following has no other way to end, so SIGINT ends it
        # however we were started.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            while True:
                if output == "json":
                    for r in page["records"]:
                        sys.stdout.write(json.dumps(r, separators=(",", ":")) + "\n")
                    sys.stdout.flush()
                else:
                    render.flow_lines(out, page["records"], header=header)
                    header = False
                    if page["dropped"] != shown_dropped and page["dropped"]:
                        out.print(render.dropped_line(page["dropped"]), style="dim", highlight=False)
                    shown_dropped = page["dropped"]
                page = client.flows(since_seq=page["lastSeq"], limit=limit, follow_timeout=FOLLOW_POLL, **filters)
        except KeyboardInterrupt:
            return
    _run(go)


# ------------------------------------------------------------------ probe

@app.command()
def probe(
    src: str = typer.Option(..., "--from", help="Source workload: NAME or NAMESPACE/NAME."),
    dst: str = typer.Option(..., "--to", help="Destination workload: NAME or NAMESPACE/NAME."),
    port: int = typer.Option(0, "--port", help="Destination port (tcp, udp)."),
    protocol: str = typer.Option("tcp", "--protocol", help="tcp, udp or icmp"),
    family: int = typer.Option(4, "--family", help="4 or 6"),
    namespace: Optional[str] = typer.Option(None, "--namespace", "-n"),
    timeout: float = typer.Option(1.0, "--timeout"),
    output: str = OutputOpt,
    controller: Optional[str] = ControllerOpt,
    token: Optional[str] = TokenOpt,
    token_file: Optional[str] = TokenFileOpt,
) -> None:
    """Send real packets from one lab workload to another and report the verdict seen."""
    def go() -> None:
        from stockade.cli.probing import run_probe

        _check_output(output)
        result = run_probe(_client(controller, token, token_file), src, dst, port, protocol, family, namespace, timeout)
        if output == "table":
            render.probe_line(out, result)
        else:
            _dump(result, output)
    _run(go)


# ------------------------------------------------------------------ trace

@app.command()
def trace(
    src: str = typer.Option(..., "--from", help="Source workload: NAME or NAMESPACE/NAME."),
    dst: str = typer.Option(..., "--to", help="Destination workload: NAME or NAMESPACE/NAME."),
    port: int = typer.Option(0, "--port"),
    protocol: str = typer.Option("tcp", "--protocol", help="tcp, udp, sctp or icmp"),
    family: int = typer.Option(4, "--family", help="4 or 6"),
    namespace: Optional[str] = typer.Option(None, "--namespace", "-n"),
    output: str = OutputOpt,
    controller: Optional[str] = ControllerOpt,
    token: Optional[str] = TokenOpt,
    token_file: Optional[str] = TokenFileOpt,
) -> None:
    """The verdict the policy gives a flow, and the rules that decide it, from the compiled host programs."""
    def go() -> None:
        from stockade.cli.probing import resolve_workload
        from stockade.compile.trace import Flow, trace_flow

        _check_output(output)
        if protocol not in ("tcp", "udp", "sctp", "icmp"):
            raise ValidationError.single("trace", "--protocol", f"{protocol!r} is not one of tcp, udp, sctp, icmp")
        if family not in (4, 6):
            raise ValidationError.single("trace", "--family", "must be 4 or 6")
        client = _client(controller, token, token_file)
        keys = []
        for ref in (src, dst):
            wl = resolve_workload(client, ref, namespace)
            keys.append((wl["metadata"]["namespace"], wl["metadata"]["name"]))
        result = trace_flow(client.snapshot_state(),
                            Flow(keys[0], keys[1], protocol, port or None, family))  # type: ignore[arg-type]
        if output == "table":
            render.trace_table(out, result)
        else:
            _dump(result.to_dict(), output)
    _run(go)


# ------------------------------------------------------------------- test

@app.command("test")
def policy_test(
    filename: str = typer.Option(..., "--filename", "-f", help="Expectations: a YAML list of {from, to, port, "
                                 "protocol, expect, family, name}; - for stdin."),
    objects: Optional[list[str]] = typer.Option(None, "--objects", help="Proposed objects (files or directories, "
                                                "as for apply): check them offline instead of the stored revision."),
    more_objects: Optional[list[str]] = typer.Argument(None, metavar="OBJECTS",
                                                       help="More object files for --objects (shell globs)."),
    output: str = OutputOpt,
    controller: Optional[str] = ControllerOpt,
    token: Optional[str] = TokenOpt,
    token_file: Optional[str] = TokenFileOpt,
) -> None:
    """Check expected verdicts with trace, against proposed objects (offline) or the stored revision."""
    def go() -> None:
        from stockade.errors import PolicyTestFailed
        from stockade.policytest import evaluate, proposed_state, read_expectations

        _check_output(output)
        # `--objects a.yaml b.yaml` (a shell glob) leaves b.yaml as an argument: it belongs to --objects.
        if more_objects and not objects:
            raise ValidationError.single("test", "--objects", f"{more_objects[0]!r}: object files go after --objects")
        paths = [*(objects or []), *(more_objects or [])]
        expectations = read_expectations(filename)
        if paths:
            docs = [d for path in paths for d in read_documents(path)]
            state = proposed_state(docs)
        else:
            state = _client(controller, token, token_file).snapshot_state()
        report = evaluate(state, expectations)
        if output == "table":
            # CI logs are not terminals: keep each row of the table on one line there.
            render.policy_test_report(Console(width=max(out.width, 160)), report)
        else:
            _dump(report.to_dict(), output)
        if report.failed:
            raise PolicyTestFailed(report.passed, report.failed)
    _run(go)


def _mount() -> None:
    from stockade.agent.cli import agent_app
    from stockade.controller.cli import controller_app
    from stockade.lab.cli import lab_app

    app.add_typer(lab_app, name="lab", help="Build, inspect and tear down the one-machine lab.")
    app.add_typer(controller_app, name="controller", help="Run the controller.")
    app.add_typer(agent_app, name="agent", help="Run a host agent.")
    from stockade.cli.config_cmd import config_app
    app.add_typer(config_app, name="config", help="Show and edit the CLI config (contexts).")
    from stockade.cli.changes import register
    register(app)


_mount()
