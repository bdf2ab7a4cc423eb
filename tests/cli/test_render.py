"""`stockade status` as a table: what an operator reads."""

from __future__ import annotations

from rich.console import Console

from stockade.cli import render


def test_status_table_names_each_workload_a_host_did_not_program() -> None:
    console = Console(record=True, width=200)
    agent = {"host": "hv1", "revision": 4, "programHash": "h", "inSync": True, "reporting": True,
             "notProgrammed": [{"object": "b/vm", "reason": "interface tap7 is also Workload a/vm's on host hv1, "
                                                           "which keeps it"}]}
    render.status_table(console, {"revision": 4, "agents": [agent, {**agent, "host": "hv2", "notProgrammed": []}]})
    lines = [line for line in console.export_text().splitlines() if "not programmed" in line]
    assert lines == ["not programmed on hv1: Workload b/vm: interface tap7 is also Workload a/vm's on host hv1, "
                     "which keeps it"]


def test_cluster_policies_list_with_their_tier_priority_and_subject() -> None:
    console = Console(record=True, width=200)
    cnp = {"metadata": {"name": "guardrails"},
           "spec": {"tier": "Admin", "priority": 5, "subject": {"namespaces": {"matchLabels": {"team": "shop"}}},
                    "ingress": [{}, {}], "egress": [{}]}}
    render.objects_table(console, "ClusterNetworkPolicy", [cnp])
    banp = {"metadata": {"name": "default"}, "spec": {"subject": {"pods": {"podSelector": {}}}, "egress": [{}]}}
    render.objects_table(console, "BaselineAdminNetworkPolicy", [banp])
    text = console.export_text()
    assert "TIER" in text and "PRIORITY" in text and "SUBJECT" in text
    row = next(line for line in text.splitlines() if "guardrails" in line).split()
    assert row[:3] == ["guardrails", "Admin", "5"] and row[-2:] == ["2", "1"]
    assert "team=shop" in text
    baseline = next(line for line in text.splitlines() if line.strip().startswith("default")).split()
    assert baseline[1] == "Baseline" and "pods" in baseline
