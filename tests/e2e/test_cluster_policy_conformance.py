"""Upstream's ClusterNetworkPolicy conformance, transcribed (issue 17): real packets in the lab.

The world of kubernetes-sigs/network-policy-api `conformance/base/manifests.yaml`: five
namespaces labelled `conformance-house: <house>`, two pods each (`harry-potter-0/1` in
gryffindor, `draco-malfoy-0/1` in slytherin, `cedric-diggory-0/1` in hufflepuff,
`luna-lovegood-0/1` in ravenclaw, `centaur-0/1` in forbidden-forrest), serving TCP 80 (`web`)
and 8080, UDP 53 (`dns`) and 5353; namespaces allow until selected, as Kubernetes'. The pods
are spread over two hypervisors.

Transcribed here, each subtest with upstream's clients, servers, ports and expected verdicts:
- `CNPAdminTierIntegration` (conformance/tests/admin-network-policy-standard-integration.go,
  fixture api_integration/standard-anp-np-banp.yaml): an admin policy, a NetworkPolicy and a
  baseline policy on the same traffic;
- `CNPAdminTierIngressTCP` (admin-network-policy-standard-ingress-tcp-rules.go, fixture
  admin_tier/standard-ingress-tcp-rules.yaml): rule order, ports, Accept/Deny/Pass. A denied poke is a timeout (deny drops), never a reject.
`stockade trace` names the upstream policy and rule that decided.
"""

from __future__ import annotations

import copy
from typing import Any, Iterator

import pytest
import yaml

from tests.e2e.conftest import Lab, make_lab

pytestmark = pytest.mark.kernel

HOUSES = {"gryffindor": "harry-potter", "slytherin": "draco-malfoy", "hufflepuff": "cedric-diggory",
          "ravenclaw": "luna-lovegood", "forbidden-forrest": "centaur"}


def ns(house: str) -> str:
    return f"network-policy-conformance-{house}"


def world() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for i, (house, pod) in enumerate(HOUSES.items()):
        docs.append({"apiVersion": "stockade.io/v1", "kind": "Namespace",
                     "metadata": {"name": ns(house), "labels": {"conformance-house": house}},
                     "spec": {"defaultAction": "allowUntilSelected"}})
        for n in (0, 1):
            docs.append({"apiVersion": "stockade.io/v1", "kind": "Workload",
                         "metadata": {"name": f"{pod}-{n}", "namespace": ns(house),
                                      "labels": {"conformance-house": house}},
                         "spec": {"host": f"hv{(i + n) % 2 + 1}",
                                  "ports": [{"name": "web", "protocol": "TCP", "port": 80},
                                            {"name": "dns", "protocol": "UDP", "port": 53}]}})
    return docs


def house_peer(house: str) -> dict[str, Any]:
    return {"namespaces": {"matchLabels": {"conformance-house": house}}}


# The fixture's three objects, as upstream's YAML has them.
PASS_EXAMPLE = {
    "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
    "metadata": {"name": "pass-example"},
    "spec": {"tier": "Admin", "priority": 10, "subject": house_peer("gryffindor"),
             "ingress": [{"name": "deny-all-ingress-from-slytherin", "action": "Deny", "from": [house_peer("slytherin")]}],
             "egress": [{"name": "deny-all-egress-to-slytherin", "action": "Deny", "to": [house_peer("slytherin")]}]}}
NETPOL = {
    "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
    "metadata": {"name": "allow-gress-from-to-slytherin-to-gryffindor", "namespace": ns("gryffindor")},
    "spec": {"podSelector": None, "policyTypes": ["Ingress", "Egress"],
             "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"conformance-house": "slytherin"}}}]}],
             "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"conformance-house": "slytherin"}}}]}]}}
BASELINE = copy.deepcopy(PASS_EXAMPLE)
BASELINE["metadata"]["name"] = "default"
BASELINE["spec"]["tier"] = "Baseline"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    for lab in make_lab(tmp_path_factory.mktemp("cnplab"), 2):
        lab.apply_text(yaml.safe_dump_all(world()), "--wait", "--timeout", "60")
        yield lab


def apply(lab: Lab, *docs: dict[str, Any]) -> None:
    netpol_docs = [{**d, "spec": {**d["spec"], "podSelector": {}}} if d["kind"] == "NetworkPolicy" and
                   d["spec"]["podSelector"] is None else d for d in docs]  # `podSelector:` (null) is {} to kubectl
    lab.apply_text(yaml.safe_dump_all(netpol_docs), "--wait", "--timeout", "60")


def poke(lab: Lab, client: str, server: str, port: int) -> str:
    """Upstream's PokeServer: a TCP connection from client to server; True → allowed, False → a timeout."""
    return lab.json("probe", "--from", client, "--to", server, "--protocol", "tcp", "--port", str(port))["verdict"]


def pod(house: str, n: int) -> str:
    return f"{ns(house)}/{HOUSES[house]}-{n}"


def decided_by(lab: Lab, client: str, server: str, port: int) -> list[str]:
    traced = lab.json("trace", "--from", client, "--to", server, "--protocol", "tcp", "--port", str(port))
    return [r["rule"] for side in ("egress", "ingress") for r in (traced.get(side) or {}).get("rules", [])
            if r["rule"] and not r["rule"].startswith("tier ")]


@pytest.fixture
def integration(lab: Lab) -> Iterator[Lab]:
    apply(lab, PASS_EXAMPLE, NETPOL, BASELINE)
    try:
        yield lab
    finally:
        # One by one: a delete is all or nothing, and a test may have deleted one of them already.
        for doc in (PASS_EXAMPLE, NETPOL, BASELINE):
            where = ["-n", doc["metadata"]["namespace"]] if doc["metadata"].get("namespace") else []
            lab.cli("delete", doc["kind"].lower(), doc["metadata"]["name"], *where, "--wait", "--timeout", "60",
                    check=False)


def with_action(doc: dict[str, Any], direction: str, action: str) -> dict[str, Any]:
    changed = copy.deepcopy(doc)
    changed["spec"][direction][0]["action"] = action
    return changed


def test_admin_deny_decides_before_the_network_policy_both_ways(integration: Lab) -> None:
    lab = integration
    # "Should Deny traffic from slytherin to gryffindor respecting admin CNP"
    assert poke(lab, pod("slytherin", 0), pod("gryffindor", 0), 80) == "denied"
    assert poke(lab, pod("slytherin", 1), pod("gryffindor", 0), 8080) == "denied"
    # "Should Deny traffic to slytherin from gryffindor respecting admin CNP"
    assert poke(lab, pod("gryffindor", 0), pod("slytherin", 0), 80) == "denied"
    assert poke(lab, pod("gryffindor", 1), pod("slytherin", 0), 8080) == "denied"
    assert decided_by(lab, pod("slytherin", 0), pod("gryffindor", 0), 80)[-1] == \
        "pass-example/deny-all-ingress-from-slytherin"
    assert decided_by(lab, pod("gryffindor", 0), pod("slytherin", 0), 80)[-1] == \
        "pass-example/deny-all-egress-to-slytherin"


def test_admin_pass_hands_over_to_the_network_policy_then_to_the_baseline(integration: Lab) -> None:
    lab = integration
    # "Should support a 'pass-ingress' policy for admin CNP and respect the match for network policy"
    apply(lab, with_action(PASS_EXAMPLE, "ingress", "Pass"))
    assert poke(lab, pod("slytherin", 0), pod("gryffindor", 0), 80) == "allowed"
    assert poke(lab, pod("slytherin", 1), pod("gryffindor", 0), 8080) == "allowed"
    # "Should support a 'pass-egress' policy for admin CNP and respect the match for network policy"
    apply(lab, with_action(with_action(PASS_EXAMPLE, "ingress", "Pass"), "egress", "Pass"))
    assert poke(lab, pod("gryffindor", 0), pod("slytherin", 0), 80) == "allowed"
    assert poke(lab, pod("gryffindor", 1), pod("slytherin", 0), 8080) == "allowed"
    # "... respect the match for baseline cluster network policy": without the NetworkPolicy,
    # the passed traffic meets the baseline's Deny, both ways.
    lab.cli("delete", "networkpolicy", NETPOL["metadata"]["name"], "-n", ns("gryffindor"), "--wait", "--timeout", "60")
    assert poke(lab, pod("slytherin", 0), pod("gryffindor", 0), 80) == "denied"
    assert poke(lab, pod("slytherin", 1), pod("gryffindor", 0), 8080) == "denied"
    assert poke(lab, pod("gryffindor", 0), pod("slytherin", 0), 80) == "denied"
    assert poke(lab, pod("gryffindor", 1), pod("slytherin", 0), 8080) == "denied"
    assert decided_by(lab, pod("slytherin", 0), pod("gryffindor", 0), 80)[-2:] == \
        ["pass-example/deny-all-ingress-from-slytherin", "default/deny-all-ingress-from-slytherin"]
    # Traffic none of the three is about still flows (nothing isolates): hufflepuff to gryffindor.
    assert poke(lab, pod("hufflepuff", 0), pod("gryffindor", 1), 80) == "allowed"


# ------------------------------------------------------------------ CNPAdminTierIngressTCP

def by_name(house: str) -> dict[str, Any]:
    return {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": ns(house)}}}


def tcp(port: int) -> list[dict[str, Any]]:
    return [{"tcp": {"destinationPort": {"number": port}}}]


# The fixture admin_tier/standard-ingress-tcp-rules.yaml: its rules in its order.
INGRESS_TCP = {
    "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
    "metadata": {"name": "ingress-tcp"},
    "spec": {"tier": "Admin", "priority": 3, "subject": by_name("gryffindor"), "ingress": [
        {"name": "allow-from-ravenclaw-everything", "action": "Accept", "from": [by_name("ravenclaw")]},
        {"name": "deny-from-ravenclaw-everything", "action": "Deny", "from": [by_name("ravenclaw")]},
        {"name": "pass-from-ravenclaw-everything", "action": "Pass", "from": [by_name("ravenclaw")]},
        {"name": "deny-from-slytherin-at-port-80", "action": "Deny", "from": [by_name("slytherin")], "protocols": tcp(80)},
        {"name": "pass-from-slytherin-at-port-80", "action": "Pass", "from": [by_name("slytherin")], "protocols": tcp(80)},
        {"name": "allow-from-hufflepuff-at-port-80", "action": "Accept", "from": [by_name("hufflepuff")],
         "protocols": tcp(80)},
        {"name": "deny-from-hufflepuff-everything-else", "action": "Deny", "from": [by_name("hufflepuff")]},
    ]}}


def swapped(doc: dict[str, Any], i: int, j: int) -> dict[str, Any]:
    changed = copy.deepcopy(doc)
    rules = changed["spec"]["ingress"]
    rules[i], rules[j] = rules[j], rules[i]
    return changed


def test_admin_ingress_tcp_rules_in_order(lab: Lab) -> None:
    """Upstream's CNPAdminTierIngressTCP: its subtests in its order. As upstream's, the rule swaps
    of one subtest stay for the next (each patches the policy as the previous one left it)."""
    policy = INGRESS_TCP
    apply(lab, policy)
    try:
        # "Should support an 'allow-ingress' policy for TCP protocol; ensure rule ordering is respected"
        assert poke(lab, pod("ravenclaw", 0), pod("gryffindor", 0), 80) == "allowed"
        assert poke(lab, pod("ravenclaw", 1), pod("gryffindor", 0), 8080) == "allowed"
        # "Should support an 'allow-ingress' policy for TCP protocol at the specified port"
        assert poke(lab, pod("hufflepuff", 0), pod("gryffindor", 1), 80) == "allowed"
        assert poke(lab, pod("hufflepuff", 1), pod("gryffindor", 1), 8080) == "denied"
        # "Should support an 'deny-ingress' policy for TCP protocol; ensure rule ordering is respected"
        policy = swapped(policy, 0, 1)
        apply(lab, policy)
        assert poke(lab, pod("ravenclaw", 0), pod("gryffindor", 1), 80) == "denied"
        assert poke(lab, pod("ravenclaw", 1), pod("gryffindor", 1), 8080) == "denied"
        assert decided_by(lab, pod("ravenclaw", 0), pod("gryffindor", 1), 80)[-1] == \
            "ingress-tcp/deny-from-ravenclaw-everything"
        # "Should support a 'deny-ingress' policy for TCP protocol at the specified port"
        assert poke(lab, pod("slytherin", 0), pod("gryffindor", 0), 80) == "denied"
        assert poke(lab, pod("slytherin", 1), pod("gryffindor", 0), 8080) == "allowed"
        # "Should support an 'pass-ingress' policy for TCP protocol; ensure rule ordering is respected"
        policy = swapped(policy, 0, 2)
        apply(lab, policy)
        assert poke(lab, pod("ravenclaw", 0), pod("gryffindor", 0), 80) == "allowed"
        assert poke(lab, pod("ravenclaw", 1), pod("gryffindor", 0), 8080) == "allowed"
        # "Should support a 'pass-ingress' policy for TCP protocol at the specified port"
        policy = swapped(policy, 3, 4)
        apply(lab, policy)
        assert poke(lab, pod("slytherin", 0), pod("gryffindor", 0), 80) == "allowed"
        assert poke(lab, pod("slytherin", 1), pod("gryffindor", 0), 8080) == "allowed"
    finally:
        lab.cli("delete", "clusternetworkpolicy", "ingress-tcp", "--wait", "--timeout", "60", check=False)
