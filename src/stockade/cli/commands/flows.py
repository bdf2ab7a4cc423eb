"""`stockade flows [--follow]`: flow records, as a table or as JSON lines.

`--follow` long-polls the controller (FOLLOW_POLL seconds a request) until SIGINT.
"""

from __future__ import annotations

import json
import signal
import sys
from typing import Any, Optional

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
    since: Optional[str] = SinceOpt,
    limit: int = typer.Option(1000, "--limit", help="At most this many records (the newest) before following."),
) -> None:
    """Flow records: who talked to whom, the verdict and the rule that decided it."""
    when = render.parse_since(since, unix_time()) if since else None
    client = call.client()
    filters: dict[str, Any] = {"since": when, "namespace": namespace, "workload": workload, "denied": denied}
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
