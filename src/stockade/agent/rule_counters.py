"""The kernel's per-rule counters as the agent reports them to the controller (and Prometheus reads them).

Every kernel rule of a policy rule carries the rule's id in its comment and a counter
(compile.host); `dataplane.nft_driver.counters_by_rule` sums them per (rule id, direction).
This module reads both of our tables (the inet one and, when there are bridged workloads, its
bridge-family companion), sums them, keeps the policy rules (and the namespaces' defaults:
`ns/default-deny/egress`, which flow records name too) and leaves out the comments that are
not rules (`NOT_RULES`, tier markers).

Bounded: a report carries at most `MAX_REPORTED_RULES` (rule, direction) entries; above that
the most-hit ones are kept (packets, then bytes, then id: deterministic) and the number left
out is reported, so a host with a huge program never sends a report the controller refuses,
and an operator sees that some rules are missing rather than taking them for unused.

Reading lists both tables (about 2 ms for a lab host, far more at scale): called from the
heartbeat, in a worker thread, never from the reconcile step (agent.loop).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from stockade.compile.program import UNKNOWN_INTERFACE
from stockade.dataplane.nft_driver import counters_by_rule
from stockade.model.reports import RuleCount

MAX_REPORTED_RULES = 4_000
DIRECTIONS = ("egress", "ingress")
# Comments that are not policy rules: kept out of the reports and of the per-rule series.
NOT_RULES = ("tier-passed", "invalid", "neighbour-discovery", "workload-to-host", "antispoof", UNKNOWN_INTERFACE)

Counts = dict[tuple[str, str], tuple[int, int]]  # (rule id, direction) -> (packets, bytes)


class CountedTables(Protocol):
    """What is read: the driver's listing of our inet table (None when absent)."""

    def list_table(self) -> dict[str, Any] | None: ...


def kernel_counts(driver: CountedTables) -> Counts:
    """Packets and bytes per (comment, direction) over our tables, every comment included
    (the fail-closed `unknown-interface` drops of both tables too). Raises what the driver raises."""
    # The bridge table (bridged workloads' ports) counts too; drivers that have none have no lister.
    list_ports: Callable[[], dict[str, Any] | None] | None = getattr(driver, "list_ports_table", None)
    counts = counters_by_rule(driver.list_table() or {})
    ports = list_ports() if list_ports is not None else None
    for key, (p, b) in counters_by_rule(ports or {}).items():
        have = counts.get(key, (0, 0))
        counts[key] = (have[0] + p, have[1] + b)
    return counts


def is_rule(comment: str) -> bool:
    """A policy rule's id (or a namespace default's), not a marker of the program's plumbing."""
    return comment not in NOT_RULES and not comment.startswith("tier ")


def reportable(counts: Counts, cap: int = MAX_REPORTED_RULES) -> tuple[dict[str, dict[str, RuleCount]], int]:
    """The rule entries of `counts` as a report carries them (rule id -> direction -> counts),
    at most `cap` of them, the most-hit first; and how many were left out."""
    entries = [(rule, d, p, b) for (rule, d), (p, b) in counts.items() if is_rule(rule) and d in DIRECTIONS]
    entries.sort(key=lambda e: (-e[2], -e[3], e[0], e[1]))
    kept, omitted = entries[:cap], max(0, len(entries) - cap)
    out: dict[str, dict[str, RuleCount]] = {}
    for rule, direction, p, b in kept:
        out.setdefault(rule, {})[direction] = RuleCount(p, b)
    return out, omitted


class RuleCounterReader:
    """Reads the counters of `driver`'s tables for a status report: `read()` gives what the
    report carries, or raises what the driver raised (the caller keeps the last good reading)."""

    def __init__(self, driver: CountedTables, cap: int = MAX_REPORTED_RULES) -> None:
        self.driver = driver
        self.cap = cap

    def read(self) -> tuple[dict[str, dict[str, RuleCount]], int]:
        return reportable(kernel_counts(self.driver), self.cap)
