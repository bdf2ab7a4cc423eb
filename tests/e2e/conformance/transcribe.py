"""Transcribe upstream's ClusterNetworkPolicy conformance tests into a case table (issue 17).

    python -m tests.e2e.conformance.transcribe /path/to/network-policy-api [COMMIT] > tests/e2e/conformance/cases.yaml

Reads `conformance/tests/*.go` of kubernetes-sigs/network-policy-api at COMMIT (default HEAD,
with `git show`, so a bare mirror will do) and writes, for every ConformanceTest, its fixture
files and its subtests in order, each subtest a list of steps:

    {poke: {from: NS/POD, to: NS/POD, protocol: tcp, port: 80, allowed: true}}
    {swap: {policy: NAME, direction: egress, rules: [0, 1]}}          # rule i ⇄ rule j
    {priority: {policy: NAME, value: 40}}
    {namedPort: {policy: NAME, direction: ingress, rule: 5, port: dns}} # the rule's protocols → that named port
    {prependPodNetworks: {policy: NAME, name: RULE, action: Accept, pods: [NS/POD, ...]}}
    {namespaceLabels: {namespace: NS, labels: {...}}}
    {action: {policy: NAME, direction: ingress, rule: 0, value: Pass}}
    {deleteNetworkPolicy: {namespace: NS, name: NAME}}

It reads the tests as text, for the handful of shapes they are written in; a statement it does
not know stops it with the line, so a change upstream is seen rather than silently dropped.
The table, not this script, is what the tests run: it is committed, and reviewed like code.
"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import yaml

TESTS_DIR = "conformance/tests"
_POD = re.compile(r'(\w+)\s*:?=\s*kubernetes\.GetPod\(t, s\.Client, "([^"]+)", "([^"]+)"')
_POKE = re.compile(r'kubernetes\.PokeServer\(t, s\.ClientSet, &s\.KubeConfig, "([^"]+)", "([^"]+)", "(\w+)",\s*'
                   r'(\w+)\.Status\.PodIP, int32\((\d+)\), s\.TimeoutConfig, (true|false)\)')
_POLICY = re.compile(r'kubernetes\.GetClusterNetworkPolicy\(t, s\.Client, "([^"]+)"')
_SWAP = re.compile(r'mutate\.Spec\.(Ingress|Egress)\[(\d+)\] = mutate\.Spec\.(?:Ingress|Egress)\[(\d+)\]$')
_PRIORITY = re.compile(r'mutate\.Spec\.Priority = (\d+)$')
_NAMED_PORT_VALUE = re.compile(r'(\w+) := "([\w-]+)"$')
_NAMED_PORT_RULE = re.compile(r'mutate\.Spec\.(Ingress|Egress)\[(\d+)\] = (\w+)$')
_ACTION = re.compile(r'mutate\.Spec\.(Ingress|Egress)\[(\d+)\]\.Action = api\.ClusterNetworkPolicyRuleAction(\w+)$')
_OBJECT_KEY = re.compile(r'(Namespace|Name):\s*"([^"]+)"')
_NAMESPACE = re.compile(r'(\w+)\s*:?=\s*kubernetes\.GetNamespace\(t, s\.Client, "([^"]+)"')
_LABELS = re.compile(r'SetLabels\(map\[string\]string\{(.*)\}\)')
_RUN = re.compile(r't\.Run\("(.*)", func')
_TEST = re.compile(r'var (\w+) = suite\.ConformanceTest\{')
_MANIFEST = re.compile(r'"(base/[^"]+\.yaml)"')
# Statements that carry no step (bookkeeping of the Go code itself).
_IGNORED = re.compile(r'^(//|/\*|\*|\*/|\}|\{|\)|mutate := |mutateNamespace :?= |\w+Rule := mutate|'
                      r'\w+Rule\.Protocols = |var mask|if net\.|mask = |\} else|newRule :=|Name:|Action:|To:|'
                      r'Networks:|api\.CIDR|DestinationNamedPort:|\w+Rule := |mutate\.Spec\.(Ingress|Egress)\[\d+\] = \w+Rule$|'
                      r'kubernetes\.PatchClusterNetworkPolicy|ctx, cancel :=|defer cancel|np := |err :?= s\.Client\.Get|'
                      r'require\.NoErrorf|\}, np\)|kubernetes\.PatchNamespace|Test: func|'
                      r'ShortName:|Description:|Features:|suite\.Support|Manifests:|\},?$|\)\}?,?$|$)')


def _git_show(repo: str, commit: str, path: str) -> str:
    return subprocess.run(["git", "-C", repo, "show", f"{commit}:{path}"], capture_output=True, text=True,
                          check=True).stdout


def _statements(source: str) -> list[str]:
    """Lines with Go's continuation lines joined (a call split after a comma)."""
    out: list[str] = []
    for raw in source.splitlines():
        line = raw.strip()
        if out and (out[-1].endswith(",") and out[-1].startswith("kubernetes.PokeServer")):
            out[-1] += " " + line
        else:
            out.append(line)
    return out


def transcribe_file(source: str, where: str) -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = []
    pods: dict[str, str] = {}
    namespaces: dict[str, str] = {}
    named_ports: dict[str, str] = {}
    named_rules: dict[str, str] = {}
    object_key: dict[str, str] = {}
    policy = ""
    subtest: dict[str, Any] | None = None
    body = False
    for n, line in enumerate(_statements(source), 1):
        if m := _TEST.search(line):
            tests.append({"name": m.group(1), "source": where, "manifests": [], "subtests": []})
            subtest, body = None, False
            continue
        if line.startswith("serverPod := kubernetes.GetPod") and subtest is None and body:
            continue  # a test-level server (node peers' host-network pod)
        if not tests:
            continue
        test = tests[-1]
        if not body:
            test["manifests"] += _MANIFEST.findall(line)
            body = line.startswith("Test: func")
            continue
        steps: list[dict[str, Any]] | None = subtest["steps"] if subtest else None
        if m := _RUN.search(line):
            subtest = {"name": m.group(1), "steps": []}
            test["subtests"].append(subtest)
        elif m := _POD.search(line):
            pods[m.group(1)] = f"{m.group(2)}/{m.group(3)}"
        elif m := _NAMESPACE.search(line):
            namespaces["namespace"] = m.group(2)
        elif m := _POLICY.search(line):
            policy = m.group(1)
        elif "s.HostNetworkPorts" in line:
            # A server on the node's network: the lab has no host-network pods (and `nodes` peers are refused).
            test["cannotRun"] = "pokes a host-network server (node peers)"
        elif m := _POKE.search(line):
            if steps is None:
                raise SystemExit(f"{where}:{n}: a poke outside a subtest: {line}")
            steps.append({"poke": {"from": f"{m.group(1)}/{m.group(2)}", "to": pods[m.group(4)],
                                   "protocol": m.group(3), "port": int(m.group(5)),
                                   "allowed": m.group(6) == "true"}})
        elif m := _SWAP.search(line):
            assert steps is not None
            i, j = int(m.group(2)), int(m.group(3))
            steps.append({"swap": {"policy": policy, "direction": m.group(1).lower(), "rules": [i, j]}})
        elif m := _PRIORITY.search(line):
            assert steps is not None
            steps.append({"priority": {"policy": policy, "value": int(m.group(1))}})
        elif m := _NAMED_PORT_VALUE.search(line):
            named_ports[m.group(1)] = m.group(2)
        elif line.startswith("DestinationNamedPort:"):
            named_rules["port"] = named_ports[line.split(":")[1].strip().rstrip(",")]
        elif (m := _NAMED_PORT_RULE.search(line)) and named_rules:
            assert steps is not None
            steps.append({"namedPort": {"policy": policy, "direction": m.group(1).lower(),
                                        "rule": int(m.group(2)), "port": named_rules.pop("port")}})
        elif m := _ACTION.search(line):
            assert steps is not None
            steps.append({"action": {"policy": policy, "direction": m.group(1).lower(), "rule": int(m.group(2)),
                                     "value": m.group(3)}})
        elif m := _OBJECT_KEY.search(line):
            object_key[m.group(1)] = m.group(2)
        elif line.startswith("err = s.Client.Delete(ctx, np)"):
            assert steps is not None
            steps.append({"deleteNetworkPolicy": {"namespace": object_key["Namespace"], "name": object_key["Name"]}})
        elif m := _LABELS.search(line):
            assert steps is not None
            labels = dict(re.findall(r'"([^"]+)":\s*"([^"]+)"', m.group(1)))
            steps.append({"namespaceLabels": {"namespace": namespaces["namespace"], "labels": labels}})
        elif line.startswith("mutate.Spec.Egress = append(newRule"):
            assert steps is not None
            steps.append({"prependPodNetworks": _prepended_rule(source, pods, policy)})
        elif line.startswith("serverPod := kubernetes.GetPod") or _IGNORED.match(line):
            continue
        else:
            raise SystemExit(f"{where}:{n}: a statement this transcriber does not know: {line}")
    return tests


def _prepended_rule(source: str, pods: dict[str, str], policy: str) -> dict[str, Any]:
    """The one rule inline-cidr tests put first: Accept to the /32 (/128) of two pods."""
    name = re.search(r'Name:\s*"([^"]+)"', source)
    action = re.search(r'Action:\s*"([^"]+)"', source)
    ips = re.findall(r'api\.CIDR\((\w+)\.Status\.PodIP', source)
    assert name and action and ips
    return {"policy": policy, "name": name.group(1), "action": action.group(1), "pods": [pods[v] for v in ips]}


def main(argv: list[str]) -> int:
    repo, commit = argv[0], (argv[1] if len(argv) > 1 else "HEAD")
    resolved = subprocess.run(["git", "-C", repo, "rev-parse", commit], capture_output=True, text=True,
                              check=True).stdout.strip()
    names = subprocess.run(["git", "-C", repo, "ls-tree", "--name-only", f"{resolved}:{TESTS_DIR}"],
                           capture_output=True, text=True, check=True).stdout.split()
    tests = []
    for name in sorted(names):
        if name.endswith(".go") and name != "main.go":
            tests += transcribe_file(_git_show(repo, resolved, f"{TESTS_DIR}/{name}"), f"{TESTS_DIR}/{name}")
    print(f"# Transcribed by tests/e2e/conformance/transcribe.py from kubernetes-sigs/network-policy-api\n"
          f"# at {resolved} ({TESTS_DIR}): upstream's verdicts, not ours. Do not edit by hand.")
    print(yaml.safe_dump({"upstream": {"repository": "kubernetes-sigs/network-policy-api", "commit": resolved},
                          "tests": tests}, sort_keys=False, width=120))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
