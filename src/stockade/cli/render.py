"""Tables for people (rich). JSON and YAML output bypass this module."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from stockade.model.selectors import parse_selector


def _labels(meta: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((meta.get("labels") or {}).items()))


def _selector_text(raw: Any) -> str:
    try:
        return parse_selector(raw).describe() if raw is not None else ""
    except ValueError:
        return str(raw)


def objects_table(console: Console, kind: str, items: list[dict[str, Any]]) -> None:
    if not items:
        console.print(f"No {kind} objects found.", style="dim")
        return
    table = Table(box=None, header_style="bold")
    namespaced = any((i.get("metadata") or {}).get("namespace") for i in items)
    if namespaced:
        table.add_column("NAMESPACE")
    table.add_column("NAME")
    extra: list[str]
    if kind == "Workload":
        extra = ["HOST", "IPS", "NETNS", "LABELS"]
    elif kind == "Namespace":
        extra = ["DEFAULT", "LABELS"]
    elif kind == "Group":
        extra = ["SELECTOR", "CIDRS"]
    elif kind in ("Policy", "GlobalPolicy"):
        extra = ["TIER", "ORDER", "MODE", "APPLIES-TO", "INGRESS", "EGRESS"]
    elif kind == "NetworkPolicy":
        extra = ["POD-SELECTOR", "TYPES"]
    elif kind == "Tier":
        extra = ["ORDER"]
    else:
        extra = []
    for col in extra:
        table.add_column(col)
    for item in items:
        meta, spec, status = item.get("metadata") or {}, item.get("spec") or {}, item.get("status") or {}
        row = [meta.get("namespace", "")] if namespaced else []
        row.append(meta.get("name", ""))
        if kind == "Workload":
            row += [spec.get("host", ""), ",".join(status.get("ips") or spec.get("ips") or []),
                    status.get("netns", ""), _labels(meta)]
        elif kind == "Namespace":
            row += [spec.get("defaultAction", "deny"), _labels(meta)]
        elif kind == "Group":
            row += [_selector_text(spec.get("selector")) if spec.get("selector") is not None else "",
                    ",".join(spec.get("cidrs") or [])]
        elif kind in ("Policy", "GlobalPolicy"):
            target = spec.get("appliesTo") or {}
            applies = f"group {target['group']}" if target.get("group") else _selector_text(target.get("selector"))
            row += [spec.get("tier", "application"), str(spec.get("order", 1000)), spec.get("mode", "enforce"),
                    applies, str(len(spec.get("ingress") or [])), str(len(spec.get("egress") or []))]
        elif kind == "NetworkPolicy":
            types = spec.get("policyTypes") or (["Ingress", "Egress"] if spec.get("egress") else ["Ingress"])
            row += [_selector_text(spec.get("podSelector")) or "<all>", ",".join(types)]
        elif kind == "Tier":
            row += [str(spec.get("order", ""))]
        table.add_row(*row)
    console.print(table)


def status_table(console: Console, data: dict[str, Any]) -> None:
    console.print(f"controller revision [bold]{data.get('revision')}[/bold]")
    table = Table(box=None, header_style="bold")
    for col in ("HOST", "REVISION", "PROGRAM", "APPLIED", "KERNEL", "REPORTING", "ERROR"):
        table.add_column(col)
    for a in data.get("agents", []):
        table.add_row(a.get("host", ""), str(a.get("revision", "")), a.get("programHash") or "",
                      a.get("appliedAt") or "",
                      "[green]in sync[/green]" if a.get("inSync") else "[red]drift[/red]",
                      "yes" if a.get("reporting", True) else "[red]no[/red]", a.get("error") or "")
    console.print(table)


def probe_line(console: Console, result: dict[str, Any]) -> None:
    colour = "green" if result["verdict"] == "allowed" else "red"
    console.print(f"{result['from']} -> {result['to']} {result['protocol']}"
                  f"{'/' + str(result['port']) if result.get('port') else ''} ({result['dst_ip']}): "
                  f"[{colour}]{result['verdict']}[/{colour}] {result.get('detail', '')}", highlight=False)


def trace_table(console: Console, result: Any) -> None:
    colour = "green" if result.verdict == "allow" else "red"
    console.print(f"{result.src_ip} -> {result.dst_ip}: [{colour}]{result.verdict}[/{colour}]"
                  f" (decided by {result.deciding_rule})", highlight=False)
    table = Table(box=None, header_style="bold")
    for col in ("SIDE", "HOST", "RULE", "ACTION"):
        table.add_column(col)
    for name, side in (("egress", result.egress), ("ingress", result.ingress)):
        if side is None:
            continue
        for r in side.rules:
            table.add_row(name, side.host, r["rule"], r["action"])
    console.print(table)


def policy_test_report(console: Console, report: Any) -> None:
    """The misses of `stockade test` (expected, got, the rule that decided), then `N passed, M failed`."""
    if report.misses:
        table = Table(title="Expectations that do not hold", title_justify="left", header_style="bold")
        for col in ("ENTRY", "FROM", "TO", "FLOW", "EXPECTED", "GOT", "DECIDED BY"):
            table.add_column(col)
        for o in report.misses:
            e = o.expectation
            # Text, not markup: names and ids come from the user's files and may hold brackets.
            table.add_row(Text(f"{e.index}" + (f" {e.name}" if e.name else "")), "/".join(e.src), "/".join(e.dst),
                          e.describe_flow(), e.expect, Text(o.got, style="red"),
                          Text(f"{o.deciding_rule or '-'} ({o.deciding_side})"))
        console.print(table)
    colour = "red" if report.failed else "green"
    console.print(f"[{colour}]{report.summary()}[/{colour}]", highlight=False)
