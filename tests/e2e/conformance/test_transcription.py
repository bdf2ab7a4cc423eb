"""The transcription of upstream's tests (transcribe.py) and the table it wrote (cases.yaml). Pure."""

from __future__ import annotations

import pytest

from tests.e2e.conformance.transcribe import transcribe_file
from tests.e2e.conformance.world import CASES, HERE, HOUSES, SERVED, ns

GO = '''
var CNPAdminTierEgressTCP = suite.ConformanceTest{
	ShortName:   "CNPAdminTierEgressTCP",
	Manifests: []string{"base/admin_tier/standard-egress-tcp-rules.yaml"},
	Test: func(t *testing.T, s *suite.ConformanceTestSuite) {
		t.Run("Should deny", func(t *testing.T) {
			serverPod := kubernetes.GetPod(t, s.Client, "network-policy-conformance-ravenclaw", "luna-lovegood-1", s.TimeoutConfig.GetTimeout)
			cnp := kubernetes.GetClusterNetworkPolicy(t, s.Client, "egress-tcp", s.TimeoutConfig.GetTimeout)
			mutate := cnp.DeepCopy()
			allowRule := mutate.Spec.Egress[0]
			mutate.Spec.Egress[0] = mutate.Spec.Egress[1]
			mutate.Spec.Egress[1] = allowRule
			kubernetes.PatchClusterNetworkPolicy(t, s.Client, cnp, mutate, s.TimeoutConfig.GetTimeout)
			kubernetes.PokeServer(t, s.ClientSet, &s.KubeConfig, "network-policy-conformance-gryffindor", "harry-potter-0", "tcp",
				serverPod.Status.PodIP, int32(80), s.TimeoutConfig, false)
		})
	},
}
'''


def test_a_subtest_becomes_its_steps_in_order() -> None:
    (test,) = transcribe_file(GO, "x.go")
    assert test["manifests"] == ["base/admin_tier/standard-egress-tcp-rules.yaml"]
    assert test["subtests"] == [{"name": "Should deny", "steps": [
        {"swap": {"policy": "egress-tcp", "direction": "egress", "rules": [0, 1]}},
        {"poke": {"from": "network-policy-conformance-gryffindor/harry-potter-0",
                  "to": "network-policy-conformance-ravenclaw/luna-lovegood-1", "protocol": "tcp", "port": 80,
                  "allowed": False}}]}]


def test_a_statement_it_does_not_know_stops_it_naming_the_line() -> None:
    with pytest.raises(SystemExit, match=r"x\.go:\d+: .*mutate\.Spec\.Egress\[0\]\.Ports = nil"):
        transcribe_file(GO.replace("allowRule := mutate.Spec.Egress[0]", "mutate.Spec.Egress[0].Ports = nil"), "x.go")


def test_the_table_names_only_fixtures_pods_and_ports_the_lab_has() -> None:
    pods = {f"{ns(h)}/{p}-{n}" for h, p in HOUSES.items() for n in (0, 1)}
    served = {(proto, port) for proto, port in SERVED} | {("sctp", 9003), ("sctp", 9005)}
    runnable = [t for t in CASES["tests"] if "cannotRun" not in t]
    assert len(runnable) == 22 and all(t["subtests"] for t in runnable)
    for test in runnable:
        assert all((HERE / "upstream" / m).is_file() for m in test["manifests"]), test["name"]
        for step in (s for sub in test["subtests"] for s in sub["steps"] if "poke" in s):
            poke = step["poke"]
            assert {poke["from"], poke["to"]} <= pods and (poke["protocol"], poke["port"]) in served, poke
