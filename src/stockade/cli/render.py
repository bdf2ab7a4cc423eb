"""Tables for people (rich). JSON and YAML output bypass this module."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from stockade.durations import parse_duration
from stockade.errors import ValidationError
from stockade.model.selectors import parse_selector
from stockade.model.verdicts import AUDIT_VERDICTS, VERDICTS, is_denied


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
    elif kind in ("ClusterNetworkPolicy", "AdminNetworkPolicy", "BaselineAdminNetworkPolicy"):
        extra = ["TIER", "PRIORITY", "SUBJECT", "INGRESS", "EGRESS"]   # as kubectl's columns, and the rule counts
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
        elif kind in ("ClusterNetworkPolicy", "AdminNetworkPolicy", "BaselineAdminNetworkPolicy"):
            tier = spec.get("tier") or ("Admin" if kind == "AdminNetworkPolicy" else "Baseline")
            subject = spec.get("subject") or {}
            who = (f"namespaces {_selector_text(subject['namespaces']) or '<all>'}" if "namespaces" in subject
                   else f"pods {_selector_text((subject.get('pods') or {}).get('podSelector')) or '<all>'}")
            row += [tier, str(spec.get("priority", "")), who, str(len(spec.get("ingress") or [])),
                    str(len(spec.get("egress") or []))]
        table.add_row(*row)
    console.print(table)


def status_table(console: Console, data: dict[str, Any]) -> None:
    console.print(f"controller revision [bold]{data.get('revision')}[/bold]")
    table = Table(box=None, header_style="bold")
    for col in ("HOST", "REVISION", "PROGRAM", "APPLIED", "KERNEL", "REPORTING", "LAST SEEN", "ERROR"):
        table.add_column(col)
    for a in data.get("agents", []):
        reporting = a.get("reporting", True)
        table.add_row(a.get("host", ""), str(a.get("revision", "")), a.get("programHash") or "",
                      a.get("appliedAt") or "",
                      # A silent agent's last word about its kernel may be stale: say so, not "in sync".
                      ("[green]in sync[/green]" if a.get("inSync") else "[red]drift[/red]") if reporting
                      else "[yellow]unknown[/yellow]",
                      "yes" if reporting else "[red]no[/red]", a.get("lastSeen") or "",
                      (a.get("error") or "") + (f" drift repaired {a['driftRepairs']}x, last {a['lastDriftAt']}"
                                                if a.get("driftRepairs") else ""))
    console.print(table)
    # Workloads a host leaves out of its program have no policy there: said under the table,
    # one line each, because a reason does not fit a column.
    for a in data.get("agents", []):
        for n in a.get("notProgrammed") or []:
            console.print(f"[red]not programmed[/red] on {a.get('host', '')}: Workload {n.get('object')}: "
                          f"{n.get('reason')}", highlight=False)


def probe_line(console: Console, result: dict[str, Any]) -> None:
    colour = "green" if result["verdict"] == "allowed" else "red"
    console.print(f"{result['from']} -> {result['to']} {result['protocol']}"
                  f"{'/' + str(result['port']) if result.get('port') else ''} ({result['dst_ip']}): "
                  f"[{colour}]{result['verdict']}[/{colour}] {result.get('detail', '')}", highlight=False)


def trace_table(console: Console, result: Any) -> None:
    colour = "green" if result.verdict == "allow" else "red"
    dst = f"{result.dst_fqdn} ({result.dst_ip})" if getattr(result, "dst_fqdn", None) else result.dst_ip
    console.print(f"{result.src_ip} -> {dst}: [{colour}]{result.verdict}[/{colour}]"
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


# ---------------------------------------------------------------- changes

def object_ref(o: dict[str, Any]) -> str:
    """`Kind ns/name` (or `Kind name`) of an object reference in a revision, diff or audit entry."""
    ns = f"{o['namespace']}/" if o.get("namespace") else ""
    return f"{o['kind']} {ns}{o['name']}"


def shorten(value: Any, width: int = 70) -> str:
    """`value` (JSON unless a string) on at most `width` characters, an ellipsis marking a cut."""
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 1] + "…"


# ------------------------------------------------------------------ flows

# Audited (would-*): yellow; refused: red; allowed: green; only logged: blue.
_VERDICT_STYLE = {v: "yellow" if v in AUDIT_VERDICTS else "red" if is_denied(v) else "green" if v == "allow"
                  else "blue" for v in VERDICTS}


def parse_since(text: str, now: float, command: str = "flows") -> str:
    """`--since`: an ISO 8601 time (UTC when it names no zone) or a duration back from `now` (30s, 5m, 1h, 2d:
    stockade.durations); the UTC ISO time to ask the controller for. `command` names the command in the error."""
    try:
        return (datetime.fromtimestamp(now, timezone.utc) - parse_duration(text)).isoformat()
    except ValueError:
        pass
    raw = text.strip()
    try:
        when = datetime.fromisoformat(raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw)
    except ValueError:
        raise ValidationError.single(command, "--since",
                                     f"{text!r} is neither an ISO 8601 time nor a duration like 30s, 5m, 1h, 2d") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).isoformat()


def _end(end: dict[str, Any]) -> str:
    ip = end.get("ip", "")
    addr = f"[{ip}]" if ":" in ip else ip
    port = end.get("port")
    where = f"{addr}:{port}" if port is not None else addr
    return f"{end['workload']} {where}" if end.get("workload") else where


def _proto(r: dict[str, Any]) -> str:
    proto = str(r.get("protocol", ""))
    return f"{proto}/{r['icmpType']}" if r.get("icmpType") is not None else proto


def _time(r: dict[str, Any]) -> str:
    t = str(r.get("time", ""))
    return t.replace("T", " ")[:23]


def _verdict(r: dict[str, Any]) -> Text:
    v = str(r.get("verdict", ""))
    return Text(v, style=_VERDICT_STYLE.get(v, ""))


FLOW_COLUMNS = ("TIME", "HOST", "DIR", "SOURCE", "", "DESTINATION", "PROTO", "VERDICT", "PKTS", "BYTES", "RULE")


def _flow_row(r: dict[str, Any]) -> list[Any]:
    # Text, not markup: names and rule ids may hold brackets.
    return [Text(_time(r)), Text(str(r.get("host", ""))), Text(str(r.get("direction", ""))[:3]),
            Text(_end(r.get("src") or {})), Text("→"), Text(_end(r.get("dst") or {})), Text(_proto(r)),
            _verdict(r), Text("" if r.get("packets") is None else str(r["packets"])),
            Text("" if r.get("bytes") is None else str(r["bytes"])), Text(str(r.get("rule", "")))]


def flows_table(console: Console, records: list[dict[str, Any]]) -> None:
    if not records:
        console.print("No flow records.", style="dim")
        return
    table = Table(box=None, header_style="bold")
    for col in FLOW_COLUMNS:
        table.add_column(col, no_wrap=True)
    for r in records:
        table.add_row(*_flow_row(r))
    console.print(table)


def flow_lines(console: Console, records: list[dict[str, Any]], header: bool = False) -> None:
    """Records as they arrive (`--follow`): one line each, fixed column widths so lines line up."""
    widths = (23, 8, 3, 34, 1, 34, 8, 12, 6, 8, 0)
    def line(cells: list[Any]) -> Text:
        out = Text()
        for cell, w in zip(cells, widths):
            t = cell if isinstance(cell, Text) else Text(str(cell))
            if w:
                t = t.copy()
                t.truncate(w, pad=True)
            out.append_text(t)
            out.append(" ")
        return out
    if header:
        console.print(line([Text(c, style="bold") for c in FLOW_COLUMNS]), soft_wrap=True)
    for r in records:
        console.print(line(_flow_row(r)), soft_wrap=True)


def dropped_line(dropped: dict[str, Any]) -> str:
    """The footer under flow records: what was lost, per host, and where."""
    parts = [f"{h} {c.get('agent', 0) + c.get('evicted', 0)} (agent {c.get('agent', 0)}, "
             f"evicted {c.get('evicted', 0)})" for h, c in sorted(dropped.items())
             if c.get("agent", 0) or c.get("evicted", 0)]
    return "dropped or sampled: " + ("; ".join(parts) if parts else "none")
