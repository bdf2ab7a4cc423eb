"""A small reference evaluator of Stockade policy, written from the spec, and random policies for it.

Used by the differential tests (tests/compile/test_trace.py without
a kernel, tests/e2e/test_differential.py with real packets): the same random
policies and flows are answered by `compile.trace.trace_flow` (the compiled
program), by this module, and, in the lab, by real sockets; all must agree.

The evaluator follows ../shared/DESIGN.md and issue 4, not the compiler: it
works on the plain YAML documents and knows nothing of nftables, sets, chains
or marks. What it implements, for one side (egress at the source, ingress at
the destination):

- the policies that apply to the workload (a Policy: its namespace and its
  `appliesTo.selector`; a GlobalPolicy: any namespace, narrowed by
  `appliesTo.namespaceSelector`) and take part in the direction (`types`, or
  else: it has rules in that direction);
- tiers in their order (built-in platform 100, application 500, baseline 900,
  plus Tier objects), policies by `order`, then name; rules top to bottom;
- the first matching allow, deny or reject decides; `pass` ends the tier and
  evaluation goes on with the next tier; `log` and every rule of an audit-mode
  policy are recorded (`log`, `would-<action>`) and never decide;
- after the last tier the namespace's `defaultAction`: `deny`, or under
  `allowUntilSelected` allow when no enforcing policy selects the workload in
  that direction (`types` lists it, or else it has an allow, deny or reject
  rule there: rules that only pass or log take no decision);
- a rule matches when any of its peers matches (none: every peer) and any of
  its ports (none: everything). Peers: a `cidr` (minus `except`) holds the
  peer's address of the flow's family; a `selector` alone stays in the
  policy's namespace (any namespace for a GlobalPolicy), a `namespaceSelector`
  widens to the namespaces it matches, both together are ANDed. Ports:
  protocol, single port or `port`..`endPort`; ICMP/ICMPv6 by family, type, code.

A flow is allowed when the source's egress allows and the destination's
ingress allows; the verdict is the first side's that does not allow.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import yaml
from hypothesis import strategies as st

BUILTIN_TIERS = {"platform": 100, "application": 500, "baseline": 900}
FINAL = {"allow": "accept", "deny": "drop", "reject": "reject"}

# ------------------------------------------------------------------ the fixed world

NAMESPACES: dict[str, dict[str, Any]] = {
    "red": {"labels": {"team": "red"}, "defaultAction": "deny"},
    "blue": {"labels": {"team": "blue"}, "defaultAction": "allowUntilSelected"},
}
# (namespace, name): host, labels, number (its addresses are 198.18.40.N and 2001:db8:40::N)
WORKLOADS: dict[tuple[str, str], tuple[str, dict[str, str], int]] = {
    ("red", "w1"): ("hv1", {"role": "web", "env": "prod"}, 1),
    ("red", "w2"): ("hv2", {"role": "db", "env": "prod"}, 2),
    ("red", "w3"): ("hv1", {"role": "web", "env": "dev"}, 3),
    ("blue", "w4"): ("hv2", {"role": "web", "env": "prod"}, 4),
    ("blue", "w5"): ("hv1", {"role": "db", "env": "dev"}, 5),
    ("blue", "w6"): ("hv2", {"role": "cache"}, 6),
}
TIERS = {"urgent": 50}  # a Tier object ordered before platform


def ips(key: tuple[str, str]) -> dict[int, str]:
    n = WORKLOADS[key][2]
    return {4: f"198.18.40.{n}", 6: f"2001:db8:40::{n}"}


def world_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for name, order in TIERS.items():
        docs.append({"apiVersion": "stockade.io/v1", "kind": "Tier", "metadata": {"name": name},
                     "spec": {"order": order}})
    for name, ns in NAMESPACES.items():
        docs.append({"apiVersion": "stockade.io/v1", "kind": "Namespace",
                     "metadata": {"name": name, "labels": ns["labels"]},
                     "spec": {"defaultAction": ns["defaultAction"]}})
    for key, (host, labels, _) in WORKLOADS.items():
        docs.append({"apiVersion": "stockade.io/v1", "kind": "Workload",
                     "metadata": {"name": key[1], "namespace": key[0], "labels": labels},
                     "spec": {"host": host, "ips": [ips(key)[4], ips(key)[6]]}})
    return docs


# ------------------------------------------------------------------ the evaluator

def _isolates(policy: dict[str, Any], direction: str) -> bool:
    types = policy["spec"].get("types")
    if types is not None:
        return direction.capitalize() in types
    return any(r["action"] in ("allow", "deny", "reject") for r in policy["spec"].get(direction) or [])


def selector_matches(sel: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if sel is None:
        return True
    if any(labels.get(k) != v for k, v in (sel.get("matchLabels") or {}).items()):
        return False
    for e in sel.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        ok = {"In": key in labels and labels[key] in values,
              "NotIn": key not in labels or labels[key] not in values,
              "Exists": key in labels,
              "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def namespace_labels(ns: str) -> dict[str, str]:
    return {**NAMESPACES[ns]["labels"], "kubernetes.io/metadata.name": ns}


def applies_to(policy: dict[str, Any], key: tuple[str, str]) -> bool:
    target = policy["spec"]["appliesTo"]
    labels = WORKLOADS[key][1]
    if policy["kind"] == "Policy":
        return key[0] == policy["metadata"]["namespace"] and selector_matches(target.get("selector"), labels)
    return (selector_matches(target.get("namespaceSelector"), namespace_labels(key[0]))
            and selector_matches(target.get("selector"), labels))


def takes_part(policy: dict[str, Any], direction: str) -> bool:
    types = policy["spec"].get("types")
    if types is not None:
        return direction.capitalize() in types
    return bool(policy["spec"].get(direction))


@dataclass(frozen=True)
class Flow:
    src: tuple[str, str]
    dst: tuple[str, str]
    protocol: str            # tcp, udp, icmp
    port: int | None = None
    family: int = 4
    icmp_type: int | None = None   # icmp: None means echo request (8 or 128)

    @property
    def echo_type(self) -> int:
        return self.icmp_type if self.icmp_type is not None else (8 if self.family == 4 else 128)

    def __str__(self) -> str:
        what = f"{self.protocol}/{self.port}" if self.protocol != "icmp" else f"icmp type {self.echo_type}"
        return f"{self.src[0]}/{self.src[1]} -> {self.dst[0]}/{self.dst[1]} {what} IPv{self.family}"


def peer_matches(policy: dict[str, Any], peer: dict[str, Any], other: tuple[str, str], family: int) -> bool:
    if "cidr" in peer:
        addr = ipaddress.ip_address(ips(other)[family])
        net = ipaddress.ip_network(peer["cidr"])
        if addr.version != net.version or addr not in net:
            return False
        return not any(addr in ipaddress.ip_network(e) for e in peer.get("except") or [])
    ns_sel = peer.get("namespaceSelector")
    if ns_sel is None:
        own = policy["metadata"].get("namespace")
        if own is not None and other[0] != own:
            return False
    elif not selector_matches(ns_sel, namespace_labels(other[0])):
        return False
    return selector_matches(peer.get("selector"), WORKLOADS[other][1])


def port_matches(port: dict[str, Any], flow: Flow) -> bool:
    proto = port.get("protocol", "TCP")
    if proto in ("ICMP", "ICMPv6"):
        if flow.protocol != "icmp" or flow.family != (4 if proto == "ICMP" else 6):
            return False
        if port.get("type") is not None and port["type"] != flow.echo_type:
            return False
        return port.get("code") is None or port["code"] == 0
    if flow.protocol != proto.lower():
        return False
    if port.get("port") is None:
        return True
    return port["port"] <= (flow.port or 0) <= port.get("endPort", port["port"])


def rule_matches(policy: dict[str, Any], rule: dict[str, Any], direction: str, flow: Flow) -> bool:
    peers = rule.get("from" if direction == "ingress" else "to")
    other = flow.src if direction == "ingress" else flow.dst
    if peers and not any(peer_matches(policy, p, other, flow.family) for p in peers):
        return False
    ports = rule.get("ports")
    return not ports or any(port_matches(p, flow) for p in ports)


def rule_ref(policy: dict[str, Any], direction: str, index: int, rule: dict[str, Any]) -> str:
    ns = policy["metadata"].get("namespace")
    owner = f"{ns}/{policy['metadata']['name']}" if ns else policy["metadata"]["name"]
    return f"{owner}/{rule.get('id') or f'{direction}-{index}'}"


def tier_order() -> list[str]:
    orders = {**BUILTIN_TIERS, **TIERS}
    return sorted(orders, key=lambda t: (orders[t], t))


@dataclass
class Side:
    verdict: str                                   # allow, deny, reject
    steps: list[tuple[str, str]] = field(default_factory=list)   # (rule id, action) on the way


def evaluate_side(policies: list[dict[str, Any]], key: tuple[str, str], direction: str, flow: Flow) -> Side:
    mine = [p for p in policies if applies_to(p, key) and takes_part(p, direction)]
    side = Side("deny")
    for tier in tier_order():
        in_tier = sorted((p for p in mine if p["spec"].get("tier", "application") == tier),
                         key=lambda p: (p["spec"].get("order", 1000), p["metadata"]["name"]))
        passed = False
        for policy in in_tier:
            audit = policy["spec"].get("mode", "enforce") == "audit"
            for index, rule in enumerate(policy["spec"].get(direction) or []):
                if not rule_matches(policy, rule, direction, flow):
                    continue
                ref, action = rule_ref(policy, direction, index, rule), rule["action"]
                if audit:
                    side.steps.append((ref, f"would-{action}"))
                elif action == "log":
                    side.steps.append((ref, "log"))
                elif action == "pass":
                    side.steps.append((ref, "pass"))
                    passed = True
                    break
                else:
                    side.steps.append((ref, FINAL[action]))
                    side.verdict = action
                    return side
            if passed:
                break
    open_ = NAMESPACES[key[0]]["defaultAction"] == "allowUntilSelected" and \
        not any(p["spec"].get("mode", "enforce") == "enforce" and _isolates(p, direction) for p in mine)
    side.verdict = "allow" if open_ else "deny"
    side.steps.append((f"{key[0]}/default-{side.verdict}/{direction}", "accept" if open_ else "drop"))
    return side


@dataclass
class Answer:
    verdict: str
    egress: Side
    ingress: Side | None


def evaluate(policies: list[dict[str, Any]], flow: Flow) -> Answer:
    egress = evaluate_side(policies, flow.src, "egress", flow)
    if egress.verdict != "allow":
        return Answer(egress.verdict, egress, None)
    ingress = evaluate_side(policies, flow.dst, "ingress", flow)
    return Answer(ingress.verdict, egress, ingress)


# ------------------------------------------------------------------ random policies

SELECTORS = [
    {},
    {"matchLabels": {"role": "web"}},
    {"matchLabels": {"role": "db"}},
    {"matchLabels": {"env": "prod"}},
    {"matchLabels": {"role": "web", "env": "dev"}},
    {"matchExpressions": [{"key": "env", "operator": "Exists"}]},
    {"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]},
    {"matchExpressions": [{"key": "role", "operator": "In", "values": ["db", "cache"]}]},
    {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]},
]
NAMESPACE_SELECTORS = [
    {},
    {"matchLabels": {"team": "red"}},
    {"matchLabels": {"team": "blue"}},
    {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["blue"]}]},
]
CIDRS = [
    {"cidr": "198.18.40.0/29"},                                        # every workload
    {"cidr": "198.18.40.0/30", "except": ["198.18.40.2/32"]},          # w1, w3
    {"cidr": "198.18.40.4/30"},                                        # w4, w5, w6
    {"cidr": "2001:db8:40::/125"},
    {"cidr": "2001:db8:40::4/126"},
    {"cidr": "2001:db8:40::/126", "except": ["2001:db8:40::1/128"]},   # w2, w3
    {"cidr": "198.19.0.0/16"},                                         # nobody
]
PORTS = [
    {"protocol": "TCP", "port": 80},
    {"protocol": "TCP", "port": 81},
    {"protocol": "UDP", "port": 80},
    {"protocol": "TCP", "port": 79, "endPort": 80},
    {"protocol": "UDP", "port": 80, "endPort": 90},
    {"protocol": "TCP"},
    {"protocol": "UDP"},
    {"protocol": "ICMP", "type": 8},
    {"protocol": "ICMP", "type": 0},
    {"protocol": "ICMP"},
    {"protocol": "ICMP", "type": 8, "code": 0},
    {"protocol": "ICMPv6", "type": 128},
    {"protocol": "ICMPv6", "type": 129},
    {"protocol": "ICMPv6"},
]
ACTIONS = ["allow"] * 6 + ["deny"] * 3 + ["reject"] * 5 + ["pass"] * 3 + ["log"] * 3


@st.composite
def peers(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["selector", "namespaceSelector", "both", "cidr"]))
    if kind == "cidr":
        return dict(draw(st.sampled_from(CIDRS)))
    peer: dict[str, Any] = {}
    if kind in ("selector", "both"):
        peer["selector"] = draw(st.sampled_from(SELECTORS))
    if kind in ("namespaceSelector", "both"):
        peer["namespaceSelector"] = draw(st.sampled_from(NAMESPACE_SELECTORS))
    return peer


@st.composite
def rules(draw: st.DrawFn, direction: str, index: int) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    if draw(st.booleans()):
        rule["id"] = f"r{index}"     # otherwise derived from direction and position
    rule["action"] = draw(st.sampled_from(ACTIONS))
    if draw(st.integers(0, 4)) >= 2:
        rule["from" if direction == "ingress" else "to"] = draw(st.lists(peers(), min_size=1, max_size=2))
    if draw(st.integers(0, 2)) >= 1:
        rule["ports"] = draw(st.lists(st.sampled_from(PORTS), min_size=1, max_size=2))
    return rule


@st.composite
def policies(draw: st.DrawFn, index: int) -> dict[str, Any]:
    is_global = draw(st.integers(0, 3)) == 0
    spec: dict[str, Any] = {}
    tier = draw(st.sampled_from(["platform", "application", "application", "baseline", "urgent", None]))
    if tier is not None:
        spec["tier"] = tier
    order = draw(st.sampled_from([10, 20, None]))
    if order is not None:
        spec["order"] = order
    if draw(st.integers(0, 4)) == 0:
        spec["mode"] = "audit"
    if draw(st.integers(0, 6)) == 0:
        spec["types"] = draw(st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"], []]))
    applies: dict[str, Any] = {}
    if is_global:
        which = draw(st.sampled_from(["selector", "namespaceSelector", "both"]))
        if which in ("selector", "both"):
            applies["selector"] = draw(st.sampled_from(SELECTORS))
        if which in ("namespaceSelector", "both"):
            applies["namespaceSelector"] = draw(st.sampled_from(NAMESPACE_SELECTORS))
    else:
        applies["selector"] = draw(st.sampled_from(SELECTORS))
    spec["appliesTo"] = applies
    n = 0
    for direction in ("ingress", "egress"):
        if direction.capitalize() not in spec.get("types", ["Ingress", "Egress"]):
            continue  # rules in a direction `types` leaves out are refused: they would never run
        count = draw(st.integers(0, 3))
        if count:
            spec[direction] = [draw(rules(direction, n + i)) for i in range(count)]
            n += count
    metadata: dict[str, Any] = {"name": f"p{index}"}
    if not is_global:
        metadata["namespace"] = draw(st.sampled_from(sorted(NAMESPACES)))
    return {"apiVersion": "stockade.io/v1", "kind": "GlobalPolicy" if is_global else "Policy",
            "metadata": metadata, "spec": spec}


# Red denies by default in both directions: without something wide open, most flows would be
# denied and the comparison would say little about allow and reject. Half of the sets get this.
OPEN_BASELINE = {"apiVersion": "stockade.io/v1", "kind": "GlobalPolicy", "metadata": {"name": "open-baseline"},
                 "spec": {"tier": "baseline", "appliesTo": {"selector": {}},
                          "ingress": [{"id": "in", "action": "allow"}], "egress": [{"id": "out", "action": "allow"}]}}


@st.composite
def policy_sets(draw: st.DrawFn, max_size: int) -> list[dict[str, Any]]:
    count = draw(st.integers(1, max_size))
    found = [draw(policies(i)) for i in range(count)]
    if draw(st.booleans()):
        found.append(OPEN_BASELINE)
    return found


PAIRS = [(s, d) for s in WORKLOADS for d in WORKLOADS if s != d]


@st.composite
def flows(draw: st.DrawFn, icmp_types: bool = False) -> Flow:
    src, dst = draw(st.sampled_from(PAIRS))
    family = draw(st.sampled_from([4, 6]))
    protocol = draw(st.sampled_from(["tcp", "tcp", "udp", "icmp"]))
    if protocol == "icmp":
        icmp_type = draw(st.sampled_from([None, 0, 13, 129])) if icmp_types else None
        return Flow(src, dst, "icmp", None, family, icmp_type)
    return Flow(src, dst, protocol, draw(st.sampled_from([80, 81])), family)


def policy_yaml(policies: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(policies, sort_keys=False, default_flow_style=None)
