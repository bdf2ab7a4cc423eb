"""`stockade history | diff | rollback | audit | backup`: who changed what, safe change, and a copy of it all.

Commands only parse, call the controller and print.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from stockade.cli import render
from stockade.cli.commanding import OUTPUTS, Invocation, SinceOpt, command, dump, out
from stockade.cli.documents import read_documents
from stockade.cli.render import object_ref, shorten
from stockade.cli.waiting import print_revision
from stockade.clock import unix_time
from stockade.errors import ValidationError

app = typer.Typer()


@command(app, outputs=OUTPUTS)
def history(
    call: Invocation,
    limit: int = typer.Option(20, "--limit", help="Newest N revisions."),
) -> None:
    """Revisions, newest first: number, author, message, time and the objects each changed."""
    revisions = call.client().revisions(limit)
    if call.output != "table":
        dump(revisions, call.output)
        return
    table = Table("REV", "TIME", "AUTHOR", "MESSAGE", "OBJECTS", box=None)
    for r in revisions:
        objects = [("-" if o["type"] == "DELETE" else "") + object_ref(o) for o in r.get("objects", [])]
        shown = ", ".join(objects[:4]) + (f" (+{len(objects) - 4})" if len(objects) > 4 else "")
        table.add_row(str(r["revision"]), r["time"], r["author"], r["message"], shown)
    out.print(table)


@command(app, outputs=OUTPUTS)
def diff(
    call: Invocation,
    filename: str = typer.Option(..., "--filename", "-f", help="YAML/JSON file, directory, or - for stdin."),
    namespace: Optional[str] = typer.Option(None, "--namespace", "-n"),
) -> None:
    """What applying FILE would add, change and remove, object by object, and which recently observed
    flows would change verdict. Stores nothing. Exits 1 when there are differences (like diff(1))."""
    docs = read_documents(filename)
    if not docs:
        raise ValidationError.single(filename, "", "contains no objects")
    result = call.client().diff(docs, namespace)
    changed = any(o["action"] != "unchanged" for o in result["objects"])
    if call.output != "table":
        dump(result, call.output)
    else:
        _print_diff(result)
    if changed:
        raise typer.Exit(1)


def _print_diff(result: dict[str, Any]) -> None:
    for o in result["objects"]:
        colour = {"created": "green", "configured": "yellow", "unchanged": "dim"}.get(o["action"], "")
        out.print(f"[{colour}]{object_ref(o)}: {o['action']}[/{colour}]", highlight=False)
        if o["action"] == "created":
            continue
        for f in o["fields"]:
            sign = {"add": "+", "remove": "-", "change": "~"}[f["op"]]
            if f["op"] == "change":
                text = f"{shorten(f['old'], 40)} → {shorten(f['new'], 40)}"
            else:
                text = shorten(f.get("new") if f["op"] == "add" else f.get("old"))
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


@command(app)
def rollback(
    call: Invocation,
    revision: int = typer.Argument(..., help="Restore the objects as they were right after this revision."),
    message: str = typer.Option("", "--message", "-m", help="Why: recorded with the new revision."),
    wait: bool = typer.Option(False, "--wait", help="Return once every agent enforces the new revision."),
    timeout: float = typer.Option(30.0, "--timeout"),
) -> None:
    """Make a new revision whose objects equal those of REVISION (enforced like any apply)."""
    client = call.client()
    result = client.rollback(revision, message or f"rollback to revision {revision}")
    if not result["results"]:
        out.print(f"nothing to do: the objects already equal revision {revision}", style="dim")
        return
    for r in result["results"]:
        out.print(f"{object_ref(r)} {r['action']}", highlight=False)
    print_revision(client, int(result["revision"]), wait, timeout)


@command(app, outputs=("table", "json"), output_help="table or json (JSON lines)")
def audit(
    call: Invocation,
    since: Optional[str] = SinceOpt,
    limit: int = typer.Option(1000, "--limit"),
) -> None:
    """The audit log: every write and every refusal — who, when, what, revision or reason."""
    when = render.parse_since(since, unix_time(), "audit") if since else None
    entries = call.client().audit(when, limit)
    if call.output == "json":
        for e in entries:
            sys.stdout.write(json.dumps(e, sort_keys=True) + "\n")
        return
    table = Table("TIME", "WHO", "ACTION", "OUTCOME", "REVISION / REASON", box=None)
    for e in entries:
        actor = e.get("actor") or {}
        who = f"{actor.get('name')} ({actor.get('role')})" if actor else f"no valid token ({e.get('client')})"
        what = e.get("action", "")
        if e.get("objects"):
            what += " " + ", ".join(object_ref(o) for o in e["objects"][:3])
        result = f"revision {e['revision']}" if e.get("revision") is not None else (e.get("reason") or "")
        style = "red" if e.get("outcome") != "ok" else ""
        table.add_row(e["time"], who, what, f"[{style}]{e['outcome']}[/{style}]" if style else e["outcome"],
                      shorten(result, 90))
    out.print(table)


@command(app)
def backup(
    call: Invocation,
    file: Path = typer.Argument(..., help="Where to write the backup (mode 0600; replaced whole, never torn)."),
) -> None:
    """Take a backup through the controller (admins only): every revision with its changes, API tokens
    (hashes only), revocations and the audit log, read at one revision while the controller goes on
    serving. `stockade restore FILE --store ...` loads it; `stockade store backup` reads a store directly."""
    from stockade.controller.store.archive import dump_from_document, write_backup

    dump = dump_from_document(call.client().backup())  # checked (checksum, numbering) before it is kept
    write_backup(file, dump)
    out.print(f"backup of store {dump.cluster_id} written to {file}: {dump.summary()}", highlight=False,
              soft_wrap=True)
