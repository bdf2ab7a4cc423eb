"""Upstream's Admin-tier ClusterNetworkPolicy conformance tests, with real packets (issue 17).

Every `CNPAdminTier*` test of cases.yaml (transcribed from kubernetes-sigs/network-policy-api),
each subtest with upstream's clients, servers, ports and verdicts. A test that pokes a
host-network server (node peers) cannot run here: the lab has no host-network pods, and `nodes`
peers are refused. SCTP pokes are checked by trace only (this kernel has no SCTP).
The tiers are two modules (this and test_baseline_tier.py, alike but for the prefix) so that
`make test` runs them on its two workers, each with its own lab.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conformance.runner import run_upstream_test
from tests.e2e.conformance.world import Conformance, upstream_tests

pytestmark = pytest.mark.kernel
TESTS = [t for t in upstream_tests("CNPAdminTier") if "cannotRun" not in t]


@pytest.mark.parametrize("test", TESTS, ids=[t["name"] for t in TESTS])
def test_upstream(world_lab: Conformance, test: dict[str, Any]) -> None:
    run_upstream_test(world_lab, test)
