"""The rules view: tiers -> policies -> rules, each rule with what the hosts counted for it.

What it answers (`GET /api/v1/rules`, the dashboard's Policy page and Why page):
- every enforced policy (native Policy and GlobalPolicy, and NetworkPolicy and the upstream
  cluster policies in their native form, as the compiler runs them) in evaluation order:
  tier, then order, then name (compile.program.ordered_policies);
- per rule: its id exactly as trace, flow records and the kernel's comments name it
  (compile.program.rule_ref), its direction, action, peers and ports as text
  (controller.rule_text), and its counters: `packets` and `bytes` summed over every host's
  latest report (and per host), `flows` the start records in the controller's flow history
  that name it, `wouldDeny` for a rule of an audit-mode policy (the packets it would have
  denied or rejected: its action's, 0 for an audit allow/pass/log), `unused` when no host
  counted a packet and no flow names it;
- the namespaces' default rules (`ns/default-deny/ingress`, ...), which decide what no policy
  did and which flow records name, listed after the tiers;
- with `rule=ID`, the same cut down to that rule (both directions when they share the id), and
  the matching rules also as a flat `rules` list.

Counters are the kernel's since the host last replaced its table (a program whose structure
changes is a full replace, which starts the counters again; docs/operations.md), as the
agent read them at its last heartbeat.

Scoping (the use case, `RuleHitsView.rules`, not the route): the caller needs to read objects,
agent status and flows (agents may not); a tenant sees the policies of its namespaces and
their counters only, never a GlobalPolicy (it may not read one as an object either: rbac.may_read)
nor another namespace's rule; asking for one (`rule=`) is 403 whether it exists or not, as for
objects (rbac.require_readable). Flow records show a tenant global rule ids; their counters
sum every tenant's traffic, so they are not shown.

Pure apart from reading the state, the reports and the flow history it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from stockade.compile.chains import default_rule_ref
from stockade.compile.program import AnyPolicy, Direction, ordered_policies, policy_rules, rule_ref, source_kind
from stockade.controller import rbac
from stockade.controller.auth import Principal
from stockade.controller.rbac import Permission
from stockade.controller.rule_text import applies_to_text, peers_text, ports_text
from stockade.controller.store.agent_reports import AgentRecord
from stockade.errors import NotFoundError, ValidationError
from stockade.model.kinds import ObjectKey
from stockade.model.reports import AgentReport
from stockade.model.state import DesiredState
from stockade.model.verdicts import FinalVerdict, is_denied, would

DIRECTIONS: tuple[Direction, ...] = ("ingress", "egress")
MAX_RULE_ID = 300  # a rule id is `ns/policy/id`: three names of at most 63 or 253 characters


@dataclass(frozen=True)
class HostCount:
    host: str
    packets: int
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "packets": self.packets, "bytes": self.bytes}


@dataclass(frozen=True)
class RuleHits:
    id: str
    direction: str
    action: str
    peers: str
    ports: str
    description: str | None
    packets: int
    bytes: int
    hosts: tuple[HostCount, ...]
    flows: int
    would_deny: int | None  # audit-mode rules only

    @property
    def unused(self) -> bool:
        return self.packets == 0 and self.flows == 0

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "direction": self.direction, "action": self.action, "peers": self.peers,
                "ports": self.ports, "description": self.description, "packets": self.packets,
                "bytes": self.bytes, "hosts": [h.to_dict() for h in self.hosts], "flows": self.flows,
                "wouldDeny": self.would_deny, "unused": self.unused}


@dataclass(frozen=True)
class PolicyHits:
    kind: str
    namespace: str | None
    name: str
    tier: str
    order: int
    mode: str
    applies_to: str
    rules: tuple[RuleHits, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name, "tier": self.tier,
                "order": self.order, "mode": self.mode, "appliesTo": self.applies_to,
                "rules": [r.to_dict() for r in self.rules]}


@dataclass(frozen=True)
class TierHits:
    name: str
    policies: tuple[PolicyHits, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "policies": [p.to_dict() for p in self.policies]}


@dataclass(frozen=True)
class NamespaceDefaults:
    """What a namespace's default decides after the last tier (and, for a workload a
    NetworkPolicy isolates, in the NetworkPolicies' tier): its `default-deny`/`default-allow` rules."""

    namespace: str
    default_action: str
    rules: tuple[RuleHits, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "defaultAction": self.default_action,
                "rules": [r.to_dict() for r in self.rules]}


@dataclass(frozen=True)
class RuleTree:
    revision: int
    tiers: tuple[TierHits, ...]
    defaults: tuple[NamespaceDefaults, ...]
    hosts: tuple[str, ...]                    # the hosts whose latest reports were summed
    omitted: Mapping[str, int]                # per host, rule entries its agent's cap left out
    asked: str | None = None                  # the one rule asked for (`only_rule`)

    def to_dict(self) -> dict[str, Any]:
        out = {"revision": self.revision, "tiers": [t.to_dict() for t in self.tiers],
               "defaults": [d.to_dict() for d in self.defaults], "hosts": list(self.hosts),
               "omitted": dict(sorted(self.omitted.items()))}
        if self.asked is not None:  # one rule: also flat, wherever it sits (a tier, or a namespace default)
            out["rules"] = [r.to_dict() for r in self.rules()]
        return out

    def rules(self) -> Iterable[RuleHits]:
        for tier in self.tiers:
            for policy in tier.policies:
                yield from policy.rules
        for d in self.defaults:
            yield from d.rules


Key = tuple[str, str]  # (rule id, direction)


@dataclass(frozen=True)
class Counts:
    """What the hosts and the flow history counted, per (rule id, direction)."""

    by_host: Mapping[Key, tuple[HostCount, ...]]
    flows: Mapping[Key, int]

    @classmethod
    def of(cls, reports: Iterable[AgentRecord], flows: Mapping[Key, int]) -> tuple["Counts", tuple[str, ...],
                                                                                     dict[str, int]]:
        """The counts, the hosts that reported, and per host the entries its cap left out."""
        by_host: dict[Key, list[HostCount]] = {}
        hosts: list[str] = []
        omitted: dict[str, int] = {}
        for record in sorted(reports, key=lambda r: r.host):
            report = AgentReport.from_dict(record.report)
            hosts.append(record.host)
            if report.rule_counters_omitted:
                omitted[record.host] = report.rule_counters_omitted
            for rule, by_dir in report.rule_counters.items():
                for direction, c in by_dir.items():
                    by_host.setdefault((rule, direction), []).append(HostCount(record.host, c.packets, c.bytes))
        return cls({k: tuple(v) for k, v in by_host.items()}, dict(flows)), tuple(hosts), omitted

    def hits(self, rule: str, direction: str, action: str, peers: str, ports: str, description: str | None,
             audit: bool) -> RuleHits:
        key = (rule, direction)
        hosts = self.by_host.get(key, ())
        packets = sum(h.packets for h in hosts)
        # What an audit rule would have done is its action in audit form (model.verdicts.would).
        would_deny = (packets if is_denied(would(action)) else 0) if audit else None
        return RuleHits(rule, direction, action, peers, ports, description, packets, sum(h.bytes for h in hosts),
                        hosts, self.flows.get(key, 0), would_deny)


Visible = Callable[[str | None], bool]  # a policy's namespace (None: cluster-wide) -> shown to the caller


def build_tree(state: DesiredState, counts: Counts, hosts: tuple[str, ...], omitted: Mapping[str, int],
               visible: Visible) -> RuleTree:
    """The whole view of what `visible` lets through. Pure."""
    tiers = state.tier_order()
    by_tier: dict[str, list[PolicyHits]] = {t: [] for t in tiers}
    for policy in ordered_policies(state, tiers):
        if visible(policy.metadata.namespace):
            by_tier.setdefault(policy.spec.tier, []).append(_policy_hits(policy, counts))
    namespaces = sorted(set(state.namespaces) | {ns for ns, _ in state.workloads})
    defaults = tuple(_defaults(state, ns, counts) for ns in namespaces if visible(ns))
    return RuleTree(state.revision, tuple(TierHits(t, tuple(ps)) for t, ps in by_tier.items()), defaults,
                    hosts, omitted)


def _policy_hits(policy: AnyPolicy, counts: Counts) -> PolicyHits:
    audit = policy.spec.mode == "audit"
    rules = []
    for direction in DIRECTIONS:
        for index, rule in enumerate(policy_rules(policy, direction)):
            peers = rule.from_ if direction == "ingress" else rule.to
            rules.append(counts.hits(rule_ref(policy, direction, index, rule), direction,
                                     rule.action, peers_text(peers), ports_text(rule.ports), rule.description, audit))
    return PolicyHits(source_kind(policy), policy.metadata.namespace, policy.metadata.name, policy.spec.tier,
                      policy.spec.order, policy.spec.mode, applies_to_text(policy.spec.appliesTo), tuple(rules))


def _defaults(state: DesiredState, namespace: str, counts: Counts) -> NamespaceDefaults:
    ns = state.namespaces.get(namespace)
    action = ns.spec.defaultAction if ns is not None else "deny"
    # Under allowUntilSelected both exist: allow for a workload no enforcing policy selects in
    # that direction, deny for one that is (compile.chains.workload_chain).
    verdicts: list[FinalVerdict] = ["deny"]
    if action == "allowUntilSelected":
        verdicts.append("allow")
    rules = tuple(counts.hits(default_rule_ref(namespace, verdict, direction), direction, verdict, "any", "any",
                              f"namespace {namespace}'s default ({action})", False)
                  for verdict in verdicts for direction in DIRECTIONS)
    return NamespaceDefaults(namespace, action, rules)


def only_rule(tree: RuleTree, rule: str) -> RuleTree:
    """The tree cut down to the rule `rule` (both directions when they share the id)."""
    tiers = []
    for tier in tree.tiers:
        policies = tuple(PolicyHits(p.kind, p.namespace, p.name, p.tier, p.order, p.mode, p.applies_to,
                                    tuple(r for r in p.rules if r.id == rule)) for p in tier.policies)
        kept = tuple(p for p in policies if p.rules)
        if kept:
            tiers.append(TierHits(tier.name, kept))
    defaults = tuple(NamespaceDefaults(d.namespace, d.default_action, tuple(r for r in d.rules if r.id == rule))
                     for d in tree.defaults)
    return RuleTree(tree.revision, tuple(tiers), tuple(d for d in defaults if d.rules), tree.hosts, tree.omitted,
                    asked=rule)


class RuleHitsView:
    """The use case: the rules view for one caller, scoped and authorised here."""

    def __init__(self, state: Callable[[], DesiredState], reports: Callable[[], list[AgentRecord]],
                 flow_counts: Callable[[], dict[Key, int]]) -> None:
        self._state = state
        self._reports = reports
        self._flow_counts = flow_counts

    def rules(self, principal: Principal, rule: str | None = None) -> RuleTree:
        """The view `principal` may read; with `rule`, only that rule (404 when no rule has that id)."""
        for permission in (Permission.READ_OBJECTS, Permission.READ_STATUS, Permission.READ_FLOWS):
            rbac.require(principal, permission)
        if rule is not None:
            _check_rule_id(rule)
            _require_rule_readable(principal, rule)
        scoped = rbac.is_scoped(principal)
        visible_ns = rbac.visible_namespaces(principal)

        def visible(namespace: str | None) -> bool:
            return visible_ns(namespace) if namespace else not scoped

        counts, hosts, omitted = Counts.of(self._reports(), self._flow_counts())
        if scoped:
            omitted = {}  # which hosts run out of room says nothing a tenant needs, and names hosts' sizes
        tree = build_tree(self._state(), counts, hosts, omitted, visible)
        if rule is None:
            return tree
        found = only_rule(tree, rule)
        if not any(True for _ in found.rules()):
            raise NotFoundError(f"no rule {rule!r} in revision {tree.revision} (a rule id is ns/policy/rule, "
                                "policy/rule for a cluster-wide policy)")
        return found


def _check_rule_id(rule: str) -> None:
    if not rule or len(rule) > MAX_RULE_ID or rule.count("/") not in (1, 2):
        raise ValidationError.single("request", "query.rule",
                                     f"{rule[:MAX_RULE_ID]!r} is not a rule id (ns/policy/rule, or policy/rule "
                                     "for a cluster-wide policy)")


def _require_rule_readable(principal: Principal, rule: str) -> None:
    """403 for a rule the caller may not read, before looking whether it exists."""
    parts = rule.split("/")
    if len(parts) == 3:
        rbac.require_readable(principal, ObjectKey("Policy", parts[0], parts[1]))
    else:
        rbac.require_readable(principal, ObjectKey("GlobalPolicy", "", parts[0]))


__all__ = ["RuleHitsView", "RuleTree", "RuleHits", "PolicyHits", "TierHits", "NamespaceDefaults",
           "build_tree", "only_rule"]
