"""The overview's figures: is the firewall enforcing what was asked, everywhere, and what is it stopping?

One use case for the dashboard's Overview page (GET /api/v1/overview), computed from what the
controller holds: the agents' reports (revision, sync, drift repairs, errors), the flow history
(denied flows per minute, the most denied pairs) and the rollouts it measured (commit → each host
enforcing in sync). Trends over a longer time come from Prometheus when the controller knows one
(`trends`); these figures are what the controller can say on its own, with or without it.

Invariants:
- Scoped like every read: a tenant's figures count only flows that touch its namespaces, the
  other end shown as `visibility` shows it, and agents as `service.status` shows them to it.
- Bounded: at most `FLOW_SAMPLE` flow records are read (the newest), and the page says so when the
  window held more.
- Never blocks on the network; never writes.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from stockade.clock import utc_now
from stockade.controller import rbac, visibility
from stockade.controller.auth import Principal
from stockade.controller.flows import MAX_QUERY_LIMIT, FlowQuery
from stockade.controller.rollouts import RecentRollouts
from stockade.controller.service import ControllerService
from stockade.model.verdicts import is_denied

WINDOW = timedelta(minutes=30)
FLOW_SAMPLE = MAX_QUERY_LIMIT
TOP_PAIRS = 10


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def _end_name(end: dict[str, Any]) -> str:
    return str(end.get("workload") or end.get("namespace") or end.get("ip") or "?")


def overview(service: ControllerService, principal: Principal, rollouts: RecentRollouts,
             now: datetime | None = None) -> dict[str, Any]:
    """The Overview page's figures for `principal` (see the module docstring)."""
    now = now or utc_now()
    status = service.status(principal)
    hosts: list[dict[str, Any]] = []
    for a in status.agents:
        r = a.report
        hosts.append({"host": a.host, "revision": r.revision, "inSync": r.in_sync, "reporting": a.reporting,
                      "lagRevisions": max(0, status.revision - r.revision), "driftRepairs": r.drift_repairs,
                      "lastDriftAt": r.last_drift_at, "error": r.error, "notProgrammed": len(r.not_programmed),
                      "lastSeen": a.last_seen})
    enforcing = [h for h in hosts if h["reporting"] and h["inSync"] and not h["error"]
                 and h["revision"] == status.revision]
    flows = _flow_figures(service, principal, now)
    measured = rollouts.all()  # cluster-wide, like the hosts every role sees
    seconds = [r.seconds for r in measured]
    return {
        "revision": status.revision,
        "enforcedRevision": status.enforced_revision,
        "hosts": hosts,
        "hostsTotal": len(hosts),
        "hostsReporting": sum(1 for h in hosts if h["reporting"]),
        "hostsEnforcingCurrent": len(enforcing),
        "driftRepairs": sum(h["driftRepairs"] for h in hosts),
        "evaluationErrors": sum(1 for h in hosts if h["error"]) + sum(h["notProgrammed"] for h in hosts),
        "rollouts": {
            "count": len(seconds), "p50Seconds": _quantile(seconds, 0.5), "p99Seconds": _quantile(seconds, 0.99),
            "recent": [{"host": r.host, "revision": r.revision, "seconds": round(r.seconds, 3),
                        "at": r.at.isoformat(timespec="seconds")} for r in measured[-20:]],
        },
        **flows,
    }


def _flow_figures(service: ControllerService, principal: Principal, now: datetime) -> dict[str, Any]:
    since = now - WINDOW
    scoped = rbac.is_scoped(principal)
    visible = rbac.visible_namespaces(principal)
    # A tenant's sample is its own namespaces' newest records, not the newest of everyone's: a
    # noisy neighbour must not push its flows out of the window (nor its volume show through).
    if scoped:
        share = max(1, FLOW_SAMPLE // max(1, len(principal.namespaces)))
        pages = [service.flow_log.query(FlowQuery(since=since, namespace=ns, limit=share))
                 for ns in sorted(principal.namespaces)]
        by_seq = {e.seq: e for p in pages for e in p.records}  # a flow between two of its namespaces is in both
        records = [by_seq[seq] for seq in sorted(by_seq)]
        full = any(len(p.records) >= share for p in pages)
    else:
        page = service.flow_log.query(FlowQuery(since=since, limit=FLOW_SAMPLE))
        records, full = list(page.records), len(page.records) >= FLOW_SAMPLE
    per_minute: dict[datetime, list[int]] = {}
    start = _minute(since)
    for i in range(int(WINDOW.total_seconds() // 60) + 1):
        per_minute[start + timedelta(minutes=i)] = [0, 0]  # allowed, denied
    pairs: Counter[tuple[str, str]] = Counter()
    last_rule: dict[tuple[str, str], str | None] = {}
    counted = 0
    for entry in records:  # a tenant's: only flows touching its namespaces (asked per namespace above)
        record = entry.record
        if record.ended:
            continue  # a connection counts once, at its start
        counted += 1
        denied = is_denied(record.verdict)
        bucket = per_minute.get(_minute(entry.time))
        if bucket is not None:
            bucket[1 if denied else 0] += 1
        if denied:
            doc = visibility.flow_record(record.to_dict(), visible) if scoped else record.to_dict()
            pair = (_end_name(doc["src"]), _end_name(doc["dst"]))
            pairs[pair] += 1
            last_rule[pair] = doc.get("rule")
    return {
        "windowMinutes": int(WINDOW.total_seconds() // 60),
        "flowsPerMinute": [{"minute": m.isoformat(timespec="minutes"), "allowed": v[0], "denied": v[1]}
                           for m, v in sorted(per_minute.items())],
        "flowsCounted": counted,
        "flowSampleFull": full,
        "topDenied": [{"src": s, "dst": d, "count": n, "rule": last_rule[(s, d)]}
                      for (s, d), n in pairs.most_common(TOP_PAIRS)],
    }
