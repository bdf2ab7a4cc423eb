"""Run one upstream conformance test from cases.yaml: its fixtures applied unchanged, its subtests in order."""

from __future__ import annotations

from typing import Any

from tests.e2e.conformance.world import Conformance, fixture


def run_upstream_test(world: Conformance, test: dict[str, Any]) -> None:
    """As upstream's suite: the manifests applied, then each subtest against what the previous left
    (a subtest's patch stays for the next). Every failing poke of every subtest is reported at once."""
    world.write([doc for path in test["manifests"] for doc in fixture(path)])
    failures: list[str] = []
    for subtest in test["subtests"]:
        failures += world.run_steps(subtest["steps"], f"{test['name']} / {subtest['name']!r}")
    assert not failures, "\n".join(failures)
    _cli_trace_agrees(world)
    missing = world.flows_name_the_deciding_rules()
    assert not missing, "flow records disagree with trace:\n" + "\n".join(missing)


def _cli_trace_agrees(world: Conformance) -> None:
    """`stockade trace`, the command a user runs, names the same verdict and upstream rule for the last poke."""
    poke, traced = world.traced[-1]
    shown = world.lab.json("trace", "--from", poke.client, "--to", poke.server, "--protocol", poke.protocol,
                           "--port", str(poke.port))
    assert (shown["verdict"], _deciding(shown)) == (traced.verdict, traced.deciding_rule), (poke, shown)


def _deciding(shown: dict[str, Any]) -> str | None:
    egress, ingress = shown["egress"], shown.get("ingress")
    side = ingress if egress["verdict"] == "allow" and ingress else egress
    final = [r for r in side["rules"] if r["action"] in ("accept", "drop", "reject")]
    return final[-1]["rule"] if final else None
