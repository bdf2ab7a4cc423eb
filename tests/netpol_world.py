"""The upstream Kubernetes netpol e2e world, its truth tables, and the cases run on it.

Shared by the offline suite (tests/model/test_k8s.py: every case through `trace_flow`,
no kernel) and the kernel suite (tests/e2e/test_netpol_truth_table.py: every case
with real sockets, and trace compared with the packets), so both prove the same table.

The world is the one of kubernetes/test/e2e/network/netpol: namespaces x, y, z
(labelled `ns: x` ...; `allowUntilSelected`, i.e. Kubernetes semantics), pods
a, b, c in each (labelled `pod: a` ...), every pod serving TCP, UDP and SCTP on
80 and 81 under the named ports `serve-80-tcp` ... `serve-81-sctp`. Pods are
spread over two hosts so that same-host and cross-host pairs both occur.

`Reachability` mirrors upstream's helper (NewReachability + ExpectPeer /
ExpectAllIngress / ExpectAllEgress). As upstream does (`ignoreLoopback`), a pod
talking to itself is not part of the table: that traffic never leaves the pod's
own network stack (in Kubernetes nor here), so no policy can see it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from stockade.compile.trace import Flow, trace_flow
from stockade.model.state import DesiredState

NAMESPACES = ("x", "y", "z")
POD_NAMES = ("a", "b", "c")
PODS: tuple[str, ...] = tuple(f"{ns}/{p}" for ns in NAMESPACES for p in POD_NAMES)
PAIRS: tuple[tuple[str, str], ...] = tuple((s, d) for s in PODS for d in PODS if s != d)
HOSTS = ("hv1", "hv2")
SERVED = (("tcp", 80), ("tcp", 81), ("udp", 80), ("udp", 81))  # what sockets can serve here (no SCTP)
_NS_OCTET = {"x": 21, "y": 22, "z": 23}
_POD_OCTET = {"a": 1, "b": 2, "c": 3}


def pod_ip(pod: str, family: int = 4) -> str:
    ns, name = pod.split("/")
    if family == 4:
        return f"198.18.{_NS_OCTET[ns]}.{_POD_OCTET[name]}"
    return f"2001:db8:{_NS_OCTET[ns]}::{_POD_OCTET[name]}"


def pod_host(pod: str) -> str:
    return HOSTS[PODS.index(pod) % len(HOSTS)]


def namespace_doc(ns: str, **extra_labels: str) -> dict[str, Any]:
    return {"apiVersion": "stockade.io/v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"ns": ns, **extra_labels}},
            "spec": {"defaultAction": "allowUntilSelected"}}


def workload_doc(pod: str, **extra_labels: str) -> dict[str, Any]:
    ns, name = pod.split("/")
    ports = [{"name": f"serve-{port}-{proto.lower()}", "protocol": proto, "port": port}
             for proto in ("TCP", "UDP", "SCTP") for port in (80, 81)]
    return {"apiVersion": "stockade.io/v1", "kind": "Workload",
            "metadata": {"name": name, "namespace": ns, "labels": {"pod": name, **extra_labels}},
            "spec": {"host": pod_host(pod), "ips": [pod_ip(pod, 4), pod_ip(pod, 6)], "ports": ports}}


def world_docs() -> list[dict[str, Any]]:
    return [*(namespace_doc(ns) for ns in NAMESPACES), *(workload_doc(p) for p in PODS)]


def netpol(name: str, pod_selector: dict[str, Any] | None = None, ns: str = "x", *,
           types: list[str] | None = None, ingress: list[dict[str, Any]] | None = None,
           egress: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """An upstream-style NetworkPolicy document; None leaves a field out, as kubectl users do."""
    spec: dict[str, Any] = {"podSelector": pod_selector if pod_selector is not None else {}}
    if types is not None:
        spec["policyTypes"] = types
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def pods(label: str) -> dict[str, Any]:
    """`podSelector: {matchLabels: {pod: a}}`."""
    return {"matchLabels": {"pod": label}}


def nss(label: str) -> dict[str, Any]:
    """`namespaceSelector: {matchLabels: {ns: y}}`."""
    return {"matchLabels": {"ns": label}}


# ------------------------------------------------------------------ truth tables

def _expand(peer: str) -> list[str]:
    """`x/a`, `x/*`, `*/a`, `*/*` → the pods it names."""
    ns, name = peer.split("/")
    return [p for p in PODS if ns in ("*", p.split("/")[0]) and name in ("*", p.split("/")[1])]


class Reachability:
    """Expected connectivity over PAIRS, like upstream's `Reachability`."""

    def __init__(self, default: bool = True) -> None:
        self.expected: dict[tuple[str, str], bool] = {pair: default for pair in PAIRS}

    def expect_peer(self, src: str, dst: str, allowed: bool) -> "Reachability":
        """Every pair from `src` to `dst` (`x/a`, `x/*`, `*/a`, `*/*`)."""
        for s in _expand(src):
            for d in _expand(dst):
                if s != d:
                    self.expected[(s, d)] = allowed
        return self

    def expect_all_ingress(self, dst: str, allowed: bool) -> "Reachability":
        return self.expect_peer("*/*", dst, allowed)

    def expect_all_egress(self, src: str, allowed: bool) -> "Reachability":
        return self.expect_peer(src, "*/*", allowed)


Observed = dict[tuple[str, str], "bool | str"]  # True allowed, False denied, or the odd verdict seen


def render(matrix: Observed, title: str) -> str:
    """Upstream's truth-table layout: rows are sources, columns destinations;
    `.` allowed, `X` denied, `-` the pod itself (not probed), `?` any other verdict."""
    width = max(len(p) for p in PODS)

    def cell(s: str, d: str) -> str:
        if s == d:
            return "-"
        v = matrix.get((s, d))
        return "." if v is True else "X" if v is False else "?"

    lines = [title, " " * (width + 1) + " ".join(p.rjust(width) for p in PODS)]
    for s in PODS:
        lines.append(s.ljust(width + 1) + " ".join(cell(s, d).rjust(width) for d in PODS))
    return "\n".join(lines)


def compare(expected: Reachability, observed: Observed, what: str) -> str | None:
    """None when they agree; else both tables, the differences and the odd verdicts, readably."""
    wrong = [pair for pair in PAIRS if observed.get(pair) is not expected.expected[pair]]
    if not wrong:
        return None
    diff: Observed = {pair: pair not in wrong for pair in PAIRS}
    word = lambda v: "allowed" if v is True else "denied" if v is False else repr(v)  # noqa: E731
    details = "\n".join(f"  {s} -> {d}: expected {word(expected.expected[(s, d)])}, got {word(observed.get((s, d)))}"
                        for s, d in wrong)
    return "\n\n".join([f"{what}: {len(wrong)} of {len(PAIRS)} pairs differ",
                        render(expected.expected, "expected"), render(observed, "observed"),
                        render(diff, "comparison (X: differs)"), details])


def trace_matrix(state: DesiredState, check: "Check") -> Observed:
    """The matrix `stockade trace` gives for `check`, from the compiled host programs."""
    out: Observed = {}
    programs: dict = {}   # each host's program compiled once for the whole matrix
    for src, dst in PAIRS:
        flow = Flow(tuple(src.split("/")), tuple(dst.split("/")), check.protocol, check.port)  # type: ignore[arg-type]
        verdict = trace_flow(state, flow, programs=programs).verdict
        out[(src, dst)] = {"allow": True, "deny": False}.get(verdict, verdict)
    return out


# ------------------------------------------------------------------------ cases

@dataclass(frozen=True)
class Check:
    protocol: str   # tcp | udp | sctp (sctp: evaluated by trace only; the lab has no SCTP sockets)
    port: int
    expect: Reachability

    @property
    def label(self) -> str:
        return f"{self.protocol}/{self.port}"


@dataclass(frozen=True)
class Step:
    put: tuple[dict[str, Any], ...] = ()           # NetworkPolicies, relabelled Namespaces/Workloads
    delete: tuple[tuple[str, str, str], ...] = ()  # (kind, namespace, name)
    checks: tuple[Check, ...] = ()


@dataclass(frozen=True)
class Case:
    name: str
    steps: tuple[Step, ...]
    notes: str = ""

    def network_policies_left(self) -> list[tuple[str, str]]:
        """(namespace, name) of the NetworkPolicies the case leaves behind: cleanup deletes them."""
        live: dict[tuple[str, str], bool] = {}
        for step in self.steps:
            for doc in step.put:
                if doc["kind"] == "NetworkPolicy":
                    live[(doc["metadata"]["namespace"], doc["metadata"]["name"])] = True
            for kind, ns, name in step.delete:
                if kind == "NetworkPolicy":
                    live.pop((ns, name), None)
        return sorted(live)

    def world_docs_touched(self) -> list[dict[str, Any]]:
        """The original documents of every namespace and workload the case relabelled."""
        touched = {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])
                   for s in self.steps for d in s.put if d["kind"] in ("Namespace", "Workload")}
        return [d for d in world_docs()
                if (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]) in touched]

    @property
    def matrices(self) -> int:
        return sum(len(s.checks) for s in self.steps)


def _one(*docs: dict[str, Any], checks: Iterable[Check]) -> tuple[Step, ...]:
    return (Step(put=tuple(docs), checks=tuple(checks)),)


def cases() -> list[Case]:
    """The truth-table cases, named after their upstream counterparts."""
    x_isolated = Reachability().expect_all_ingress("x/*", False)
    only_from = lambda src, dst: Reachability().expect_all_ingress(dst, False).expect_peer(src, dst, True)  # noqa: E731
    only_to = lambda src, dst: Reachability().expect_all_egress(src, False).expect_peer(src, dst, True)  # noqa: E731
    all_open = Reachability()
    out: list[Case] = []
    add = out.append

    add(Case("default-deny-ingress", _one(
        netpol("deny-ingress", {}, ns="x", ingress=[]),
        checks=[Check("tcp", 80, x_isolated)]),
        "podSelector {} with empty ingress isolates every pod of x for ingress only"))
    add(Case("default-deny-egress", _one(
        netpol("deny-egress", {}, ns="x", types=["Egress"]),
        checks=[Check("tcp", 80, Reachability().expect_all_egress("x/*", False))])))
    add(Case("default-deny-all", _one(
        netpol("deny-all", {}, ns="x", types=["Ingress", "Egress"]),
        checks=[Check("tcp", 80, Reachability().expect_all_ingress("x/*", False).expect_all_egress("x/*", False))])))
    add(Case("allow-from-pods-in-same-namespace-by-podSelector", _one(
        netpol("allow-x-b", pods("a"), ingress=[{"from": [{"podSelector": pods("b")}]}]),
        checks=[Check("tcp", 80, only_from("x/b", "x/a"))])))
    add(Case("allow-from-namespace-by-namespaceSelector", _one(
        netpol("allow-ns-y", pods("a"), ingress=[{"from": [{"namespaceSelector": nss("y")}]}]),
        checks=[Check("tcp", 80, only_from("y/*", "x/a"))])))
    add(Case("podSelector-AND-namespaceSelector-matchExpressions-In-NotIn", _one(
        netpol("allow-b-c-not-x", pods("a"), ingress=[{"from": [{
            "namespaceSelector": {"matchExpressions": [{"key": "ns", "operator": "NotIn", "values": ["x"]}]},
            "podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b", "c"]}]}}]}]),
        checks=[Check("tcp", 80, Reachability().expect_all_ingress("x/a", False)
                      .expect_peer("y/b", "x/a", True).expect_peer("y/c", "x/a", True)
                      .expect_peer("z/b", "x/a", True).expect_peer("z/c", "x/a", True))]),
        "one peer with both selectors: pods b or c, in a namespace other than x"))
    add(Case("podSelector-OR-namespaceSelector", _one(
        netpol("allow-b-or-y", pods("a"), ingress=[{"from": [
            {"podSelector": pods("b")}, {"namespaceSelector": nss("y")}]}]),
        checks=[Check("tcp", 80, only_from("y/*", "x/a").expect_peer("x/b", "x/a", True))]),
        "two peers in one rule add up"))
    add(Case("namespaceSelector-on-automatic-metadata-name-label", _one(
        netpol("allow-z-by-name", pods("a"), ingress=[{"from": [{
            "namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["z"]}]}}]}]),
        checks=[Check("tcp", 80, only_from("z/*", "x/a"))])))
    add(Case("allow-ingress-on-one-named-port", _one(
        netpol("allow-81-named", {}, ingress=[{"ports": [{"port": "serve-81-tcp"}]}]),
        checks=[Check("tcp", 81, all_open), Check("tcp", 80, x_isolated)])))
    add(Case("allow-ingress-from-namespace-on-one-named-port", _one(
        netpol("allow-y-80-named", pods("a"), ingress=[{"from": [{"namespaceSelector": nss("y")}],
                                                         "ports": [{"protocol": "TCP", "port": "serve-80-tcp"}]}]),
        checks=[Check("tcp", 80, only_from("y/*", "x/a")),
                Check("tcp", 81, Reachability().expect_all_ingress("x/a", False))])))
    add(Case("allow-egress-on-one-named-port", _one(
        netpol("egress-80-named", {}, types=["Egress"], egress=[{"ports": [{"port": "serve-80-tcp"}]}]),
        checks=[Check("tcp", 80, all_open), Check("tcp", 81, Reachability().expect_all_egress("x/*", False))])))
    add(Case("port-range-with-endPort", _one(
        netpol("allow-81-to-85", pods("a"), ingress=[{"ports": [{"protocol": "TCP", "port": 81, "endPort": 85}]}]),
        checks=[Check("tcp", 81, all_open), Check("tcp", 80, Reachability().expect_all_ingress("x/a", False))])))
    add(Case("multiple-policies-add-up", _one(
        netpol("deny-ingress", {}, ingress=[]),
        netpol("allow-all-to-a", pods("a"), ingress=[{}]),
        netpol("allow-y-to-b", pods("b"), ingress=[{"from": [{"namespaceSelector": nss("y")}]}]),
        checks=[Check("tcp", 80, Reachability().expect_all_ingress("x/*", False).expect_all_ingress("x/a", True)
                      .expect_peer("y/*", "x/b", True))]),
        "default deny + allow-all (`ingress: [{}]`) for a + allow y for b: a is open, b open to y, c closed"))
    add(Case("stacked-policies-one-allows-80-another-81", _one(
        netpol("allow-80", pods("a"), ingress=[{"ports": [{"port": 80}]}]),
        netpol("allow-81-from-z", pods("a"), ingress=[{"from": [{"namespaceSelector": nss("z")}],
                                                        "ports": [{"port": 81}]}]),
        checks=[Check("tcp", 80, all_open), Check("tcp", 81, only_from("z/*", "x/a"))])))
    add(Case("update-policy-changes-its-ports", (
        Step(put=(netpol("allow-one-port", pods("a"), ingress=[{"ports": [{"port": 81}]}]),),
             checks=(Check("tcp", 80, Reachability().expect_all_ingress("x/a", False)),)),
        Step(put=(netpol("allow-one-port", pods("a"), ingress=[{"ports": [{"port": 80}]}]),),
             checks=(Check("tcp", 80, all_open), Check("tcp", 81, Reachability().expect_all_ingress("x/a", False)))),
    )))
    dne = {"matchExpressions": [{"key": "ns", "operator": "In", "values": ["y", "z"]},
                                {"key": "quarantined", "operator": "DoesNotExist"}]}
    add(Case("update-namespace-labels-DoesNotExist", (
        Step(put=(netpol("allow-unquarantined", pods("a"), ingress=[{"from": [{"namespaceSelector": dne}]}]),),
             checks=(Check("tcp", 80, only_from("y/*", "x/a").expect_peer("z/*", "x/a", True)),)),
        Step(put=(namespace_doc("z", quarantined="true"),),
             checks=(Check("tcp", 80, only_from("y/*", "x/a")),)),
    ), "relabelling namespace z takes it out of the namespaceSelector, live"))
    add(Case("update-pod-labels-Exists", (
        Step(put=(netpol("allow-pod2", pods("a"), ingress=[{"from": [{"podSelector": {
            "matchExpressions": [{"key": "pod2", "operator": "Exists"}]}}]}]),),
             checks=(Check("tcp", 80, Reachability().expect_all_ingress("x/a", False)),)),
        Step(put=(workload_doc("x/b", pod2="updated"),),
             checks=(Check("tcp", 80, only_from("x/b", "x/a")),)),
    ), "relabelling pod x/b puts it into the peer podSelector, live"))
    add(Case("update-pod-labels-selects-it-for-isolation", (
        Step(put=(netpol("isolate-target", {"matchLabels": {"target": "isolated"}}, ingress=[]),),
             checks=(Check("tcp", 80, all_open),)),
        Step(put=(workload_doc("x/c", target="isolated"),),
             checks=(Check("tcp", 80, Reachability().expect_all_ingress("x/c", False)),)),
    ), "a policy selecting nobody changes nothing; relabelling x/c makes it select and isolate x/c"))
    add(Case("policy-deletion-restores-reachability", (
        Step(put=(netpol("deny-all", {}, types=["Ingress", "Egress"]),),
             checks=(Check("tcp", 81, Reachability().expect_all_ingress("x/*", False)
                           .expect_all_egress("x/*", False)),)),
        Step(delete=(("NetworkPolicy", "x", "deny-all"),), checks=(Check("tcp", 81, all_open),)),
    )))
    add(Case("ingress-ipBlock-with-except", _one(
        netpol("allow-cidr-but-y", pods("a"), ingress=[{"from": [{"ipBlock": {
            "cidr": "198.18.20.0/22", "except": ["198.18.22.0/24"]}}]}]),
        checks=[Check("tcp", 80, Reachability().expect_peer("y/*", "x/a", False))]),
        "198.18.20.0/22 holds every pod; the except takes namespace y out"))
    add(Case("egress-ipBlock-with-except", _one(
        netpol("egress-cidr-but-x-b", pods("a"), types=["Egress"], egress=[{"to": [{"ipBlock": {
            "cidr": "198.18.20.0/22", "except": ["198.18.21.2/32"]}}]}]),
        checks=[Check("tcp", 80, Reachability().expect_peer("x/a", "x/b", False))])))
    add(Case("egress-to-pod-in-namespace-podSelector-AND-namespaceSelector", _one(
        netpol("egress-to-y-a", pods("a"), types=["Egress"], egress=[{"to": [{
            "namespaceSelector": nss("y"), "podSelector": pods("a")}]}]),
        checks=[Check("tcp", 80, only_to("x/a", "y/a"))])))
    add(Case("ingress-and-egress-together", _one(
        netpol("both", pods("a"), types=["Ingress", "Egress"],
               ingress=[{"from": [{"namespaceSelector": nss("y")}]}],
               egress=[{"to": [{"namespaceSelector": nss("z")}]}]),
        checks=[Check("tcp", 80, only_from("y/*", "x/a").expect_all_egress("x/a", False)
                      .expect_peer("x/a", "z/*", True))])))
    add(Case("udp-default-deny-ingress", _one(
        netpol("deny-ingress", {}, ingress=[]),
        checks=[Check("udp", 80, x_isolated)])))
    add(Case("udp-ports-and-tcp-not-opened-by-a-udp-rule", _one(
        netpol("allow-udp-81", pods("a"), ingress=[{"ports": [{"protocol": "UDP", "port": 81}]}]),
        checks=[Check("udp", 81, all_open), Check("udp", 80, Reachability().expect_all_ingress("x/a", False)),
                Check("tcp", 81, Reachability().expect_all_ingress("x/a", False))])))
    add(Case("sctp-rule-does-not-open-tcp", _one(
        netpol("allow-sctp-80", pods("a"), ingress=[{"ports": [{"protocol": "SCTP", "port": "serve-80-sctp"}]}]),
        checks=[Check("sctp", 80, all_open), Check("tcp", 80, Reachability().expect_all_ingress("x/a", False))]),
        "upstream: should not allow access by TCP when a policy specifies only SCTP"))
    add(Case("tcp-rule-does-not-open-sctp", _one(
        netpol("allow-tcp-80", pods("a"), ingress=[{"ports": [{"protocol": "TCP", "port": 80}]}]),
        checks=[Check("tcp", 80, all_open), Check("sctp", 80, Reachability().expect_all_ingress("x/a", False))])))
    return out
