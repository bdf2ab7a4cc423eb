"""`stockade status`: the controller's revision and what each agent enforces."""

from __future__ import annotations

import typer

from stockade.cli import render
from stockade.cli.commanding import OUTPUTS, Invocation, command, dump, out

app = typer.Typer()


@command(app, outputs=OUTPUTS)
def status(call: Invocation) -> None:
    """The controller's revision and, per agent, what it enforces and whether the kernel matches."""
    data = call.client().status()
    if call.output == "table":
        render.status_table(out, data)
    else:
        dump(data, call.output)
