"""A synthetic desired state of N workloads and P policies, deterministic from a seed.

The shape imitates a multi-tenant cloud: tenants (namespaces of ~100 workloads,
labelled with a team), workloads with app/tier/env labels spread over hosts of
20 workloads each, per-tenant groups by selector and by external CIDR, and
policies that select by group or selector and allow from groups, selectors
across namespaces (namespaceSelector) and CIDRs, plus two global policies in
the platform tier (the same two at every size).

Two *bench workloads* (`bench/client` on host `bh1`, `bench/server` on host
`bh2`) and the policy that lets the client reach the server on TCP 80 are part
of every state, so the packet benchmark measures the same flow against policies
of any size; most of a large state is not about them. Global policies still
select them, as a real platform policy would.

Address plan (only 198.18.0.0/15 and 2001:db8::/32):
- bench workloads: 198.18.0.10 and 198.18.0.11;
- synthetic workload i: 198.18.1.0 + i and 2001:db8:1::1 + i; up to 10,000 workloads
  this stays inside 198.18.0.0/18, below the lab's IPAM pool (198.18.64.0/18);
- external CIDRs of groups and rules: 198.19.224.0/19.

Pure: no I/O; `documents()` returns plain dicts as users write them.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass
from typing import Any

from stockade.model.kinds import parse_documents
from stockade.model.state import DesiredState

Doc = dict[str, Any]

API = "stockade.io/v1"
WORKLOADS_PER_NAMESPACE = 100
WORKLOADS_PER_HOST = 20
APPS_PER_NAMESPACE = 10
TEAMS = 10
TIERS = ("web", "app", "db")
BENCH_NS = "bench"
BENCH_CLIENT = ("bench", "client")
BENCH_SERVER = ("bench", "server")
BENCH_HOSTS = ("bh1", "bh2")
BENCH_IPS = ("198.18.0.10", "198.18.0.11")
BENCH_PORT = 80
GLOBAL_POLICIES = 2
V4_BASE = int(ipaddress.IPv4Address("198.18.1.0"))
V6_BASE = int(ipaddress.IPv6Address("2001:db8:1::1"))
V4_LIMIT = int(ipaddress.IPv4Address("198.19.223.255"))  # below the external CIDRs


@dataclass(frozen=True)
class Size:
    workloads: int
    policies: int

    @property
    def namespaces(self) -> int:
        return max(1, -(-self.workloads // WORKLOADS_PER_NAMESPACE))

    @property
    def global_policies(self) -> int:
        # A fixed number at every size: global policies select the bench pair (as a platform
        # policy would), so more of them at 10,000 workloads would put more policy *about these
        # two* on their path, and the packet benchmark compares policy size, not that.
        return GLOBAL_POLICIES


def workload_ips(i: int) -> list[str]:
    v4 = V4_BASE + i
    if v4 > V4_LIMIT:
        raise ValueError(f"workload {i}: out of synthetic IPv4 addresses")
    return [str(ipaddress.IPv4Address(v4)), str(ipaddress.IPv6Address(V6_BASE + i))]


def host_of(i: int) -> str:
    return f"node-{i // WORKLOADS_PER_HOST}"


def ns_name(k: int) -> str:
    return f"t{k:05d}"


def _ext_cidr(k: int) -> tuple[str, str]:
    """A /24 and a /28 inside it, in 198.19.224.0/19, for tenant k."""
    net = ipaddress.IPv4Network(f"198.19.{224 + (k // 256) % 32}.{0}/24")
    base = int(net.network_address)
    sub = ipaddress.IPv4Network((base + (k % 16) * 16, 28))
    return str(net), str(sub)


def bench_documents() -> list[Doc]:
    """The two bench workloads and the policy between them (client → server TCP 80)."""
    client, server = BENCH_CLIENT[1], BENCH_SERVER[1]
    return [
        {"apiVersion": API, "kind": "Namespace", "metadata": {"name": BENCH_NS, "labels": {"team": "team0"}},
         "spec": {"defaultAction": "deny"}},
        {"apiVersion": API, "kind": "Workload",
         "metadata": {"name": client, "namespace": BENCH_NS, "labels": {"app": "bench-client", "env": "prod"}},
         "spec": {"host": BENCH_HOSTS[0], "ips": [BENCH_IPS[0]]}},
        {"apiVersion": API, "kind": "Workload",
         "metadata": {"name": server, "namespace": BENCH_NS, "labels": {"app": "bench-server", "env": "prod"}},
         "spec": {"host": BENCH_HOSTS[1], "ips": [BENCH_IPS[1]]}},
        {"apiVersion": API, "kind": "Group", "metadata": {"name": "clients", "namespace": BENCH_NS},
         "spec": {"selector": {"matchLabels": {"app": "bench-client"}}}},
        {"apiVersion": API, "kind": "Group", "metadata": {"name": "servers", "namespace": BENCH_NS},
         "spec": {"selector": {"matchLabels": {"app": "bench-server"}}}},
        {"apiVersion": API, "kind": "Policy", "metadata": {"name": "client", "namespace": BENCH_NS},
         "spec": {"order": 100, "appliesTo": {"group": "clients"},
                  "egress": [{"id": "to-server", "action": "allow", "to": [{"group": "servers"}],
                              "ports": [{"protocol": "TCP", "port": BENCH_PORT}]}]}},
        {"apiVersion": API, "kind": "Policy", "metadata": {"name": "server", "namespace": BENCH_NS},
         "spec": {"order": 100, "appliesTo": {"group": "servers"},
                  "ingress": [{"id": "from-client", "action": "allow", "from": [{"group": "clients"}],
                               "ports": [{"protocol": "TCP", "port": BENCH_PORT}]}]}},
    ]


def _workload(i: int, rng: random.Random) -> Doc:
    k = i // WORKLOADS_PER_NAMESPACE
    labels = {"app": f"a{rng.randrange(APPS_PER_NAMESPACE)}", "tier": TIERS[i % 3],
              "env": "prod" if rng.random() < 0.7 else "dev"}
    spec: Doc = {"host": host_of(i), "ips": workload_ips(i)}
    if i % 3 == 0:
        spec["ports"] = [{"name": "http", "protocol": "TCP", "port": 8080}]
    return {"apiVersion": API, "kind": "Workload", "metadata": {"name": f"w{i:06d}", "namespace": ns_name(k),
                                                                "labels": labels}, "spec": spec}


def _groups(k: int) -> list[Doc]:
    ns = ns_name(k)
    out: list[Doc] = []
    for a in range(APPS_PER_NAMESPACE):
        out.append({"apiVersion": API, "kind": "Group", "metadata": {"name": f"a{a}", "namespace": ns},
                    "spec": {"selector": {"matchLabels": {"app": f"a{a}"}}}})
    for t in TIERS:
        out.append({"apiVersion": API, "kind": "Group", "metadata": {"name": t, "namespace": ns},
                    "spec": {"selector": {"matchLabels": {"tier": t}}}})
    cidr, exc = _ext_cidr(k)
    out.append({"apiVersion": API, "kind": "Group", "metadata": {"name": "ext", "namespace": ns},
                "spec": {"cidrs": [cidr], "except": [exc]}})
    return out


def _policy(p: int, size: Size, rng: random.Random) -> Doc:
    k = p % size.namespaces
    ns = ns_name(k)
    app = f"a{rng.randrange(APPS_PER_NAMESPACE)}"
    tier = TIERS[p % 3]
    if p % 2 == 0:
        applies: Doc = {"group": app}
    else:
        applies = {"selector": {"matchLabels": {"tier": tier},
                                "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]}}
    other = TIERS[(p + 1) % 3]
    cidr, exc = _ext_cidr(rng.randrange(size.namespaces))
    ingress = [
        {"id": "from-group", "action": "allow", "from": [{"group": other}],
         "ports": [{"protocol": "TCP", "port": 8000 + p % 1000}]},
        {"id": "from-team", "action": "allow",
         "from": [{"selector": {"matchLabels": {"app": f"a{rng.randrange(APPS_PER_NAMESPACE)}"}},
                   "namespaceSelector": {"matchLabels": {"team": f"team{rng.randrange(TEAMS)}"}}}],
         "ports": [{"protocol": "TCP", "port": 9000, "endPort": 9100}]},
        {"id": "from-ext", "action": "allow", "from": [{"cidr": cidr, "except": [exc]}, {"group": "ext"}],
         "ports": [{"protocol": "TCP", "port": 443}]},
    ]
    if p % 5 == 0:
        ingress.insert(0, {"id": "deny-dev", "action": "deny",
                           "from": [{"selector": {"matchLabels": {"env": "dev"}}}]})
    egress = [{"id": "to-next", "action": "allow", "to": [{"group": other}],
               "ports": [{"protocol": "TCP", "port": "http"}, {"protocol": "UDP", "port": 53}]}]
    return {"apiVersion": API, "kind": "Policy", "metadata": {"name": f"p{p:05d}", "namespace": ns},
            "spec": {"order": 100 + p % 50, "appliesTo": applies, "ingress": ingress, "egress": egress}}


def _global_policy(g: int) -> Doc:
    return {"apiVersion": API, "kind": "GlobalPolicy", "metadata": {"name": f"platform-{g:03d}"},
            "spec": {"tier": "platform", "order": 100 + g,
                     "appliesTo": {"selector": {"matchLabels": {"env": "prod"}}},
                     "ingress": [{"id": "monitoring", "action": "allow",
                                  "from": [{"cidr": f"198.19.{250 + g % 4}.0/24"}],
                                  "ports": [{"protocol": "TCP", "port": 9100 + g}]},
                                 {"id": "no-telnet", "action": "deny",
                                  "ports": [{"protocol": "TCP", "port": 23}]}],
                     "egress": [{"id": "dns", "action": "pass",
                                 "ports": [{"protocol": "UDP", "port": 53}]}]}}


def documents(workloads: int, policies: int, seed: int = 8) -> list[Doc]:
    """Namespaces, workloads, groups, policies and global policies, in apply order (what others
    refer to first), bench documents included. `workloads`/`policies` count the synthetic ones."""
    size = Size(workloads, policies)
    rng = random.Random(seed)
    docs: list[Doc] = []
    for k in range(size.namespaces):
        docs.append({"apiVersion": API, "kind": "Namespace",
                     "metadata": {"name": ns_name(k), "labels": {"team": f"team{k % TEAMS}"}},
                     "spec": {"defaultAction": "deny"}})
    bench = bench_documents()
    docs.append(bench[0])
    docs += [_workload(i, rng) for i in range(workloads)]
    docs += [d for d in bench[1:] if d["kind"] == "Workload"]
    for k in range(size.namespaces):
        docs += _groups(k)
    docs += [d for d in bench if d["kind"] == "Group"]
    docs += [_policy(p, size, rng) for p in range(policies)]
    docs += [_global_policy(g) for g in range(size.global_policies)]
    docs += [d for d in bench if d["kind"] == "Policy"]
    return docs


def state(workloads: int, policies: int, seed: int = 8, revision: int = 1) -> DesiredState:
    """The synthetic documents as a DesiredState (parsed exactly as the controller parses input)."""
    return DesiredState.from_objects(revision, parse_documents(documents(workloads, policies, seed)))


def batches(docs: list[Doc], size: int = 2000) -> list[list[Doc]]:
    """Apply batches of at most `size` objects (the API's limit per request is larger, but
    requests this size stay well under its body limit); order is kept, so references resolve."""
    return [docs[i:i + size] for i in range(0, len(docs), size)]
