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
