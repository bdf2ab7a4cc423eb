"""`lab up` is idempotent and `lab down` leaves nothing behind: no namespace, process, table or state."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import make_lab, netns_with_prefix

pytestmark = pytest.mark.kernel


def _processes_mentioning(text: str) -> list[str]:
    out = subprocess.run(["ps", "-eww", "-o", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if text in line and "ps -eww" not in line]


def test_lab_up_is_idempotent_and_down_leaves_nothing(tmp_path: Path) -> None:
    gen = make_lab(tmp_path, hosts=1)
    lab = next(gen)
    try:
        first = lab.json("status")
        lab.cli("lab", "up", "--hosts", "1")           # again: nothing is rebuilt, the controller keeps its state
        again = lab.json("status")
        assert again["revision"] == first["revision"]
        assert [a["host"] for a in again["agents"]] == ["hv1"]
        status = lab.cli("lab", "status")
        assert "hv1" in status.stdout
        lab.apply_text("""
apiVersion: stockade.io/v1
kind: Namespace
metadata: {name: n1}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {name: w1, namespace: n1}
spec: {host: hv1}
""", "--wait", "--timeout", "60")
        lab.cli("lab", "external", "add", "site", "--dns", "site.example")
        # fabric, control plane, the DNS server, hv1, the workload, the external
        assert len(netns_with_prefix(lab.prefix)) == 6
        assert _processes_mentioning(str(lab.state_dir))
        assert any(p.startswith(lab.prefix + "-") for p in os.listdir("/etc/netns"))  # the workload's resolv.conf
    finally:
        try:
            next(gen)
        except StopIteration:
            pass
    assert netns_with_prefix(lab.prefix) == []
    assert _processes_mentioning(str(lab.state_dir)) == []
    assert not lab.state_dir.exists()
    assert not Path(lab.env["STOCKADE_CONFIG"]).exists()
    assert os.path.exists("/run/netns") is False or not any(
        n.startswith(lab.prefix + "-") for n in os.listdir("/run/netns"))
    assert not os.path.exists("/etc/netns") or not any(n.startswith(lab.prefix + "-") for n in os.listdir("/etc/netns"))
