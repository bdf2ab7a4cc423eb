"""The agent loop (agent/loop.py): level-triggered, never programming a partial view, keeping its
program while the controller is away.

Three parts. Its decisions, without root or a kernel: a fake table whose "kernel" the test
controls, a fake controller and a clock the test moves (tests/agent/fakes.py). What it reports,
with a reconciler that compiles and applies nothing. And, against a real controller (HTTP) and a
real kernel (a scratch netns, marker `kernel`): nothing is programmed before the first full sync;
a change in the store reaches the kernel through the watch; the agent reports what it enforces;
its metrics count the transactions and expose per-rule counters by rule id.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client import generate_latest

from stockade.agent.loop import Agent, AgentConfig
from stockade.agent.metrics import AgentMetrics
from stockade.agent.reconciler import Outcome, Reconciler
from stockade.agent.saved_program import SavedProgram
from stockade.client import ControllerClient
from stockade.compile.host import compile_host, compile_host_program
from stockade.controller.auth import create_token_file
from stockade.controller.config import ControllerConfig
from stockade.controller.main import start_in_thread
from stockade.dataplane.nft_driver import NftDriver, run_command
from stockade.errors import ControllerUnavailable, Gone
from stockade.model.kinds import parse_object
from stockade.model.state import DesiredState
from stockade.nft.render import full_replace, program_hash
from tests.agent.fakes import FakeClock, FakeController, FakeTable

SHOP = """
apiVersion: stockade.io/v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {name: web-1, namespace: shop, labels: {tier: web}}
spec: {host: hv1, ips: [198.18.10.11]}
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: web, namespace: shop}
spec:
  appliesTo: {selector: {matchLabels: {tier: web}}}
  ingress: [{id: http, action: allow, ports: [{protocol: TCP, port: 80}]}]
"""


# ================================================================== decisions (no kernel)

INTERVALS = {"resync": 30.0, "retry": 1.0}
DRIFT = 2.0  # the drift check's interval, where a test runs it (unlike the retry's, to tell their timers apart)


def _docs(*extra_workloads: str) -> list[dict[str, Any]]:
    """The shop, and a workload on hv1 for each name in `extra_workloads`."""
    docs = [d for d in yaml.safe_load_all(SHOP) if d]
    for i, name in enumerate(extra_workloads):
        docs.append(_workload(name, f"198.18.10.{100 + i}"))
    return docs


def _workload(name: str, ip: str, tier: str = "web") -> dict[str, Any]:
    return {"apiVersion": "stockade.io/v1", "kind": "Workload",
            "metadata": {"name": name, "namespace": "shop", "labels": {"tier": tier}},
            "spec": {"host": "hv1", "ips": [ip]}}


def _put(doc: dict[str, Any]) -> dict[str, Any]:
    meta = doc["metadata"]
    return {"type": "PUT", "kind": doc["kind"], "namespace": meta.get("namespace"), "name": meta["name"],
            "object": doc}


def _program_of(revision: int, docs: list[dict[str, Any]]) -> dict[str, Any]:
    return full_replace(compile_host(DesiredState.from_objects(revision, [parse_object(d) for d in docs]), "hv1"))


class Harness:
    """An agent on host hv1 with a fake table, controller and clock; what it decided, in order."""

    def __init__(self, controller: FakeController, table: FakeTable | None = None,
                 saved: SavedProgram | None = None, drift_interval: float = 1000.0) -> None:
        self.controller, self.table, self.clock = controller, table or FakeTable(), FakeClock()
        self.outcomes: list[Outcome] = []
        self.controller_errors = 0
        config = AgentConfig(host="hv1", watch_timeout=0.05, resync_interval=INTERVALS["resync"],
                             retry_interval=INTERVALS["retry"], drift_interval=drift_interval,
                             heartbeat_interval=1000.0, save_interval=1000.0)
        self.agent = Agent(config, controller, Reconciler(self.table, "hv1"),  # type: ignore[arg-type]
                           on_outcome=self.outcomes.append, on_controller_error=self._controller_error,
                           saved=saved, sleep=self.clock.sleep)

    def _controller_error(self) -> None:
        self.controller_errors += 1

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator["Harness"]:
        stop = asyncio.Event()
        task = asyncio.create_task(self.agent.run(stop))
        try:
            yield self
        finally:
            stop.set()
            await task


async def until(check: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    """Await `check()` with a deadline (the agent's work runs in worker threads, in real time)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.01)


async def nothing_more_within(seconds: float = 0.2) -> None:
    """A fixed wait, only where the test checks that something does *not* happen."""
    await asyncio.sleep(seconds)


def test_several_events_before_a_pass_make_one_pass_on_the_latest_state() -> None:
    async def scenario() -> None:
        controller = FakeController(1, _docs())
        h = Harness(controller)
        h.table.gate = threading.Event()  # the first pass waits in the kernel until the test opens it
        async with h.running():
            await until(lambda: h.table.calls == 1, "the first pass to reach the kernel")
            docs = _docs()
            for revision, name in ((2, "web-2"), (3, "web-3"), (4, "web-4")):
                doc = _workload(name, f"198.18.10.{revision}")
                docs.append(doc)
                controller.events(revision, _put(doc))
            await until(lambda: h.agent.cache.revision == 4, "the agent to take the three events")
            h.table.gate.set()
            await until(lambda: len(h.outcomes) == 2, "the pass after the events")
            await nothing_more_within()
            assert [o.revision for o in h.outcomes] == [1, 4]  # one pass for the three events, on the last
            assert [o.kind for o in h.outcomes] == ["full", "full"]
            assert h.table.programs == [_program_of(1, _docs()), _program_of(4, docs)]

    asyncio.run(scenario())


def test_a_periodic_resync_runs_with_no_event() -> None:
    async def scenario() -> None:
        h = Harness(FakeController(1, _docs()))
        async with h.running():
            await until(lambda: len(h.outcomes) == 1, "the first pass")
            await h.clock.advance(INTERVALS["resync"] - 0.1)
            await nothing_more_within()
            assert len(h.outcomes) == 1  # no event, no resync yet: no pass
            await h.clock.advance(0.1)
            await until(lambda: len(h.outcomes) == 2, "the resync's pass")
            assert (h.outcomes[1].kind, h.outcomes[1].revision) == ("none", 1)  # compared, nothing to send
            await h.clock.advance(INTERVALS["resync"])
            await until(lambda: len(h.outcomes) == 3, "the next resync's pass")
            assert h.table.kinds == ["full"]

    asyncio.run(scenario())


def test_a_resync_repairs_drift_that_no_event_announced() -> None:
    async def scenario() -> None:
        h = Harness(FakeController(1, _docs()))
        async with h.running():
            await until(lambda: len(h.outcomes) == 1, "the first pass")
            h.table.hand_edit()
            await h.clock.advance(INTERVALS["resync"])
            await until(lambda: len(h.outcomes) == 2, "the resync's pass")
            assert (h.outcomes[1].kind, h.outcomes[1].drift_repaired) == ("full", True)
            assert h.agent.status.drift_repairs == 1

    asyncio.run(scenario())


def test_nothing_is_programmed_before_the_first_full_sync_however_often_the_loop_wakes() -> None:
    async def scenario() -> None:
        controller = FakeController(1, _docs())
        controller.fail = ControllerUnavailable("the fake controller is down")
        h = Harness(controller)
        async with h.running():
            for _ in range(5):  # resyncs and retries wake the loop; the listing always fails
                await h.clock.advance(INTERVALS["resync"])
                await until(lambda: controller.snapshots >= 1, "a listing attempt")
            await nothing_more_within()
            assert h.table.calls == 0 and h.outcomes == [] and h.table.content is None
            assert not h.agent.cache.synced and h.controller_errors >= 1
            controller.fail = None
            await until(lambda: h.clock.waiting(INTERVALS["retry"]), "the watch's retry timer")
            await h.clock.advance(INTERVALS["retry"])
            await until(lambda: len(h.outcomes) == 1, "the first pass after the first full sync")
            assert (h.outcomes[0].kind, h.outcomes[0].revision) == ("full", 1)

    asyncio.run(scenario())


def _saved(tmp_path: Path, revision: int) -> SavedProgram:
    saved = SavedProgram(tmp_path / "agent-hv1.program.json")
    ruleset = compile_host(DesiredState.from_objects(revision, [parse_object(d) for d in _docs()]), "hv1")
    saved.save(ruleset, program_hash(ruleset), "c1")
    return saved


def test_before_the_first_sync_only_the_saved_program_is_put_back_and_kept_there(tmp_path: Path) -> None:
    async def scenario() -> None:
        controller = FakeController(8, _docs("web-8"))
        controller.fail = ControllerUnavailable("the fake controller is down")
        saved = _saved(tmp_path, 7)
        h = Harness(controller, saved=saved, drift_interval=DRIFT)
        async with h.running():
            await until(lambda: h.table.calls == 1, "the saved program to be put back")
            program = saved.load().program  # type: ignore[union-attr]
            assert h.table.programs == [program] and h.agent.status.revision == 7
            h.table.delete_by_hand()  # removed before the first sync: put back again
            await until(lambda: h.clock.waiting(DRIFT), "the drift check's timer")
            await h.clock.advance(DRIFT)
            await until(lambda: h.table.calls == 2, "the saved program to be put back again")
            assert h.table.programs == [program, program] and h.agent.status.drift_repairs == 1
            await h.clock.advance(INTERVALS["resync"])
            await nothing_more_within()
            assert h.outcomes == [] and len(h.table.programs) == 2  # nothing else before the first sync
            controller.fail = None
            await until(lambda: h.clock.waiting(INTERVALS["retry"]), "the watch's retry timer")
            await h.clock.advance(INTERVALS["retry"])
            await until(lambda: len(h.outcomes) == 1, "the first sync to replace the saved program")
            assert (h.outcomes[0].kind, h.outcomes[0].revision) == ("full", 8)
            assert h.table.programs[-1] == _program_of(8, _docs("web-8"))

    asyncio.run(scenario())


def test_a_saved_program_is_not_put_back_over_a_table_the_kernel_kept(tmp_path: Path) -> None:
    async def scenario() -> None:
        controller = FakeController(8, _docs())
        controller.fail = ControllerUnavailable("the fake controller is down")
        table = FakeTable()
        table.content = "the program an earlier run of the agent applied"
        h = Harness(controller, table, saved=_saved(tmp_path, 7), drift_interval=DRIFT)
        async with h.running():
            await until(lambda: h.agent.status.revision == 7, "the saved program to be read")
            await until(lambda: h.clock.waiting(DRIFT), "the drift check's timer")
            await h.clock.advance(3 * DRIFT)
            await nothing_more_within()
            assert table.calls == 0 and h.agent.status.revision == 7  # what this host enforced last

    asyncio.run(scenario())


def test_the_last_program_stays_while_the_controller_is_unreachable() -> None:
    async def scenario() -> None:
        controller = FakeController(1, _docs())
        h = Harness(controller, drift_interval=DRIFT)
        async with h.running():
            await until(lambda: len(h.outcomes) == 1, "the first pass")
            enforced = h.table.content
            controller.fail = ControllerUnavailable("the fake controller is down")
            await until(lambda: h.controller_errors >= 1, "the agent to see the controller gone")
            assert not h.agent.status.controller_reachable
            for _ in range(3):
                await h.clock.advance(INTERVALS["resync"])
            await until(lambda: len(h.outcomes) >= 2, "a resync's pass while the controller is away")
            assert {(o.kind, o.revision) for o in h.outcomes[1:]} == {("none", 1)}
            assert h.table.kinds == ["full"] and h.table.content == enforced  # never flushed, never replaced
            assert h.agent.status.in_sync

    asyncio.run(scenario())


def test_a_watch_that_fell_behind_is_gone_by_type_and_lists_again() -> None:
    async def scenario() -> None:
        controller = FakeController(1, _docs())
        h = Harness(controller)
        async with h.running():
            await until(lambda: len(h.outcomes) == 1, "the first pass")
            controller.answer(Gone("revision 1 is older than the oldest kept event"))
            await until(lambda: controller.snapshots == 2, "a new listing")  # at once: no retry wait
            assert h.controller_errors == 0
            # Another error that merely mentions 410 is no reason to list again: it is retried.
            controller.answer(ControllerUnavailable("cannot reach the controller at http://10.0.0.1:410"))
            await until(lambda: h.controller_errors == 1, "the error to be seen")
            watches = len(controller.watches)
            await h.clock.advance(INTERVALS["retry"])
            await until(lambda: len(controller.watches) > watches, "the watch to be retried")
            assert controller.snapshots == 2 and controller.watches[watches] == 1

    asyncio.run(scenario())


def _switch_store(controller: FakeController, cluster_id: str, revision: int, docs: list[dict[str, Any]],
                  lineage: list[str] | None = None) -> None:
    """The controller now answers from another store (restarted on it)."""
    controller.cluster_id = cluster_id
    controller.listing = {"revision": revision, "objects": docs, "clusterId": cluster_id}
    if lineage is not None:
        controller.listing["lineage"] = lineage


def test_a_store_restored_from_a_backup_of_ours_is_taken_even_at_an_older_revision() -> None:
    """`stockade restore` gives the store a new identity with ours in its lineage: the agent takes
    its state (older than what it enforces: the backup's) instead of holding its program."""
    async def scenario() -> None:
        controller = FakeController(5, _docs("late"), cluster_id="c1")
        h = Harness(controller)
        async with h.running():
            await until(lambda: h.outcomes and h.outcomes[-1].revision == 5, "revision 5 of store c1")
            _switch_store(controller, "c2", 3, _docs(), lineage=["c0", "c1"])
            await until(lambda: h.outcomes[-1].revision == 3, "the restored store's revision 3")
            assert h.table.programs[-1] == _program_of(3, _docs())  # "late" (revision 5) is gone
            assert h.agent.cluster_id == "c2" and not h.agent.status.error

    asyncio.run(scenario())


def test_a_stranger_store_behind_us_is_held_off_even_with_a_lineage() -> None:
    async def scenario() -> None:
        controller = FakeController(5, _docs("late"), cluster_id="c1")
        h = Harness(controller)
        async with h.running():
            await until(lambda: h.outcomes and h.outcomes[-1].revision == 5, "revision 5 of store c1")
            enforced = h.table.content
            _switch_store(controller, "c9", 3, _docs(), lineage=["c7"])  # restored, but from someone else
            await until(lambda: "store conflict" in (h.agent.status.error or ""), "the conflict to be reported")
            assert h.table.content == enforced and h.agent.cluster_id == "c1"

    asyncio.run(scenario())


# ================================================================== what it reports (no kernel)

class CompilingReconciler:
    """Compiles like the real one and says what it would apply; programs nothing."""

    applied = None

    def reconcile(self, state: DesiredState) -> Outcome:
        compiled = compile_host_program(state, "hv1")
        return Outcome("full", state.revision, "hash", 1, 0.0, False, compiled.not_programmed)


class RecordingClient:
    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []

    def report_status(self, host: str, report: dict[str, Any]) -> None:
        self.reports.append(report)


def _state(*interfaces: str) -> DesiredState:
    docs: list[dict[str, Any]] = [{"apiVersion": "stockade.io/v1", "kind": "Namespace", "metadata": {"name": "a"}}]
    for i, iface in enumerate(interfaces):
        docs.append({"apiVersion": "stockade.io/v1", "kind": "Workload",
                     "metadata": {"name": f"w{i}", "namespace": "a"},
                     "spec": {"host": "hv1", "ips": [f"198.18.10.{i + 1}"], "interface": iface}})
    return DesiredState.from_objects(3, [parse_object(d) for d in docs])


def test_report_lists_workloads_the_program_leaves_out_and_clears_them_when_fixed() -> None:
    client = RecordingClient()
    agent = Agent(AgentConfig(host="hv1"), client, CompilingReconciler())  # type: ignore[arg-type]
    failed, reported = agent._step(_state("tap1", "tap1", "fab0"))
    assert (failed, reported) == (False, True)
    report = client.reports[-1]
    assert report["inSync"] is True and report["error"] is None  # the rest of the host is enforced
    assert [n["object"] for n in report["notProgrammed"]] == ["a/w1", "a/w2"]
    assert "tap1" in report["notProgrammed"][0]["reason"] and "a/w0" in report["notProgrammed"][0]["reason"]
    assert "fab0" in report["notProgrammed"][1]["reason"]
    agent._step(_state("tap1", "tap2"))
    assert client.reports[-1]["notProgrammed"] == []


# ================================================================== against a real controller and kernel


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"stka-{uuid.uuid4().hex[:10]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _driver(netns: str) -> NftDriver:
    return NftDriver(runner=lambda cmd, stdin=None: run_command(["ip", "netns", "exec", netns, *cmd], stdin))


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[tuple[ControllerClient, ControllerClient]]:
    tokens = create_token_file(tmp_path / "tokens.json", [{"name": "admin", "role": "admin"},
                                                          {"name": "hv1", "role": "agent", "host": "hv1"}])
    running = start_in_thread(ControllerConfig(db_path=tmp_path / "c.db", tokens_file=tmp_path / "tokens.json"))
    try:
        yield ControllerClient(running.url, tokens["admin"]), ControllerClient(running.url, tokens["hv1"])
    finally:
        running.stop()


async def _run_until(agent: Agent, predicate, timeout: float = 10.0) -> bool:
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            if await asyncio.to_thread(predicate):
                return True
            await asyncio.sleep(0.1)
        return False
    finally:
        stop.set()
        await task


def _fast() -> AgentConfig:
    return AgentConfig(host="hv1", watch_timeout=2.0, drift_interval=0.2, heartbeat_interval=0.5,
                       retry_interval=0.2)


@pytest.mark.kernel
def test_nothing_is_programmed_before_the_first_full_sync(netns: str) -> None:
    driver = _driver(netns)
    unreachable = ControllerClient("http://127.0.0.1:9", "t", timeout=0.5)
    agent = Agent(_fast(), unreachable, Reconciler(driver, "hv1"))
    programmed = asyncio.run(_run_until(agent, lambda: driver.list_table() is not None, timeout=2.0))
    assert programmed is False
    assert driver.list_table() is None


@pytest.mark.kernel
def test_watch_brings_changes_to_the_kernel_and_status_reports_them(netns: str, controller) -> None:
    admin, agent_client = controller
    driver = _driver(netns)
    reconciler = Reconciler(driver, "hv1")
    metrics = AgentMetrics(reconciler)
    agent = Agent(_fast(), agent_client, reconciler, on_outcome=metrics.observe)

    async def scenario() -> bool:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            await asyncio.sleep(0.5)  # first sync of the empty store
            result = await asyncio.to_thread(admin.apply, list(yaml.safe_load_all(SHOP)), "test")
            rev = int(result["revision"])
            for _ in range(100):
                status = await asyncio.to_thread(admin.status)
                hv1 = [a for a in status["agents"] if a["host"] == "hv1"]
                if hv1 and hv1[0]["revision"] == rev and hv1[0]["inSync"]:
                    return True
                await asyncio.sleep(0.1)
            return False
        finally:
            stop.set()
            await task

    assert asyncio.run(scenario())
    listing = subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "table", "inet", "stockade"],
                             capture_output=True, text=True).stdout
    assert 'comment "shop/web/http"' in listing
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())}
    ok = [s for s in families["stockade_agent_transactions"].samples
          if s.name.endswith("_total") and s.labels.get("result") == "ok"]
    assert sum(s.value for s in ok) >= 2  # the empty program, then the shop
    rules = {s.labels["rule"] for s in families["stockade_rule_packets"].samples}
    assert "shop/web/http" in rules and "shop/default-deny/ingress" in rules
    http = next(s for s in families["stockade_rule_packets"].samples if s.labels["rule"] == "shop/web/http")
    assert (http.labels["namespace"], http.labels["policy"], http.labels["direction"]) == ("shop", "web", "ingress")
    assert families["stockade_agent_enforced_revision"].samples[0].value >= 1
