"""The lab on a 3-member etcd cluster with 3 controller replicas, and the faults it survives
(issue 15, items 4 and 5), with real packets checked around every fault.

Every process is a real one (etcd members, controller replicas, agents over TLS on the fabric)
and every fault is a SIGKILL. Loads are bounded in count and time.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from stockade.controller.store.archive import read_backup
from stockade.lab import naming
from tests.e2e.conftest import EXAMPLES, Lab, make_lab
from tests.waiting import wait_until

pytestmark = pytest.mark.kernel

# What the example policy says, checked with real packets before and after each fault.
FLOWS = [("shop/lb-1", "shop/web-2", 8080, "allowed"), ("shop/web-1", "shop/db-1", 5432, "denied"),
         ("shop/app-1", "shop/db-1", 5432, "allowed"), ("shop/lb-1", "shop/app-1", 9000, "denied")]


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    for lab in make_lab(tmp_path_factory.mktemp("etcdlab"), 2, "--store", "etcd", "--controllers", "3"):
        lab.cli("apply", "-f", str(EXAMPLES), "--wait", "--timeout", "60")
        yield lab


def verdicts(lab: Lab) -> list[str]:
    return [lab.json("probe", "--from", src, "--to", dst, "--protocol", "tcp", "--port", str(port))["verdict"]
            for src, dst, port, _ in FLOWS]


def expected() -> list[str]:
    return [want for *_, want in FLOWS]


def etcd_members(lab: Lab) -> list[dict[str, Any]]:
    """`etcdctl endpoint status` of each live member, inside the control-plane netns."""
    endpoints = ",".join(f"http://{naming.etcd_address(j)}:2379" for j in range(1, naming.ETCD_MEMBERS + 1))
    out = subprocess.run(["nsenter", f"--net=/run/netns/{naming.control_netns(lab.prefix)}", "etcdctl",
                          "--endpoints", endpoints, "--command-timeout", "2s", "-w", "json", "endpoint", "status"],
                         capture_output=True, text=True, timeout=30, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})
    return json.loads(out.stdout or "[]")


def leader_member(lab: Lab) -> int:
    for status in etcd_members(lab):
        header, leader = status["Status"]["header"], status["Status"]["leader"]
        if header["member_id"] == leader:
            return int(status["Endpoint"].rsplit(":", 1)[0].rsplit(".", 1)[1]) - 240
    raise AssertionError(f"no etcd leader: {etcd_members(lab)}")


def heal(lab: Lab) -> None:
    """`lab up` again restarts what was killed (etcd members rejoin with their data)."""
    lab.cli("lab", "up", timeout=120)


def test_the_lab_runs_three_etcd_members_and_three_controller_replicas(replicated: Lab) -> None:
    status = replicated.json("lab", "status")
    roles = sorted((p["role"], p["name"]) for p in status["processes"] if p["alive"])
    assert roles == [("agent", "agent-hv1"), ("agent", "agent-hv2"), ("controller", "controller"),
                     ("controller", "controller-2"), ("controller", "controller-3"), ("dns", "dns"),
                     ("etcd", "etcd-1"), ("etcd", "etcd-2"), ("etcd", "etcd-3")]
    assert len(replicated.context().controller.split(",")) == 3  # the CLI knows every replica
    assert verdicts(replicated) == expected()


def test_a_backup_is_taken_through_another_replica_when_the_first_is_down(replicated: Lab,
                                                                           tmp_path: Path) -> None:
    replicated.kill9("controller")  # the replica the CLI tries first
    try:
        backup = tmp_path / "store.backup"
        done = replicated.cli("backup", str(backup))
        assert "written to" in done.stdout
        taken = read_backup(backup)
        history = replicated.client().revisions()
        assert taken.source == "etcd" and taken.revision == history[0]["revision"]
        assert [r.revision.number for r in reversed(taken.revisions)] == [r["revision"] for r in history]
        assert taken.cluster_id == replicated.client().healthz()["clusterId"]
    finally:
        heal(replicated)
    # The replica restarted by `lab up` loaded the reports its store kept, which may predate the
    # last change; `up` returns only once every agent's report is current, so probes work at once.
    assert verdicts(replicated) == expected()


def test_killing_the_etcd_leader_loses_no_acknowledged_change(replicated: Lab) -> None:
    before = replicated.json("status")["revision"]
    acknowledged: list[tuple[int, str]] = []   # (revision, message) of every apply that exited 0
    failed: list[str] = []
    killed_at: list[float] = []
    resumed_at: list[float] = []
    stop = threading.Event()

    def stream() -> None:
        deadline = time.monotonic() + 60
        for i in range(12):
            if stop.is_set() or time.monotonic() > deadline:
                return
            message = f"stream {i}"
            done = replicated.apply_text(f"""
apiVersion: stockade.io/v1
kind: Namespace
metadata: {{name: stream-{i}, labels: {{n: "{i}"}}}}
""", "-m", message, check=False)
            if done.returncode == 0:
                acknowledged.append((int(done.stdout.split("revision")[-1].split()[0]), message))
                if killed_at and not resumed_at:
                    resumed_at.append(time.monotonic())
            else:
                failed.append(done.stderr.strip())

    writer = threading.Thread(target=stream)
    writer.start()
    wait_until(lambda: len(acknowledged) >= 3, "three acknowledged applies before the fault", timeout=60)
    leader = leader_member(replicated)
    killed_at.append(time.monotonic())
    replicated.kill9(f"etcd-{leader}")
    writer.join(90)
    stop.set()
    try:
        assert not writer.is_alive()
        assert len(acknowledged) >= 6, (acknowledged, failed)
        history = replicated.json("history", "--limit", "50")
        stored = [(h["revision"], h["message"]) for h in history if h["revision"] > before]
        stored.reverse()
        # Every acknowledged change is there once, in the order it was acknowledged.
        assert [m for _, m in stored if m.startswith("stream ")] == [m for _, m in acknowledged]
        assert [r for r, _ in stored] == list(range(before + 1, before + 1 + len(stored)))  # no gap
        assert resumed_at and resumed_at[0] - killed_at[0] < 15, "writes did not resume within 15 s"
        print(f"writes resumed {resumed_at[0] - killed_at[0]:.2f} s after the etcd leader was killed")
        assert verdicts(replicated) == expected()
    finally:
        heal(replicated)


def test_killing_a_controller_replica_during_apply_wait_and_watches(replicated: Lab) -> None:
    assert verdicts(replicated) == expected()
    replicated.kill9("controller")   # the replica the CLI and the agents try first
    # apply --wait goes on through another replica; the agents' watches too: the change is
    # enforced on every host (the wait returns only then).
    replicated.apply_text("""
apiVersion: stockade.io/v1
kind: GlobalPolicy
metadata: {name: freeze-db}
spec:
  tier: platform
  appliesTo: {group: shop/db}
  ingress:
  - {id: no-sql, action: deny, ports: [{protocol: TCP, port: 5432}]}
""", "--wait", "--timeout", "60")
    try:
        frozen = verdicts(replicated)
        assert frozen == ["allowed", "denied", "denied", "denied"], frozen  # app -> db now denied
    finally:
        replicated.cli("delete", "globalpolicy", "freeze-db", "--wait", "--timeout", "60")
        heal(replicated)
    assert verdicts(replicated) == expected()


def test_without_quorum_writes_fail_clearly_and_nothing_is_half_applied(replicated: Lab) -> None:
    before = replicated.json("status")["revision"]
    killed = [m for m in range(1, 4) if m != leader_member(replicated)][:1] + [leader_member(replicated)]
    for member in killed:
        replicated.kill9(f"etcd-{member}")
    try:
        started = time.monotonic()
        refused = replicated.apply_text("""
apiVersion: stockade.io/v1
kind: Namespace
metadata: {name: no-quorum}
""", check=False)
        assert refused.returncode != 0
        assert "no quorum" in refused.stderr and "nothing of this one was stored" in refused.stderr, refused.stderr
        assert time.monotonic() - started < 10
        # Reads go on (from what the member left holds), and the kernel keeps enforcing what it had.
        assert "shop" in [n["metadata"]["name"] for n in replicated.json("get", "namespaces")["items"]]
        assert verdicts(replicated) == expected()
    finally:
        heal(replicated)
    # After recovery writes succeed, and the refused one was not half-applied.
    names = [n["metadata"]["name"] for n in replicated.json("get", "namespaces")["items"]]
    assert "no-quorum" not in names
    after = replicated.apply_text("""
apiVersion: stockade.io/v1
kind: Namespace
metadata: {name: after-quorum}
""")
    assert after.returncode == 0
    assert replicated.json("status")["revision"] == before + 1
