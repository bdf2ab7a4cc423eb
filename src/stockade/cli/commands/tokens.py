"""`stockade token create | list | revoke`: API tokens (admins only).

A token is printed once, alone on standard output, when it is made; a token given to
`revoke` becomes its public id here, so the secret itself never leaves this machine.
"""

from __future__ import annotations

import sys
from typing import Optional

import typer
from rich.table import Table

from stockade.cli.commanding import OUTPUTS, Invocation, command, dump, out
from stockade.client_config import revocation_ref
from stockade.errors import ValidationError

app = typer.Typer(help="Create, list and revoke API tokens (admins only).", no_args_is_help=True)


@command(app, "create")
def token_create(
    call: Invocation,
    role: str = typer.Option(..., "--role", help="admin, network-admin, tenant, viewer or agent"),
    namespace: list[str] = typer.Option([], "--namespace", "-n", help="A tenant's namespace (repeatable)."),
    ttl: Optional[str] = typer.Option(None, "--ttl", help="Lifetime: 90s, 30m, 12h, 7d, 2w (default: none)."),
    name: Optional[str] = typer.Option(None, "--name", help="Who holds it (shown as author and in audit)."),
    host: Optional[str] = typer.Option(None, "--host", help="An agent token's host."),
) -> None:
    """Make a token and print it, alone, on standard output (it is not shown again)."""
    created = call.client().create_token(role, namespace, ttl, name, host)
    sys.stdout.write(created["token"] + "\n")
    info = created["info"]
    typer.echo(f"token {info['id']} ({info['name']}, role {info['role']}"
               f"{', expires ' + info['expires'] if info.get('expires') else ''})", err=True)


@command(app, "list", outputs=OUTPUTS)
def token_list(call: Invocation) -> None:
    """Every token the controller knows, without secrets."""
    tokens = call.client().tokens()
    if call.output != "table":
        dump(tokens, call.output)
        return
    table = Table("ID", "NAME", "ROLE", "SCOPE", "SOURCE", "EXPIRES", "STATE", box=None)
    for t in tokens:
        scope = ",".join(t.get("namespaces") or []) or (f"host {t['host']}" if t.get("host") else "")
        state = "revoked" if t.get("revoked") else ("expired" if t.get("expired") else "valid")
        table.add_row(t["id"], t["name"], t["role"], scope, t["source"], t.get("expires") or "never", state)
    out.print(table)


@command(app, "revoke")
def token_revoke(
    call: Invocation,
    ref: str = typer.Argument(..., help="Token id (from token list), its unique name, the "
                                        "token itself, or - to read the token from stdin."),
) -> None:
    """Revoke a token: refused from the next request on."""
    if ref == "-" and call.token_file == "-":
        raise ValidationError.single("token revoke", "--token-file",
                                     "standard input cannot hold both the token to revoke and yours")
    target = revocation_ref(sys.stdin.read() if ref == "-" else ref)
    info = call.client().revoke_token(target)
    out.print(f"token {info['id']} ({info['name']}) revoked", highlight=False)
