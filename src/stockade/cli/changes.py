"""`stockade history | diff | rollback | audit | token ...`: who changed what, and safe change.

Commands only parse, call the controller and print; `register(app)` mounts them on the
main CLI (called from `cli.main`, after its shared helpers exist).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Optional

import typer
from rich.table import Table

token_app = typer.Typer(help="Create, list and revoke API tokens (admins only).", no_args_is_help=True)


def _ref(o: dict[str, Any]) -> str:
    ns = f"{o['namespace']}/" if o.get("namespace") else ""
    return f"{o['kind']} {ns}{o['name']}"


def _short(value: Any, width: int = 70) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 1] + "…"


def register(app: typer.Typer) -> None:
    from stockade.cli.main import (
        ControllerOpt, OutputOpt, SinceOpt, TokenFileOpt, TokenOpt, _check_output, _client, _dump, _run, out,
    )
    from stockade.cli.config import revocation_ref
    from stockade.cli import render
    from stockade.cli.main import print_revision
    from stockade.cli.documents import read_documents
    from stockade.errors import ValidationError

    @app.command()
    def history(
        limit: int = typer.Option(20, "--limit", help="Newest N revisions."),
        output: str = OutputOpt,
        controller: Optional[str] = ControllerOpt,
        token: Optional[str] = TokenOpt,
        token_file: Optional[str] = TokenFileOpt,
    ) -> None:
        """Revisions, newest first: number, author, message, time and the objects each changed."""
        def go() -> None:
            _check_output(output)
            revisions = _client(controller, token, token_file).revisions(limit)
            if output != "table":
                _dump(revisions, output)
                return
            table = Table("REV", "TIME", "AUTHOR", "MESSAGE", "OBJECTS", box=None)
            for r in revisions:
                objects = [("-" if o["type"] == "DELETE" else "") + _ref(o) for o in r.get("objects", [])]
                shown = ", ".join(objects[:4]) + (f" (+{len(objects) - 4})" if len(objects) > 4 else "")
                table.add_row(str(r["revision"]), r["time"], r["author"], r["message"], shown)
            out.print(table)
        _run(go)

    @app.command()
    def diff(
        filename: str = typer.Option(..., "--filename", "-f", help="YAML/JSON file, directory, or - for stdin."),
        namespace: Optional[str] = typer.Option(None, "--namespace", "-n"),
        output: str = OutputOpt,
        controller: Optional[str] = ControllerOpt,
        token: Optional[str] = TokenOpt,
        token_file: Optional[str] = TokenFileOpt,
    ) -> None:
        """What applying FILE would add, change and remove, object by object, and which recently observed
        flows would change verdict. Stores nothing. Exits 1 when there are differences (like diff(1))."""
        def go() -> bool:
            _check_output(output)
            docs = read_documents(filename)
            if not docs:
                raise ValidationError.single(filename, "", "contains no objects")
            result = _client(controller, token, token_file).diff(docs, namespace)
            changed = any(o["action"] != "unchanged" for o in result["objects"])
            if output != "table":
                _dump(result, output)
                return changed
            for o in result["objects"]:
                colour = {"created": "green", "configured": "yellow", "unchanged": "dim"}.get(o["action"], "")
                out.print(f"[{colour}]{_ref(o)}: {o['action']}[/{colour}]", highlight=False)
                if o["action"] == "created":
                    continue
                for f in o["fields"]:
                    sign = {"add": "+", "remove": "-", "change": "~"}[f["op"]]
                    if f["op"] == "change":
                        text = f"{_short(f['old'], 40)} → {_short(f['new'], 40)}"
                    else:
                        text = _short(f.get("new") if f["op"] == "add" else f.get("old"))
                    out.print(f"    {sign} {f['path']}: {text}", highlight=False, soft_wrap=True)
            if result["flows"]:
                out.print("\nRecently observed flows whose verdict would change:")
                table = Table("FROM", "TO", "PROTO", "PORT", "NOW", "AFTER", "RULE AFTER", box=None)
                for f in result["flows"]:
                    table.add_row(f["src"], f["dst"], f["protocol"], str(f["port"] or ""), f["before"],
                                  f["after"], f.get("afterRule") or "(default)")
                out.print(table)
            else:
                out.print("\nNo recently observed flow would change verdict.", style="dim")
            return changed
        if _run(go):
            raise typer.Exit(1)

    @app.command()
    def rollback(
        revision: int = typer.Argument(..., help="Restore the objects as they were right after this revision."),
        message: str = typer.Option("", "--message", "-m", help="Why: recorded with the new revision."),
        wait: bool = typer.Option(False, "--wait", help="Return once every agent enforces the new revision."),
        timeout: float = typer.Option(30.0, "--timeout"),
        controller: Optional[str] = ControllerOpt,
        token: Optional[str] = TokenOpt,
        token_file: Optional[str] = TokenFileOpt,
    ) -> None:
        """Make a new revision whose objects equal those of REVISION (enforced like any apply)."""
        def go() -> None:
            client = _client(controller, token, token_file)
            result = client.rollback(revision, message or f"rollback to revision {revision}")
            if not result["results"]:
                out.print(f"nothing to do: the objects already equal revision {revision}", style="dim")
                return
            for r in result["results"]:
                out.print(f"{_ref(r)} {r['action']}", highlight=False)
            print_revision(client, int(result["revision"]), wait, timeout)
        _run(go)

    @app.command()
    def audit(
        since: Optional[str] = SinceOpt,
        limit: int = typer.Option(1000, "--limit"),
        output: str = typer.Option("table", "--output", "-o", help="table or json (JSON lines)"),
        controller: Optional[str] = ControllerOpt,
        token: Optional[str] = TokenOpt,
        token_file: Optional[str] = TokenFileOpt,
    ) -> None:
        """The audit log: every write and every refusal — who, when, what, revision or reason."""
        def go() -> None:
            _check_output(output, ("table", "json"))
            when = render.parse_since(since, time.time(), "audit") if since else None
            entries = _client(controller, token, token_file).audit(when, limit)
            if output == "json":
                for e in entries:
                    sys.stdout.write(json.dumps(e, sort_keys=True) + "\n")
                return
            table = Table("TIME", "WHO", "ACTION", "OUTCOME", "REVISION / REASON", box=None)
            for e in entries:
                actor = e.get("actor") or {}
                who = f"{actor.get('name')} ({actor.get('role')})" if actor else f"no valid token ({e.get('client')})"
                what = e.get("action", "")
                if e.get("objects"):
                    what += " " + ", ".join(_ref(o) for o in e["objects"][:3])
                result = f"revision {e['revision']}" if e.get("revision") is not None else (e.get("reason") or "")
                style = "red" if e.get("outcome") != "ok" else ""
                table.add_row(e["time"], who, what, f"[{style}]{e['outcome']}[/{style}]" if style else e["outcome"],
                              _short(result, 90))
            out.print(table)
        _run(go)

    @token_app.command("create")
    def token_create(
        role: str = typer.Option(..., "--role", help="admin, network-admin, tenant, viewer or agent"),
        namespace: list[str] = typer.Option([], "--namespace", "-n", help="A tenant's namespace (repeatable)."),
        ttl: Optional[str] = typer.Option(None, "--ttl", help="Lifetime: 90s, 30m, 12h, 7d, 2w (default: none)."),
        name: Optional[str] = typer.Option(None, "--name", help="Who holds it (shown as author and in audit)."),
        host: Optional[str] = typer.Option(None, "--host", help="An agent token's host."),
        controller: Optional[str] = ControllerOpt,
        token: Optional[str] = TokenOpt,
        token_file: Optional[str] = TokenFileOpt,
    ) -> None:
        """Make a token and print it, alone, on standard output (it is not shown again)."""
        def go() -> None:
            created = _client(controller, token, token_file).create_token(role, namespace, ttl, name, host)
            sys.stdout.write(created["token"] + "\n")
            info = created["info"]
            typer.echo(f"token {info['id']} ({info['name']}, role {info['role']}"
                       f"{', expires ' + info['expires'] if info.get('expires') else ''})", err=True)
        _run(go)

    @token_app.command("list")
    def token_list(output: str = OutputOpt, controller: Optional[str] = ControllerOpt,
                   token: Optional[str] = TokenOpt, token_file: Optional[str] = TokenFileOpt) -> None:
        """Every token the controller knows, without secrets."""
        def go() -> None:
            _check_output(output)
            tokens = _client(controller, token, token_file).tokens()
            if output != "table":
                _dump(tokens, output)
                return
            table = Table("ID", "NAME", "ROLE", "SCOPE", "SOURCE", "EXPIRES", "STATE", box=None)
            for t in tokens:
                scope = ",".join(t.get("namespaces") or []) or (f"host {t['host']}" if t.get("host") else "")
                state = "revoked" if t.get("revoked") else ("expired" if t.get("expired") else "valid")
                table.add_row(t["id"], t["name"], t["role"], scope, t["source"], t.get("expires") or "never", state)
            out.print(table)
        _run(go)

    @token_app.command("revoke")
    def token_revoke(ref: str = typer.Argument(..., help="Token id (from token list), its unique name, the "
                                                         "token itself, or - to read the token from stdin."),
                     controller: Optional[str] = ControllerOpt, token: Optional[str] = TokenOpt,
                     token_file: Optional[str] = TokenFileOpt) -> None:
        """Revoke a token: refused from the next request on."""
        def go() -> None:
            if ref == "-" and token_file == "-":
                raise ValidationError.single("token revoke", "--token-file",
                                             "standard input cannot hold both the token to revoke and yours")
            # A token in hand becomes its public id here: the secret itself never leaves this machine.
            target = revocation_ref(sys.stdin.read() if ref == "-" else ref)
            info = _client(controller, token, token_file).revoke_token(target)
            out.print(f"token {info['id']} ({info['name']}) revoked", highlight=False)
        _run(go)

    app.add_typer(token_app, name="token", help="Create, list and revoke API tokens.")
