"""The agent's Prometheus metrics, in a registry of its own.

- `stockade_agent_transactions_total{kind,result}`: kernel transactions (full | delta) by result.
- `stockade_agent_transaction_seconds`: compile + apply time of each transaction.
- `stockade_agent_enforced_revision`, `stockade_agent_in_sync`.
- `stockade_agent_controller_reachable`: 1 while the last list or watch of the controller answered.
- `stockade_build_info{component,version,python}` and `process_*` (build_info.py).
- `stockade_agent_drift_repairs_total`: hand edits of the table that were undone.
- `stockade_agent_controller_errors_total`: lists and watches of the controller that failed
  (unreachable, refused, timed out); it rises once per retry while the controller is away, and
  the last program stays in force meanwhile.
- `stockade_agent_rules_programmed`, `stockade_agent_set_elements`: size of the program.
- `stockade_rule_packets_total{namespace,policy,rule,direction}` / `stockade_rule_bytes_total{...}`:
  the kernel's per-rule counters, summed per rule id (`rule`, as trace and flows name it) and
  direction, read from the kernel at scrape time.
- `stockade_agent_unknown_interface_drops_total`: packets from or to a port in the workload
  naming scheme that has no program here (a VM started before its object exists, or whose
  object was deleted), dropped: Stockade fails closed. Read from the kernel at scrape time, from
  both tables (a bridge port is dropped in `bridge stockade_ports`).
- `stockade_agent_flow_records_total{verdict}`: flow records made from logged packets.
- `stockade_agent_flow_records_dropped_total{reason}`: records lost: `queue` (the agent's
  bounded queue was full), `kernel` (NFLOG could not deliver: socket buffer full),
  `ratelimit` (decided above the kernel's logging rate, so never logged).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stockade.agent.reconciler import Outcome, Reconciler
from stockade.agent.rule_counters import kernel_counts
from stockade.build_info import add_process_metrics
from stockade.compile.host import UNKNOWN_INTERFACE

log = logging.getLogger(__name__)

# Comments that are not policy rules: kept out of the per-rule series.
_NOT_RULES = ("tier-passed", "invalid", "neighbour-discovery", "workload-to-host", UNKNOWN_INTERFACE)


def rule_owner(rule: str) -> tuple[str, str]:
    """(namespace, policy) of a rule id: `ns/policy/rule` (a namespaced policy, or a namespace's
    default `ns/default-deny/egress`), `policy/rule` (cluster-wide: no namespace)."""
    parts = rule.split("/")
    if len(parts) >= 3:
        return parts[0], parts[1]
    return "", parts[0] if len(parts) == 2 else ""


class _RuleCounters(Collector):
    def __init__(self, reconciler: Reconciler) -> None:
        self._reconciler = reconciler

    def collect(self) -> Iterator[Metric]:
        labels = ["namespace", "policy", "rule", "direction"]
        packets = CounterMetricFamily("stockade_rule_packets", "Packets matched per rule", labels=labels)
        octets = CounterMetricFamily("stockade_rule_bytes", "Bytes matched per rule", labels=labels)
        # The bridge table (bridged workloads' ports) counts its drops too: the fail-closed ones
        # of unknown ports go into the same total (agent.rule_counters reads both tables).
        try:
            counts = kernel_counts(self._reconciler.driver)
        except Exception as e:  # noqa: BLE001 - a scrape must not fail because nft did
            log.warning("reading rule counters failed: %r", e)
            counts = {}
        unknown = 0
        for (rule, direction), (p, b) in sorted(counts.items()):
            if rule == UNKNOWN_INTERFACE:
                unknown += p
            if rule in _NOT_RULES or rule.startswith("tier "):
                continue
            values = [*rule_owner(rule), rule, direction]
            packets.add_metric(values, p)
            octets.add_metric(values, b)
        yield packets
        yield octets
        yield CounterMetricFamily("stockade_agent_unknown_interface_drops",
                                  "Packets dropped from or to a workload port that has no program (fail closed)",
                                  value=unknown)


class _DnsLearning:
    """Scrape-time figures of the DNS proxy and the learned names (nothing when there is no proxy)."""

    def __init__(self, metrics: "AgentMetrics") -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        proxy, learned = self._metrics._proxy, self._metrics._learned
        if proxy is None or learned is None:
            return
        names, addresses = learned.counts()
        yield GaugeMetricFamily("stockade_agent_fqdn_names", "Domain names with learned addresses alive", value=names)
        yield GaugeMetricFamily("stockade_agent_fqdn_addresses", "Learned addresses alive, over all names",
                                value=addresses)
        yield CounterMetricFamily("stockade_agent_dns_queries", "Workload DNS queries the proxy handled",
                                  value=proxy.queries)
        yield CounterMetricFamily("stockade_agent_dns_failures", "Queries no trusted resolver answered",
                                  value=proxy.failures)
        yield CounterMetricFamily("stockade_agent_dns_answers_learned", "Answers that opened fqdn sets",
                                  value=learned.answers_learned)


class AgentMetrics:
    def __init__(self, reconciler: Reconciler) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.transactions = Counter("stockade_agent_transactions", "Kernel transactions",
                                    ["kind", "result"], registry=r)
        self.seconds = Histogram("stockade_agent_transaction_seconds", "Compile and apply time",
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=r)
        self.revision = Gauge("stockade_agent_enforced_revision", "Revision enforced", registry=r)
        self.in_sync = Gauge("stockade_agent_in_sync", "1 when the kernel holds the program", registry=r)
        self.drift_repairs = Counter("stockade_agent_drift_repairs", "Hand edits undone", registry=r)
        self.controller_errors = Counter("stockade_agent_controller_errors",
                                         "Lists and watches of the controller that failed", registry=r)
        self.rules = Gauge("stockade_agent_rules_programmed", "Kernel rules in the program", registry=r)
        self.elements = Gauge("stockade_agent_set_elements", "Set elements in the program", registry=r)
        self.flow_records = Counter("stockade_agent_flow_records", "Flow records made from logged packets",
                                    ["verdict"], registry=r)
        self.flow_records_dropped = Counter("stockade_agent_flow_records_dropped", "Flow records lost, by reason",
                                            ["reason"], registry=r)
        for reason in ("queue", "kernel", "ratelimit"):
            self.flow_records_dropped.labels(reason)  # present at 0 from the start
        # Live migration (agent.migration): workloads that left ("out") or arrived ("in"), by how
        # their handoff went (ok; missing: nothing came from the old host in time; error), and the
        # open connections carried with them.
        self.moves = Counter("stockade_agent_moves", "Workloads that moved out of or into this host, by handoff result",
                             ["direction", "result"], registry=r)
        self.connections_carried = Counter("stockade_agent_connections_carried",
                                           "Open connections handed off (out) or taken over (in) in moves",
                                           ["direction"], registry=r)
        for direction in ("out", "in"):
            self.connections_carried.labels(direction)
        # Egress by domain name (issue 18): whether the DNS proxy serves, and what it learned.
        self.dns_proxy_up = Gauge("stockade_agent_dns_proxy_up", "1 while the DNS proxy serves; 0 when it "
                                  "could not start (see the fail mode label)", ["fail_mode"], registry=r)
        r.register(_DnsLearning(self))
        self._proxy: Any = None
        self._learned: Any = None
        r.register(_RuleCounters(reconciler))
        self._reconciler = reconciler
        add_process_metrics(r, "agent")
        # The link to the controller (issue 19): 1 while its last list or watch answered.
        self.controller_reachable = Gauge("stockade_agent_controller_reachable",
                                          "1 while the agent's last list or watch of the controller answered",
                                          registry=r)

    def watch_link(self, reachable: Callable[[], bool]) -> None:
        """Read the link's state at scrape time from the agent's status."""
        self.controller_reachable.set_function(lambda: 1.0 if reachable() else 0.0)

    def watch_dns(self, proxy: Any, learned: Any) -> None:
        """Export the proxy's query counts and the learner's names and addresses (read when scraped)."""
        self._proxy, self._learned = proxy, learned
        self.dns_proxy_up.labels("-").set(1)

    def dns_proxy_down(self, fail_mode: str) -> None:
        self.dns_proxy_up.labels(fail_mode).set(0)

    def observe(self, outcome: Outcome) -> None:
        self.revision.set(outcome.revision)
        self.in_sync.set(1)
        if outcome.kind == "none":
            return
        self.transactions.labels(outcome.kind, "ok").inc()
        self.seconds.observe(outcome.seconds)
        if outcome.drift_repaired:
            self.drift_repairs.inc()
        applied = self._reconciler.applied
        if applied is not None:
            self.rules.set(sum(len(c.rules) for c in applied.chains))
            self.elements.set(sum(len(s.elements) for s in applied.sets))

    def flow_recorded(self, verdict: str) -> None:
        self.flow_records.labels(verdict).inc()

    def flow_dropped(self, reason: str, count: int) -> None:
        self.flow_records_dropped.labels(reason).inc(count)

    def moved(self, direction: str, result: str, connections: int) -> None:
        self.moves.labels(direction, result).inc()
        self.connections_carried.labels(direction).inc(connections)

    def controller_error(self) -> None:
        self.controller_errors.inc()

    def failed(self) -> None:
        self.transactions.labels("unknown", "error").inc()
        self.in_sync.set(0)


def serve(metrics: AgentMetrics, address: str) -> Callable[[], None]:
    """Serve /metrics on HOST:PORT in a background thread; returns a stop function."""
    from prometheus_client import start_http_server

    host, _, port = address.rpartition(":")
    server, thread = start_http_server(int(port), addr=host or "0.0.0.0", registry=metrics.registry)
    return server.shutdown
