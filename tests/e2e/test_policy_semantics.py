"""The policy language in the real kernel: tiers, pass, reject, log, audit, GlobalPolicy, ICMP, Tier objects.

One lab (two hypervisors) for the whole module. Every test works in namespaces
of its own (a GlobalPolicy is narrowed to its test's namespaces by a namespace
label), so the tests do not see each other's policies. Verdicts are decided by
real sockets in the workloads' namespaces (`lab.probe`): allowed, denied (no
answer: a silent drop), rejected (TCP reset or ICMP port unreachable).
Clients run on hv1 and servers on hv2, so egress and ingress are decided by two
different kernels (sem-b's client shares hv2 with the servers: one kernel, both sides).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any, Iterator

import pytest

from stockade.dataplane.nft_driver import counters_by_comment
from stockade.lab.probe import probe
from tests.e2e.conftest import Lab

pytestmark = pytest.mark.kernel

WAIT = ("--wait", "--timeout", "60")
MGMT_V4, MGMT_V6 = "198.18.30.0/24", "2001:db8:30::/64"

# Every namespace and workload of the module, created once. Native namespaces deny by default.
WORLD = """
apiVersion: stockade.io/v1
kind: Namespace
metadata: {name: sem-tiers}
---
apiVersion: stockade.io/v1
kind: Namespace
metadata: {name: sem-pass}
---
apiVersion: stockade.io/v1
kind: Namespace
metadata: {name: sem-reject}
---
apiVersion: stockade.io/v1
kind: Namespace
metadata: {name: sem-audit}
---
apiVersion: stockade.io/v1
kind: Namespace
metadata: {name: sem-a, labels: {sem-global: tenant, team: a}}
---
apiVersion: stockade.io/v1
kind: Namespace
metadata: {name: sem-b, labels: {sem-global: tenant, team: b}}
---
apiVersion: stockade.io/v1
kind: Namespace
metadata: {name: sem-c, labels: {sem-global: outsider, team: c}}
---
apiVersion: stockade.io/v1
kind: Namespace
metadata: {name: sem-infra, labels: {sem-global: infra}}
---
apiVersion: stockade.io/v1
kind: Namespace
metadata: {name: sem-icmp}
---
apiVersion: stockade.io/v1
kind: Namespace
metadata: {name: sem-tier}
""" + "".join(f"""---
apiVersion: stockade.io/v1
kind: Workload
metadata: {{name: {name}, namespace: {ns}, labels: {labels}}}
spec: {{host: {host}{', ips: ' + ips if ips else ''}}}
""" for ns, name, labels, host, ips in [
    ("sem-tiers", "client", "{role: client}", "hv1", ""),
    ("sem-tiers", "server", "{role: server}", "hv2", ""),
    ("sem-pass", "client", "{role: client}", "hv1", ""),
    ("sem-pass", "server", "{role: server}", "hv2", ""),
    ("sem-reject", "client", "{role: client}", "hv1", ""),
    ("sem-reject", "outcast", "{role: outcast}", "hv1", ""),
    ("sem-reject", "server", "{role: server}", "hv2", ""),
    ("sem-audit", "client", "{role: client}", "hv1", ""),
    ("sem-audit", "server", "{role: server}", "hv2", ""),
    ("sem-a", "a-1", "{role: app}", "hv1", ""),
    ("sem-b", "b-1", "{role: app}", "hv2", ""),
    ("sem-c", "c-1", "{role: app}", "hv1", ""),
    ("sem-infra", "dns", "{app: dns}", "hv2", ""),
    ("sem-infra", "mgmt", "{app: mgmt}", "hv2", '[198.18.30.10, "2001:db8:30::10"]'),
    ("sem-icmp", "pinger", "{role: pinger}", "hv1", ""),
    ("sem-icmp", "echo", "{role: echo}", "hv2", ""),
    ("sem-icmp", "other", "{role: other}", "hv2", ""),
    ("sem-tier", "client", "{role: client}", "hv1", ""),
    ("sem-tier", "server", "{role: server}", "hv2", ""),
])


def client_egress(ns: str, role: str = "client") -> str:
    """The clients of a test may send anything: what is tested is decided elsewhere."""
    return f"""---
apiVersion: stockade.io/v1
kind: Policy
metadata: {{name: {role}-out, namespace: {ns}}}
spec:
  appliesTo: {{selector: {{matchLabels: {{role: {role}}}}}}}
  egress: [{{id: anything, action: allow}}]
"""


@pytest.fixture(scope="module")
def world(lab: Lab) -> dict[str, dict[str, Any]]:
    """The lab with every workload of the module; workloads by `namespace/name`."""
    lab.apply_text(WORLD, *WAIT)
    items = lab.json("get", "workloads", "-A")["items"]
    return {f"{w['metadata']['namespace']}/{w['metadata']['name']}": w for w in items}


def _ip(wl: dict[str, Any], family: int) -> str:
    return next(ip for ip in wl["status"]["ips"] if ipaddress.ip_address(ip).version == family)


def seen(world: dict[str, dict[str, Any]], src: str, dst: str, protocol: str, port: int | None = None,
         family: int = 4, timeout: float = 1.0) -> str:
    """The verdict real packets get from `src` to `dst` (a server listens on the port)."""
    s, d = world[src], world[dst]
    return probe(s["status"]["netns"], d["status"]["netns"], _ip(d, family), protocol, port,
                 timeout=timeout).verdict


def trace(lab: Lab, src: str, dst: str, protocol: str, port: int | None = None,
          family: int = 4) -> dict[str, Any]:
    args = ["trace", "--from", src, "--to", dst, "--protocol", protocol, "--family", str(family)]
    if port:
        args += ["--port", str(port)]
    return lab.json(*args)


def steps(side: dict[str, Any] | None) -> list[tuple[str, str]]:
    return [(r["rule"], r["action"]) for r in (side or {}).get("rules", [])]


def kernel_listing(lab: Lab, host: str) -> dict[str, Any]:
    res = lab.nft(host, "-j", "list", "table", "inet", "stockade")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def kernel_counters(lab: Lab, host: str) -> dict[str, int]:
    """Packets per rule id, read from the hypervisor's kernel."""
    return {k: v[0] for k, v in counters_by_comment(kernel_listing(lab, host)).items()}


# ------------------------------------------------------------------ tiers

TIERS = client_egress("sem-tiers") + """---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: guard, namespace: sem-tiers}
spec:
  tier: platform
  appliesTo: {selector: {matchLabels: {role: server}}}
  ingress: [{id: no-8080, action: deny, ports: [{protocol: TCP, port: 8080}]}]
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: app, namespace: sem-tiers}
spec:
  tier: application
  order: 0                      # first of its tier, and still after every platform policy
  appliesTo: {selector: {matchLabels: {role: server}}}
  ingress:
    - id: open
      action: allow
      from: [{selector: {matchLabels: {role: client}}}]
      ports: [{protocol: TCP, port: 8080}, {protocol: TCP, port: 9090}]
"""


@pytest.fixture(scope="module")
def tiered(lab: Lab, world: dict) -> dict:
    lab.apply_text(TIERS, *WAIT)
    return world


def test_platform_tier_deny_cannot_be_overridden_by_application_allow(lab: Lab, tiered: dict) -> None:
    for family in (4, 6):
        assert seen(tiered, "sem-tiers/client", "sem-tiers/server", "tcp", 8080, family) == "denied"
    explained = trace(lab, "sem-tiers/client", "sem-tiers/server", "tcp", 8080)
    assert steps(explained["ingress"]) == [("sem-tiers/guard/no-8080", "drop")], explained


def test_application_allow_decides_where_the_platform_tier_is_silent(lab: Lab, tiered: dict) -> None:
    for family in (4, 6):
        assert seen(tiered, "sem-tiers/client", "sem-tiers/server", "tcp", 9090, family) == "allowed"
    assert steps(trace(lab, "sem-tiers/client", "sem-tiers/server", "tcp", 9090)["ingress"]) == \
        [("sem-tiers/app/open", "accept")]


# ------------------------------------------------------------------- pass

PASS = client_egress("sem-pass") + """---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: hand-over, namespace: sem-pass}
spec:
  tier: platform
  order: 10
  appliesTo: {selector: {matchLabels: {role: server}}}
  ingress: [{id: to-tenant, action: pass, ports: [{protocol: TCP, port: 8080, endPort: 8083}]}]
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: guard, namespace: sem-pass}
spec:
  tier: platform
  order: 20                     # after hand-over in the same tier: skipped when it passed
  appliesTo: {selector: {matchLabels: {role: server}}}
  ingress: [{id: no-tcp, action: deny, ports: [{protocol: TCP}]}]
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: app, namespace: sem-pass}
spec:
  tier: application
  appliesTo: {selector: {matchLabels: {role: server}}}
  ingress:
    - {id: allow-8080, action: allow, ports: [{protocol: TCP, port: 8080}]}
    - {id: deny-8081, action: deny, ports: [{protocol: TCP, port: 8081}]}
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: fallback, namespace: sem-pass}
spec:
  tier: baseline
  appliesTo: {selector: {matchLabels: {role: server}}}
  ingress: [{id: anything, action: allow}]
"""


@pytest.fixture(scope="module")
def passing(lab: Lab, world: dict) -> dict:
    lab.apply_text(PASS, *WAIT)
    return world


def test_pass_hands_the_decision_to_the_application_tier(lab: Lab, passing: dict) -> None:
    # 8080: the application tier allows. 8081: it denies, although the baseline would allow.
    assert seen(passing, "sem-pass/client", "sem-pass/server", "tcp", 8080) == "allowed"
    assert seen(passing, "sem-pass/client", "sem-pass/server", "tcp", 8081) == "denied"
    assert steps(trace(lab, "sem-pass/client", "sem-pass/server", "tcp", 8081)["ingress"]) == \
        [("sem-pass/hand-over/to-tenant", "pass"), ("sem-pass/app/deny-8081", "drop")]


def test_pass_skips_the_remaining_policies_of_its_tier(lab: Lab, passing: dict) -> None:
    # guard (platform, after hand-over) denies all TCP: it does for 8090, which is not passed...
    assert seen(passing, "sem-pass/client", "sem-pass/server", "tcp", 8090) == "denied"
    # ...but not for 8082, which hand-over passed: the application tier is silent, the baseline allows.
    assert seen(passing, "sem-pass/client", "sem-pass/server", "tcp", 8082, family=6) == "allowed"
    assert steps(trace(lab, "sem-pass/client", "sem-pass/server", "tcp", 8082)["ingress"]) == \
        [("sem-pass/hand-over/to-tenant", "pass"), ("sem-pass/fallback/anything", "accept")]


# ----------------------------------------------------------------- reject

REJECT = client_egress("sem-reject") + client_egress("sem-reject", "outcast") + """---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: server-in, namespace: sem-reject}
spec:
  appliesTo: {selector: {matchLabels: {role: server}}}
  ingress:
    - {id: refuse-outcast, action: reject, from: [{selector: {matchLabels: {role: outcast}}}]}
    - {id: refuse-tcp, action: reject, ports: [{protocol: TCP, port: 7001}]}
    - {id: refuse-udp, action: reject, ports: [{protocol: UDP, port: 7002}]}
    - {id: drop-tcp, action: deny, ports: [{protocol: TCP, port: 7003}]}
    - {id: drop-udp, action: deny, ports: [{protocol: UDP, port: 7004}]}
    - {id: open, action: allow}
"""


@pytest.fixture(scope="module")
def rejecting(lab: Lab, world: dict) -> dict:
    lab.apply_text(REJECT, *WAIT)
    return world


# The probe starts a server on the port in every case, so "rejected" is the firewall's doing,
# not a closed port; 7005 (allowed) shows that the servers answer.
@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("protocol,port,expected", [
    ("tcp", 7001, "rejected"),   # TCP reset: connection refused
    ("udp", 7002, "rejected"),   # ICMP(v6) port unreachable: connection refused on the UDP socket
    ("tcp", 7003, "denied"),     # silent drop: the client times out
    ("udp", 7004, "denied"),
    ("tcp", 7005, "allowed"),
    ("udp", 7005, "allowed"),
])
def test_reject_is_refused_and_deny_times_out(rejecting: dict, family: int, protocol: str, port: int,
                                              expected: str) -> None:
    assert seen(rejecting, "sem-reject/client", "sem-reject/server", protocol, port, family) == expected


@pytest.mark.parametrize("family", [4, 6])
def test_reject_without_ports_refuses_tcp_udp_and_ping(rejecting: dict, family: int) -> None:
    for protocol, port in (("tcp", 7005), ("udp", 7005), ("icmp", None)):
        got = seen(rejecting, "sem-reject/outcast", "sem-reject/server", protocol, port, family)
        assert got == "rejected", (protocol, family, got)


# ----------------------------------------------------------- log and audit

def audit_docs(mode: str) -> str:
    """`trial` would deny 6000 and 6001; `web` logs 6000 and serves both. Only `mode` varies."""
    return client_egress("sem-audit") + f"""---
apiVersion: stockade.io/v1
kind: Policy
metadata: {{name: trial, namespace: sem-audit}}
spec:
  order: 10
  mode: {mode}
  appliesTo: {{selector: {{matchLabels: {{role: server}}}}}}
  ingress:
    - {{id: block-6000, action: deny, ports: [{{protocol: TCP, port: 6000}}]}}
    - {{id: block-6001, action: deny, ports: [{{protocol: TCP, port: 6001}}]}}
""" + """---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: web, namespace: sem-audit}
spec:
  order: 20
  appliesTo: {selector: {matchLabels: {role: server}}}
  ingress:
    # The client is in both peers (its selector and the lab's whole workload range):
    # the packet must still be logged and counted once.
    - id: see-6000
      action: log
      from: [{selector: {matchLabels: {role: client}}}, {cidr: 198.18.0.0/17}, {cidr: "2001:db8::/33"}]
      ports: [{protocol: TCP, port: 6000}]
    - id: serve
      action: allow
      ports: [{protocol: TCP, port: 6000}, {protocol: TCP, port: 6001}]
"""


@pytest.fixture
def audited(lab: Lab, world: dict) -> dict:
    lab.apply_text(audit_docs("audit"), *WAIT)
    return world


def test_log_and_audit_rules_are_counted_once_by_id_and_do_not_change_the_verdict(lab: Lab, audited: dict) -> None:
    before = kernel_counters(lab, "hv2")  # the server's host decides ingress
    assert seen(audited, "sem-audit/client", "sem-audit/server", "tcp", 6000) == "allowed"
    after = kernel_counters(lab, "hv2")
    moved = {rule: after.get(rule, 0) - before.get(rule, 0) for rule in after}
    # One probe, one new connection: its first packet went through exactly these rules, once each.
    assert moved["sem-audit/trial/block-6000"] == 1, moved
    assert moved["sem-audit/web/see-6000"] == 1, moved
    assert moved["sem-audit/web/serve"] == 1, moved
    assert moved["sem-audit/trial/block-6001"] == 0, moved
    assert moved.get("sem-audit/default-deny/ingress", 0) == 0, moved


def test_log_and_audit_kernel_rules_log_with_their_rule_ids(lab: Lab, audited: dict) -> None:
    prefixes: dict[str, set[str]] = {}
    for item in kernel_listing(lab, "hv2")["nftables"]:
        rule = item.get("rule") or {}
        for expr in rule.get("expr", []):
            if isinstance(expr, dict) and "log" in expr:
                prefixes.setdefault(rule.get("comment", ""), set()).add(expr["log"]["prefix"].strip())
    assert prefixes["sem-audit/trial/block-6000"] == {"stk would-deny sem-audit/trial/block-6000"}
    assert prefixes["sem-audit/web/see-6000"] == {"stk log sem-audit/web/see-6000"}
    # With flow logging (the agent's default), an enforced allow logs its verdict too.
    assert prefixes["sem-audit/web/serve"] == {"stk allow sem-audit/web/serve"}


def test_trace_lists_audit_and_log_rules_before_the_deciding_rule(lab: Lab, audited: dict) -> None:
    for family in (4, 6):
        explained = trace(lab, "sem-audit/client", "sem-audit/server", "tcp", 6000, family)
        assert explained["verdict"] == "allow", explained
        assert steps(explained["ingress"]) == [
            ("sem-audit/trial/block-6000", "would-deny"),
            ("sem-audit/web/see-6000", "log"),
            ("sem-audit/web/serve", "accept"),
        ], explained


def test_switching_audit_policy_to_enforce_denies(lab: Lab, audited: dict) -> None:
    assert seen(audited, "sem-audit/client", "sem-audit/server", "tcp", 6001) == "allowed"
    try:
        lab.apply_text(audit_docs("enforce"), *WAIT)
        assert seen(audited, "sem-audit/client", "sem-audit/server", "tcp", 6001) == "denied"
        assert seen(audited, "sem-audit/client", "sem-audit/server", "tcp", 6000, family=6) == "denied"
        assert steps(trace(lab, "sem-audit/client", "sem-audit/server", "tcp", 6000)["ingress"]) == \
            [("sem-audit/trial/block-6000", "drop")]
    finally:
        lab.apply_text(audit_docs("audit"), *WAIT)


# ----------------------------------------------------------- GlobalPolicy

GLOBAL = f"""
apiVersion: stockade.io/v1
kind: GlobalPolicy
metadata: {{name: sem-dns-and-mgmt}}
spec:
  tier: platform
  appliesTo: {{namespaceSelector: {{matchLabels: {{sem-global: tenant}}}}}}   # sem-a and sem-b, not sem-c
  egress:
    - id: dns
      action: allow
      to: [{{selector: {{matchLabels: {{app: dns}}}}, namespaceSelector: {{matchLabels: {{sem-global: infra}}}}}}]
      ports: [{{protocol: UDP, port: 53}}]
    - id: no-mgmt
      action: deny
      to: [{{cidr: {MGMT_V4}}}, {{cidr: "{MGMT_V6}"}}]
---
apiVersion: stockade.io/v1
kind: GlobalPolicy
metadata: {{name: sem-dns-server}}
spec:
  tier: platform
  appliesTo: {{selector: {{matchLabels: {{app: dns}}}}, namespaceSelector: {{matchLabels: {{sem-global: infra}}}}}}
  ingress:
    - id: from-tenants
      action: allow
      from: [{{namespaceSelector: {{matchLabels: {{sem-global: tenant}}}}}}]
      ports: [{{protocol: UDP, port: 53}}]
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {{name: mgmt-in, namespace: sem-infra}}
spec:                             # the infra team opens its management host to everyone...
  appliesTo: {{selector: {{matchLabels: {{app: mgmt}}}}}}
  ingress: [{{id: anyone, action: allow}}]
""" + "".join(client_egress(ns, "app") for ns in ("sem-a", "sem-b", "sem-c"))  # ...and tenants send anything


@pytest.fixture(scope="module")
def global_policy(lab: Lab, world: dict) -> dict:
    lab.apply_text(GLOBAL, *WAIT)
    return world


def test_global_policy_lets_workloads_of_several_namespaces_reach_dns(global_policy: dict) -> None:
    for src in ("sem-a/a-1", "sem-b/b-1"):
        for family in (4, 6):
            assert seen(global_policy, src, "sem-infra/dns", "udp", 53, family) == "allowed", (src, family)
    assert seen(global_policy, "sem-a/a-1", "sem-infra/dns", "udp", 54) == "denied"   # only port 53
    # the DNS server's peer namespaceSelector admits tenants only
    assert seen(global_policy, "sem-c/c-1", "sem-infra/dns", "udp", 53) == "denied"


def test_global_platform_deny_of_management_range_beats_tenant_allows(lab: Lab, global_policy: dict) -> None:
    for src in ("sem-a/a-1", "sem-b/b-1"):
        for family in (4, 6):
            assert seen(global_policy, src, "sem-infra/mgmt", "tcp", 22, family) == "denied", (src, family)
    explained = trace(lab, "sem-b/b-1", "sem-infra/mgmt", "tcp", 22)
    assert steps(explained["egress"]) == [("sem-dns-and-mgmt/no-mgmt", "drop")], explained


def test_global_policy_namespace_selector_narrows_applies_to(global_policy: dict) -> None:
    # sem-c is not a tenant: the GlobalPolicy does not apply to c-1, whose own allow decides
    for family in (4, 6):
        assert seen(global_policy, "sem-c/c-1", "sem-infra/mgmt", "tcp", 22, family) == "allowed"


# ------------------------------------------------------------------- ICMP

ICMP = client_egress("sem-icmp", "pinger") + """---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: echo-in, namespace: sem-icmp}
spec:
  appliesTo: {selector: {matchLabels: {role: echo}}}
  ingress:
    - id: ping
      action: allow
      from: [{selector: {matchLabels: {role: pinger}}}]
      ports: [{protocol: ICMP, type: 8}, {protocol: ICMPv6, type: 128}]
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: other-in, namespace: sem-icmp}
spec:
  appliesTo: {selector: {matchLabels: {role: other}}}
  ingress:
    - id: not-ping           # timestamp request and echo reply: other types than echo request
      action: allow
      from: [{selector: {matchLabels: {role: pinger}}}]
      ports: [{protocol: ICMP, type: 13}, {protocol: ICMPv6, type: 129}]
"""


@pytest.fixture(scope="module")
def icmp(lab: Lab, world: dict) -> dict:
    lab.apply_text(ICMP, *WAIT)
    return world


@pytest.mark.parametrize("family", [4, 6])
def test_icmp_echo_request_type_allows_ping(icmp: dict, family: int) -> None:
    assert seen(icmp, "sem-icmp/pinger", "sem-icmp/echo", "icmp", family=family) == "allowed"


@pytest.mark.parametrize("family", [4, 6])
def test_icmp_rule_for_another_type_does_not_allow_ping(icmp: dict, family: int) -> None:
    assert seen(icmp, "sem-icmp/pinger", "sem-icmp/other", "icmp", family=family) == "denied"


# ------------------------------------------------------------------- Tier

def tier_doc(order: int) -> str:
    return f"""
apiVersion: stockade.io/v1
kind: Tier
metadata: {{name: sem-emergency}}
spec: {{order: {order}}}
"""


TIER_BASE = client_egress("sem-tier") + """---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: platform-open, namespace: sem-tier}
spec:
  tier: platform
  appliesTo: {selector: {matchLabels: {role: server}}}
  ingress: [{id: web, action: allow, ports: [{protocol: TCP, port: 5000}]}]
"""
QUARANTINE = """
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: quarantine, namespace: sem-tier}
spec:
  tier: sem-emergency
  appliesTo: {selector: {matchLabels: {role: server}}}
  ingress: [{id: cut-off, action: deny}]
"""


@pytest.fixture
def emergency_tier(lab: Lab, world: dict) -> Iterator[dict]:
    lab.apply_text(tier_doc(50) + "---\n" + TIER_BASE, *WAIT)
    try:
        yield world
    finally:
        lab.cli("delete", "policy", "quarantine", "-n", "sem-tier", check=False)
        lab.cli("delete", "tier", "sem-emergency", check=False)


def test_user_tier_ordered_before_platform_decides_first(lab: Lab, emergency_tier: dict) -> None:
    assert seen(emergency_tier, "sem-tier/client", "sem-tier/server", "tcp", 5000) == "allowed"
    lab.apply_text(QUARANTINE, *WAIT)
    assert seen(emergency_tier, "sem-tier/client", "sem-tier/server", "tcp", 5000) == "denied"
    assert steps(trace(lab, "sem-tier/client", "sem-tier/server", "tcp", 5000)["ingress"]) == \
        [("sem-tier/quarantine/cut-off", "drop")]
    # The same tier ordered after platform (100): the platform allow now decides first.
    lab.apply_text(tier_doc(150), *WAIT)
    assert seen(emergency_tier, "sem-tier/client", "sem-tier/server", "tcp", 5000) == "allowed"
