"""`stockade apply | delete | get`: write and read the stored objects.

Commands only parse, call the controller and print; `--wait` is `cli.waiting`'s.
"""

from __future__ import annotations

from typing import Optional

import typer

from stockade.cli import render
from stockade.cli.commanding import OUTPUTS, Invocation, command, dump, err, out
from stockade.cli.documents import read_documents
from stockade.cli.waiting import print_revision, wait_for_revision
from stockade.errors import ValidationError
from stockade.model.kinds import resolve_kind

app = typer.Typer()


@command(app)
def apply(
    call: Invocation,
    filename: str = typer.Option(..., "--filename", "-f", help="YAML/JSON file, directory, or - for stdin."),
    wait: bool = typer.Option(False, "--wait", help="Return once every agent enforces the new revision."),
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds --wait waits."),
    message: str = typer.Option("", "--message", "-m", help="Why: recorded with the revision."),
    namespace: Optional[str] = typer.Option(None, "--namespace", "-n", help="Namespace for objects without one."),
) -> None:
    """Create or update the objects in a file, all or nothing, as one revision."""
    docs = read_documents(filename)
    if not docs:
        raise ValidationError.single(filename, "", "contains no objects")
    client = call.client()
    result = client.apply(docs, message=message or f"apply -f {filename}", namespace=namespace)
    for r in result["results"]:
        out.print(f"{r['kind'].lower()}/{(r['namespace'] + '/') if r.get('namespace') else ''}{r['name']} "
                  f"{r['action']}", highlight=False)
        for warning in r.get("warnings") or []:
            err.print(f"[yellow]warning:[/yellow] {r['kind']} {r.get('namespace') or ''}/{r['name']}: {warning}",
                      highlight=False, soft_wrap=True)
    print_revision(client, int(result["revision"]), wait, timeout)


@command(app)
def delete(
    call: Invocation,
    kind: Optional[str] = typer.Argument(None, help="Kind, as kubectl takes it (workload, policies, ...)."),
    name: Optional[str] = typer.Argument(None),
    filename: Optional[str] = typer.Option(None, "--filename", "-f"),
    namespace: Optional[str] = typer.Option(None, "--namespace", "-n"),
    wait: bool = typer.Option(False, "--wait"),
    timeout: float = typer.Option(30.0, "--timeout"),
) -> None:
    """Remove objects named in a file, or one object by kind and name."""
    refs: list[dict[str, str]] = []
    if filename:
        for d in read_documents(filename):
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
    client = call.client()
    result = client.delete(refs, message=f"delete {filename or f'{kind}/{name}'}")
    for r in result["results"]:
        out.print(f"{r['kind'].lower()}/{(r['namespace'] + '/') if r.get('namespace') else ''}{r['name']} deleted",
                  highlight=False)
    if wait:
        wait_for_revision(client, int(result["revision"]), timeout)


@command(app, outputs=OUTPUTS)
def get(
    call: Invocation,
    kind: str = typer.Argument(..., help="Kind, as kubectl takes it (workload, workloads, wl, policy, ...)."),
    name: Optional[str] = typer.Argument(None),
    namespace: Optional[str] = typer.Option(None, "--namespace", "-n"),
    all_namespaces: bool = typer.Option(False, "--all-namespaces", "-A"),
) -> None:
    """List objects, or show one."""
    k = resolve_kind(kind)
    ns = None if (all_namespaces or not k.namespaced) else namespace
    items = call.client().list(k.name, namespace=ns, name=name)["items"]
    if call.output == "table":
        render.objects_table(out, k.name, items)
    elif name and len(items) == 1:
        dump(items[0], call.output)
    else:
        dump({"apiVersion": "v1", "kind": "List", "items": items} if call.output == "yaml" else {"items": items},
             call.output)
