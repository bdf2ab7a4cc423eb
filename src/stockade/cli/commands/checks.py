"""`stockade probe | trace | test`: what the policy does to a flow, seen three ways.

`probe` sends real packets between lab workloads, `trace` reads the verdict off the compiled
host programs, `test` checks a file of expected verdicts (offline against proposed objects,
or against the stored revision). The lab, the compiler and the policy tests load only when
their command runs.
"""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console

from stockade.cli import render
from stockade.cli.commanding import OUTPUTS, Invocation, command, dump, out
from stockade.cli.documents import read_documents
from stockade.errors import ValidationError

app = typer.Typer()


@command(app, outputs=OUTPUTS)
def probe(
    call: Invocation,
    src: str = typer.Option(..., "--from", help="Source workload: NAME or NAMESPACE/NAME."),
    dst: str = typer.Option(..., "--to", help="Destination workload: NAME or NAMESPACE/NAME."),
    port: int = typer.Option(0, "--port", help="Destination port (tcp, udp)."),
    protocol: str = typer.Option("tcp", "--protocol", help="tcp, udp or icmp"),
    family: int = typer.Option(4, "--family", help="4 or 6"),
    namespace: Optional[str] = typer.Option(None, "--namespace", "-n"),
    timeout: float = typer.Option(1.0, "--timeout"),
) -> None:
    """Send real packets from one lab workload to another and report the verdict seen."""
    from stockade.cli.probing import run_probe

    result = run_probe(call.client(), src, dst, port, protocol, family, namespace, timeout)
    if call.output == "table":
        render.probe_line(out, result)
    else:
        dump(result, call.output)


@command(app, outputs=OUTPUTS)
def trace(
    call: Invocation,
    src: str = typer.Option(..., "--from", help="Source workload: NAME or NAMESPACE/NAME."),
    dst: Optional[str] = typer.Option(None, "--to", help="Destination workload: NAME or NAMESPACE/NAME."),
    to_fqdn: Optional[str] = typer.Option(None, "--to-fqdn", help="Or a destination outside the workloads, by "
                                          "domain name: which egress rule its addresses meet."),
    to_ip: Optional[str] = typer.Option(None, "--to-ip", help="With --to-fqdn: the address it resolved to "
                                        "(default: one no CIDR rule names but a catch-all)."),
    port: int = typer.Option(0, "--port"),
    protocol: str = typer.Option("tcp", "--protocol", help="tcp, udp, sctp or icmp"),
    family: int = typer.Option(4, "--family", help="4 or 6"),
    namespace: Optional[str] = typer.Option(None, "--namespace", "-n"),
) -> None:
    """The verdict the policy gives a flow, and the rules that decide it, from the compiled host programs."""
    from stockade.cli.probing import resolve_workload
    from stockade.compile.trace import Flow, check_request, trace_flow

    check_request(protocol, family, dst is not None, to_fqdn, field=lambda name: f"--{name}")
    client = call.client()
    keys = []
    for ref in (src, dst or src):
        wl = resolve_workload(client, ref, namespace)
        keys.append((wl["metadata"]["namespace"], wl["metadata"]["name"]))
    result = trace_flow(client.snapshot_state(),
                        Flow(keys[0], keys[1], protocol, port or None, family,  # type: ignore[arg-type]
                             dst_fqdn=to_fqdn, dst_ip=to_ip))
    if call.output == "table":
        render.trace_table(out, result)
    else:
        dump(result.to_dict(), call.output)


@command(app, "test", outputs=OUTPUTS)
def policy_test(
    call: Invocation,
    filename: str = typer.Option(..., "--filename", "-f", help="Expectations: a YAML list of {from, to, port, "
                                 "protocol, expect, family, name}; - for stdin."),
    objects: Optional[list[str]] = typer.Option(None, "--objects", help="Proposed objects (files or directories, "
                                                "as for apply): check them offline instead of the stored revision."),
    more_objects: Optional[list[str]] = typer.Argument(None, metavar="OBJECTS",
                                                       help="More object files for --objects (shell globs)."),
) -> None:
    """Check expected verdicts with trace, against proposed objects (offline) or the stored revision."""
    from stockade.errors import PolicyTestFailed
    from stockade.policytest import evaluate, proposed_state, read_expectations

    # `--objects a.yaml b.yaml` (a shell glob) leaves b.yaml as an argument: it belongs to --objects.
    if more_objects and not objects:
        raise ValidationError.single("test", "--objects", f"{more_objects[0]!r}: object files go after --objects")
    paths = [*(objects or []), *(more_objects or [])]
    expectations = read_expectations(filename)
    if paths:
        docs = [d for path in paths for d in read_documents(path)]
        state = proposed_state(docs)
    else:
        state = call.client().snapshot_state()
    report = evaluate(state, expectations)
    if call.output == "table":
        # CI logs are not terminals: keep each row of the table on one line there.
        render.policy_test_report(Console(width=max(out.width, 160)), report)
    else:
        dump(report.to_dict(), call.output)
    if report.failed:
        raise PolicyTestFailed(report.passed, report.failed)
