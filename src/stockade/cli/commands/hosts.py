"""`stockade host join HOST --dir DIR`: what a new host's agent needs, made once (admins only).

A host's credential is an agent token bound to that host (the controller takes reports and
flow records from it for that host only). `join` makes one and writes, into DIR, the token
(`agent.token`, 0600) and the CA the controller's certificate is verified against (`ca.crt`),
then prints the agent's command line. The token is never printed.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import typer

from stockade.cli.commanding import Invocation, command, out
from stockade.client_config import load_config, read_token
from stockade.errors import ValidationError
from stockade.private_files import write_private

app = typer.Typer(help="Join hosts to the controller (admins only).", no_args_is_help=True)


@command(app, "join")
def host_join(
    call: Invocation,
    host: str = typer.Argument(..., help="The host's name, as workloads' spec.host gives it."),
    directory: Path = typer.Option(..., "--dir", help="Where to write agent.token (0600) and ca.crt."),
    controller_url: Optional[str] = typer.Option(
        None, "--controller-url", help="The controller as the host reaches it, several replicas comma-separated "
                                       "(default: the one this command uses)."),
    ttl: Optional[str] = typer.Option(None, "--ttl", help="The credential's lifetime: 12h, 7d, 2w (default: none)."),
) -> None:
    """Make HOST's agent credential and print how to start its agent."""
    if (directory / "agent.token").exists():
        raise ValidationError.single("host join", "--dir", f"{directory / 'agent.token'} exists: revoke that "
                                     "credential (stockade token revoke) and remove the file, or choose another --dir")
    context = load_config(call.controller, read_token(call.token, call.token_file))
    created = context.client().create_token("agent", [], ttl, f"agent-{host}", host)
    directory.mkdir(parents=True, exist_ok=True)
    write_private(directory / "agent.token", created["token"] + "\n")
    ca_flag = ""
    if context.ca:
        shutil.copyfile(context.ca, directory / "ca.crt")
        ca_flag = f" --ca {directory / 'ca.crt'}"
    info = created["info"]
    out.print(f"host {host} joined: credential {info['id']} ({info['name']}) in {directory / 'agent.token'}",
              highlight=False)
    out.print(f"start its agent with:\n  stockade agent run --host {host} --controller "
              f"{controller_url or context.controller}{ca_flag} --token-file {directory / 'agent.token'} "
              f"--state-dir /var/lib/stockade", highlight=False, soft_wrap=True)
