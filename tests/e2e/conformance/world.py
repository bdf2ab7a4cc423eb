"""Upstream's conformance world in the lab, and the steps of its subtests (issue 17).

The world of kubernetes-sigs/network-policy-api `conformance/base/manifests.yaml`: five
namespaces labelled `conformance-house: <house>`, two pods each (`harry-potter-0/1` in
gryffindor, `draco-malfoy-0/1` in slytherin, `cedric-diggory-0/1` in hufflepuff,
`luna-lovegood-0/1` in ravenclaw, `centaur-0/1` in forbidden-forrest), each serving TCP 80
(named `web`) and 8080, UDP 53 (named `dns`) and 5353; namespaces allow until a policy selects
a pod, as Kubernetes'. The pods are spread over two hypervisors.

Every pod's servers are sockets opened inside its network namespace and answered by one thread
of the test process (`Servers`), and a subtest's pokes run side by side (`Conformance.poke_all`):
a denied poke costs one timeout, not one per poke. A poke is upstream's PokeServer: a TCP
connection answered, or a UDP datagram echoed, is "allowed"; nothing within the timeout is
"denied" (Deny drops, so the client sees a timeout, never a reject).
"""

from __future__ import annotations

import copy
import selectors
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from stockade.cli.waiting import wait_for_revision
from stockade.client import ControllerClient
from stockade.compile.trace import Flow, TraceResult, trace_flow
from stockade.lab import netns, probe_client
from tests.e2e.conftest import Lab

HERE = Path(__file__).parent
CASES = yaml.safe_load((HERE / "cases.yaml").read_text())
HOUSES = {"gryffindor": "harry-potter", "slytherin": "draco-malfoy", "hufflepuff": "cedric-diggory",
          "ravenclaw": "luna-lovegood", "forbidden-forrest": "centaur"}
SERVED = (("tcp", 80), ("tcp", 8080), ("udp", 53), ("udp", 5353))
POKE_TIMEOUT = 0.7  # seconds without an answer that make a poke "denied" (answers take milliseconds)
REPLY = b"conformance ok\n"
APPLY_TIMEOUT = 60.0
FLOW_WAIT = 10.0  # seconds for the agents' flow records of a poke to reach the controller
# This kernel has no SCTP (socket() says EPROTONOSUPPORT): upstream's SCTP pokes are checked by
# trace alone, through the program the hosts run, and reported as such.
KERNEL_PROTOCOLS = ("tcp", "udp")


def ns(house: str) -> str:
    return f"network-policy-conformance-{house}"


def world() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for i, (house, pod) in enumerate(HOUSES.items()):
        docs.append(namespace_doc(house, {"conformance-house": house}))
        for n in (0, 1):
            docs.append({"apiVersion": "stockade.io/v1", "kind": "Workload",
                         "metadata": {"name": f"{pod}-{n}", "namespace": ns(house),
                                      "labels": {"conformance-house": house}},
                         "spec": {"host": f"hv{(i + n) % 2 + 1}",
                                  "ports": [{"name": "web", "protocol": "TCP", "port": 80},
                                            {"name": "dns", "protocol": "UDP", "port": 53}]}})
    return docs


def namespace_doc(house: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "stockade.io/v1", "kind": "Namespace", "metadata": {"name": ns(house), "labels": labels},
            "spec": {"defaultAction": "allowUntilSelected"}}


def fixture(path: str) -> list[dict[str, Any]]:
    """An upstream fixture file (`base/...yaml`), as the test applies it: unchanged."""
    return [d for d in yaml.safe_load_all((HERE / "upstream" / path).read_text()) if d]


def upstream_tests(prefix: str) -> list[dict[str, Any]]:
    return [t for t in CASES["tests"] if t["name"].startswith(prefix)]


class Servers:
    """TCP 80/8080 and UDP 53/5353 in every pod's netns, answered by one thread until closed."""

    def __init__(self, pod_netns: Iterable[str]) -> None:
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        for name in pod_netns:
            for protocol, port in SERVED:
                sock = netns.run_in(name, lambda p=protocol, n=port: _listen(p, n))  # type: ignore[misc]
                self._selector.register(sock, selectors.EVENT_READ, protocol)
        self._thread = threading.Thread(target=self._serve, name="conformance-servers", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.2):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    if key.data == "tcp":
                        conn, _ = sock.accept()
                        with conn:
                            conn.sendall(REPLY)
                    else:
                        data, peer = sock.recvfrom(2048)
                        sock.sendto(data, peer)
                except OSError:
                    continue  # a client gone, or an ICMP error for an earlier answer

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()


def _listen(protocol: str, port: int) -> socket.socket:
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET6, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    if protocol == "tcp":
        sock.listen(64)
    sock.setblocking(False)
    return sock


@dataclass(frozen=True)
class Poke:
    client: str  # NS/POD
    server: str
    protocol: str
    port: int
    allowed: bool  # upstream's expectation

    def __str__(self) -> str:
        return (f"{self.client} → {self.server} {self.protocol}/{self.port} "
                f"(upstream expects {'allowed' if self.allowed else 'denied'})")


@dataclass
class Conformance:
    """The lab with the world, servers in every pod, and what upstream's subtests do to it."""

    lab: Lab
    client: ControllerClient
    pods: dict[str, dict[str, Any]]  # NS/POD → the workload as stored (status: netns, ips)
    applied: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    labelled: set[str] = field(default_factory=set)
    traced: list[tuple[Poke, TraceResult]] = field(default_factory=list)  # every poke and its trace
    # The last batch with a real denied poke: the flow sequence number before it, and its denied pokes.
    last_denials: tuple[int, list[tuple[Poke, TraceResult]]] | None = None

    # ------------------------------------------------------------------ objects

    def write(self, docs: list[dict[str, Any]]) -> None:
        result = self.client.apply(docs, message="conformance")
        wait_for_revision(self.client, result["revision"], APPLY_TIMEOUT)
        for doc in docs:
            if doc["kind"] != "Namespace":
                self.applied[_key(doc)] = copy.deepcopy(doc)

    def remove(self, keys: list[tuple[str, str, str]]) -> None:
        for kind, namespace, name in keys:  # one by one: a delete is all or nothing, and one may be gone
            try:
                result = self.client.delete([{"kind": kind, "namespace": namespace or None, "name": name}])
            except Exception:  # noqa: BLE001 - already gone (a subtest deleted it): nothing to undo
                continue
            wait_for_revision(self.client, result["revision"], APPLY_TIMEOUT)
            self.applied.pop((kind, namespace, name), None)

    def reset(self) -> None:
        """Upstream's cleanup after a test: its fixture objects deleted, namespace labels back."""
        self.remove(list(self.applied))
        self.last_denials = None
        if self.labelled:
            self.write([namespace_doc(h, {"conformance-house": h}) for h in HOUSES if ns(h) in self.labelled])
            self.labelled.clear()

    def policy(self, name: str) -> dict[str, Any]:
        found = [d for (kind, _, n), d in self.applied.items() if n == name and kind != "NetworkPolicy"]
        assert len(found) == 1, f"no single applied cluster policy named {name!r}"
        return copy.deepcopy(found[0])

    # ------------------------------------------------------------------ the steps of a subtest

    def run_steps(self, steps: list[dict[str, Any]], where: str) -> list[str]:
        """Run a subtest's steps in order, consecutive pokes side by side; its failures, as text."""
        failures: list[str] = []
        batch: list[Poke] = []
        for step in [*steps, {"end": None}]:
            (kind, args), = step.items()
            if kind == "poke":
                batch.append(Poke(args["from"], args["to"], args["protocol"], args["port"], args["allowed"]))
                continue
            if batch:
                failures += [f"{where}: {f}" for f in self.check(batch)]
                batch = []
            if kind != "end":
                self.mutate(kind, args)
        return failures

    def mutate(self, kind: str, args: dict[str, Any]) -> None:
        if kind == "namespaceLabels":
            house = args["namespace"].removeprefix("network-policy-conformance-")
            self.write([namespace_doc(house, args["labels"])])
            self.labelled.add(args["namespace"])
            return
        if kind == "deleteNetworkPolicy":
            self.remove([("NetworkPolicy", args["namespace"], args["name"])])
            return
        doc = self.policy(args["policy"])
        spec = doc["spec"]
        if kind == "swap":
            rules, (i, j) = spec[args["direction"]], args["rules"]
            rules[i], rules[j] = rules[j], rules[i]
        elif kind == "priority":
            spec["priority"] = args["value"]
        elif kind == "action":
            spec[args["direction"]][args["rule"]]["action"] = args["value"]
        elif kind == "namedPort":
            spec[args["direction"]][args["rule"]]["protocols"] = [{"destinationNamedPort": args["port"]}]
        elif kind == "prependPodNetworks":
            mask = "/32"  # the lab gives pods IPv4 first, as a v4 or dual-stack cluster's PodIP
            networks = [self.ip(p) + mask for p in args["pods"]]
            spec["egress"] = [{"name": args["name"], "action": args["action"], "to": [{"networks": networks}]},
                              *spec.get("egress", [])]
        else:
            raise AssertionError(f"a step this harness does not know: {kind}")
        self.write([doc])

    # ------------------------------------------------------------------ pokes and trace

    def ip(self, pod: str) -> str:
        return next(ip for ip in self.pods[pod]["status"]["ips"] if ":" not in ip)

    def check(self, pokes: list[Poke]) -> list[str]:
        """Poke with real packets (TCP, UDP) side by side; trace every poke; what disagrees with upstream."""
        failures = []
        state, programs = self.client.snapshot_state(), {}  # type: ignore[var-annotated]
        real = [p for p in pokes if p.protocol in KERNEL_PROTOCOLS]
        flow_mark = self.client.flows(limit=1)["lastSeq"]
        with ThreadPoolExecutor(max_workers=max(1, len(real))) as pool:
            seen = dict(zip(real, pool.map(self.poke, real)))
        denials = []
        for p in pokes:
            traced = trace_flow(state, Flow(_pod_key(p.client), _pod_key(p.server), p.protocol,  # type: ignore[arg-type]
                                            p.port, 4), programs=programs)
            rule = traced.deciding_rule or "-"
            self.traced.append((p, traced))
            if p in seen and not p.allowed:
                denials.append((p, traced))
            expected = "allowed" if p.allowed else "denied"
            if p in seen and seen[p][0] != expected:
                failures.append(f"{p}: the kernel said {seen[p][0]} ({seen[p][1]}); trace names {rule}")
            if _trace_word(traced) != expected:
                failures.append(f"{p}: trace says {traced.verdict} by {rule}")
            elif not p.allowed and not self.names_an_upstream_rule(rule):
                failures.append(f"{p}: denied, but trace names {rule!r}, not a rule of the applied policies")
        if denials:
            self.last_denials = (flow_mark, denials)
        return failures

    def flows_name_the_deciding_rules(self) -> list[str]:
        """The agents' flow records of the last real denials name the rule trace named; what does not."""
        if self.last_denials is None:
            return []
        mark, denials = self.last_denials
        wanted = {(p.client, p.server, p.port): traced.deciding_rule for p, traced in denials}
        deadline = time.monotonic() + FLOW_WAIT
        while True:
            records = self.client.flows(since_seq=mark, denied=True, limit=1000)["records"]
            seen = {(r["src"]["workload"], r["dst"]["workload"], r["dst"]["port"]): r["rule"] for r in records}
            missing = [f"{c} → {s}:{port}: trace names {rule}, flows {seen.get((c, s, port), 'have no record')}"
                       for (c, s, port), rule in wanted.items() if seen.get((c, s, port)) != rule]
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.1)

    def poke(self, p: Poke) -> tuple[str, str]:
        exchange = probe_client.probe_tcp if p.protocol == "tcp" else probe_client.probe_udp
        return netns.run_in(self.pods[p.client]["status"]["netns"],
                            lambda: exchange(self.ip(p.server), p.port, POKE_TIMEOUT, None))

    def names_an_upstream_rule(self, rule: str) -> bool:
        """`POLICY/RULE` of an applied cluster policy, or the isolation deny a NetworkPolicy brings."""
        for (kind, namespace, name), doc in self.applied.items():
            if kind == "NetworkPolicy":
                if rule.startswith(f"{namespace}/default-deny/"):
                    return True
                continue
            names = [r.get("name") for d in ("ingress", "egress") for r in doc["spec"].get(d) or []]
            if any(rule == f"{name}/{n}" for n in names):
                return True
        return False


def _trace_word(traced: TraceResult) -> str:
    return "allowed" if traced.verdict == "allow" else "denied"


def _key(doc: dict[str, Any]) -> tuple[str, str, str]:
    return doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"]


def _pod_key(ref: str) -> tuple[str, str]:
    namespace, name = ref.split("/")
    return namespace, name
