"""`stockade flows [--follow] [--from W] [--to W] [--verdict V]... [--port N] [--protocol P]
[--rule ID] [--last N]`: flow records, as a table or as JSON lines.

The filters are the controller's (GET /api/v1/flows matches them, so a tenant's filter sees only
what it may see); this command only passes them on. `--follow` long-polls the controller
(FOLLOW_POLL seconds a request) until SIGINT.
"""

from __future__ import annotations

import json
import signal
import sys
from typing import Any, List, Optional

import typer
from rich.console import Console

from stockade.cli import render
from stockade.cli.commanding import Invocation, SinceOpt, command, out
from stockade.clock import unix_time

app = typer.Typer()

FOLLOW_POLL = 30.0  # seconds each long-poll of `flows --follow` waits on the controller


def _json_lines(records: list[dict[str, Any]]) -> None:
    for r in records:
        sys.stdout.write(json.dumps(r, separators=(",", ":")) + "\n")


@command(app, outputs=("table", "json"), output_help="table, or json (one record per line)", output_ref="flows")
def flows(
    call: Invocation,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new records as they arrive (Ctrl-C ends)."),
    denied: bool = typer.Option(False, "--denied", help="Only deny, reject, would-deny and would-reject."),
    namespace: Optional[str] = typer.Option(None, "--namespace", "-n", help="Either end is in this namespace."),
    workload: Optional[str] = typer.Option(None, "--workload", "-w", help="Either end is this workload (NS/NAME)."),
    from_: Optional[str] = typer.Option(None, "--from", help="The source end: a workload NAME or NS/NAME, or an IP address."),
    to: Optional[str] = typer.Option(None, "--to", help="The destination end: a workload NAME or NS/NAME, or an IP address."),
    verdict: Optional[List[str]] = typer.Option(None, "--verdict", help=(
        "Only this verdict (allow, deny, reject, would-allow, would-deny, would-reject, log); repeat for more.")),
    port: Optional[int] = typer.Option(None, "--port", min=0, max=65535, help="Either end's port."),
    protocol: Optional[str] = typer.Option(None, "--protocol", help="tcp, udp, icmp, ..."),
    rule: Optional[str] = typer.Option(None, "--rule", help="The deciding rule's id (NS/POLICY/RULE)."),
    since: Optional[str] = SinceOpt,
    last: Optional[int] = typer.Option(None, "--last", min=1, max=10_000, help="The newest N matching records."),
    limit: int = typer.Option(1000, "--limit", min=1, max=10_000,
                              help="At most this many records (the newest) before following."),
) -> None:
    """Flow records: who talked to whom, the verdict and the rule that decided it."""
    when = render.parse_since(since, unix_time()) if since else None
    client = call.client()
    limit = last if last is not None else limit
    filters: dict[str, Any] = {"since": when, "namespace": namespace, "workload": workload, "denied": denied,
                               "filters": {"from": from_, "to": to, "verdict": list(verdict or ()), "port": port,
                                           "protocol": protocol, "rule": rule}}
    page = client.flows(limit=limit, **filters)
    if not follow:
        if call.output == "json":
            _json_lines(page["records"])
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
            if call.output == "json":
                _json_lines(page["records"])
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
