"""The agent: one asyncio loop, level-triggered.

Watch events, the resync timer and the drift check only set `dirty`; the
reconcile task takes the latest desired state and makes the host equal to it
(firewall first, then — in the lab — the workloads' interfaces, so a new
workload never exists without its policy). Blocking work (HTTP, nft,
netlink) runs in threads, off the loop.

Invariants: nothing computed from a partial view is programmed before the first full
sync; when the controller is unreachable the last program stays in force (we never
flush). At start, before that sync, the last program this host applied (saved on local
disk) is put back if the kernel has no table of ours (a reboot), and kept there until the
first sync replaces it: a host never runs open while its controller is away.

The kernel's per-rule counters go into the heartbeat's report, read just before it in a worker
thread (agent.rule_counters); the reports the reconcile step sends carry the last reading, so
listing the table never lengthens a rollout.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

from stockade.agent.cache import StateCache
from stockade.agent.memory import release_free_memory
from stockade.agent.migration import ConnectionCarrier, moves
from stockade.agent.reconciler import Outcome, Reconciler
from stockade.agent.saved_program import SavedProgram
from stockade.compile.stale_flows import FlowMemory
from stockade.clock import utc_now_iso
from stockade.errors import Gone, StockadeError
from stockade.model.naming import workload_interface
from stockade.model.reports import AgentReport, Endpoint, Handoff, NotProgrammed, RuleCount
from stockade.model.state import DesiredState

log = logging.getLogger(__name__)

MAX_HANDOFFS_SHOWN = 64  # the report lists the last arrivals, not every one since the start


class ControllerApi(Protocol):
    def snapshot(self) -> dict[str, Any]: ...
    def watch(self, since: int, timeout: float) -> dict[str, Any]: ...
    def report_status(self, host: str, report: dict[str, Any]) -> Any: ...
    def close(self) -> None: ...  # also ends a watch in flight (see agent.main.run_agent)


class FlowSource(Protocol):
    """The flow pipeline (agent.flows): told each state the kernel enforces, run as a task."""

    def update(self, state: DesiredState, ruleset: Any) -> None: ...
    async def run(self, stop: asyncio.Event) -> None: ...


# The kernel's per-rule counters as a report carries them, and how many entries were left out
# (agent.rule_counters.RuleCounterReader.read).
RuleCounterSource = Callable[[], tuple[dict[str, dict[str, RuleCount]], int]]


class LinkEvents(Protocol):
    """A reader of link events (dataplane.link_events.LinkEventReader): a context manager whose
    `run(halt, sink, poll)` hands each (kind, interface) to `sink` until `halt` is set."""

    def __enter__(self) -> "LinkEvents": ...
    def __exit__(self, *exc: object) -> None: ...
    def run(self, stop: threading.Event, sink: Callable[[tuple[str, str]], None], poll: float = 1.0) -> None: ...


class EndpointDriver(Protocol):
    """Realises local workloads' interfaces (the lab's plumbing); returns their status by `ns/name`."""

    def reconcile(self, state: DesiredState) -> dict[str, dict[str, Any]]: ...


@dataclass
class AgentConfig:
    host: str
    watch_timeout: float = 20.0
    resync_interval: float = 30.0
    drift_interval: float = 1.0
    heartbeat_interval: float = 5.0
    retry_interval: float = 1.0
    save_interval: float = 1.0  # how soon a newly applied program is saved to disk
    # Take the controller's state even from another store, or one behind what this host
    # enforces (an operator's decision after a restore: `--accept-new-store`).
    accept_new_store: bool = False
    conflict_retry_interval: float = 5.0


_now = utc_now_iso  # the wall clock of reports (stockade.clock)


@dataclass
class AgentStatus:
    revision: int = 0
    program_hash: str | None = None
    applied_at: str | None = None
    in_sync: bool = False
    error: str | None = None
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    controller_reachable: bool = False
    drift_repairs: int = 0
    last_drift_at: str | None = None
    # Local workloads the program leaves out, and why: [{"object": "ns/name", "reason": ...}].
    not_programmed: list[dict[str, str]] = field(default_factory=list)
    # Workloads that moved here, and the connections taken over (agent.migration); the last few.
    handoffs: dict[str, Handoff] = field(default_factory=dict)
    # The kernel's per-rule counters at the last heartbeat (agent.rule_counters), and how many
    # rule entries the cap left out.
    rule_counters: dict[str, dict[str, RuleCount]] = field(default_factory=dict)
    rule_counters_omitted: int = 0

    def report(self) -> dict[str, Any]:
        """The report's wire form, as the one AgentReport type (model.reports) gives it."""
        return AgentReport(
            revision=self.revision, program_hash=self.program_hash, applied_at=self.applied_at,
            in_sync=self.in_sync, error=self.error, drift_repairs=self.drift_repairs,
            last_drift_at=self.last_drift_at,
            endpoints={k: Endpoint.from_dict(v) for k, v in self.endpoints.items()},
            not_programmed=tuple(NotProgrammed(n["object"], n["reason"]) for n in self.not_programmed),
            handoffs=dict(self.handoffs), rule_counters=self.rule_counters,
            rule_counters_omitted=self.rule_counters_omitted).to_dict()


class Agent:
    def __init__(self, config: AgentConfig, client: ControllerApi, reconciler: Reconciler,
                 endpoints: EndpointDriver | None = None,
                 on_outcome: Callable[[Outcome], None] | None = None,
                 on_failure: Callable[[], None] | None = None,
                 flows: FlowSource | None = None,
                 on_controller_error: Callable[[], None] | None = None,
                 saved: SavedProgram | None = None,
                 forget_connections: Callable[[set[str]], int] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 link_events: Callable[[], LinkEvents] | None = None,
                 carrier: ConnectionCarrier | None = None,
                 rule_counters: RuleCounterSource | None = None) -> None:
        self.config = config
        self.client = client
        self.reconciler = reconciler
        self.endpoints = endpoints
        self.on_outcome = on_outcome
        self.on_failure = on_failure
        self.on_controller_error = on_controller_error
        self.saved = saved
        self._saved_hash: str | None = None
        self._restored: dict[str, Any] | None = None  # the saved program, while it is what we enforce
        self.cluster_id: str | None = None  # identity of the store whose state we enforce
        self.forget_connections = forget_connections
        self.sleep = sleep  # every timer and retry waits through it: tests pass a clock they move
        # Interfaces appearing or going away (dataplane.link_events): a local workload's wakes the
        # loop at once, so its host side is plumbed and reported when the hypervisor makes it.
        self.link_events = link_events
        self._local_interfaces: frozenset[str] = frozenset()
        self._flows_seen = FlowMemory()  # what the last state held: whose connections to end next
        # Live migration (agent.migration): the last state this host enforced, to see workloads
        # move; the arrivals whose connections are still to be taken over; the tasks doing it.
        self.carrier = carrier
        self._enforced: DesiredState | None = None
        self._arrivals: list[tuple[str, int, int]] = []   # (ns/name, revision, last revision seen elsewhere)
        self._takeovers: set[asyncio.Task[None]] = set()
        self._conflict: str | None = None
        self.flows = flows
        self.rule_counters = rule_counters  # read before each heartbeat's report
        self.cache = StateCache()
        self.status = AgentStatus()
        self.dirty = asyncio.Event()
        self.reported = asyncio.Event()
        self._report_lock = threading.Lock()  # held in worker threads (see _report_now)

    async def run(self, stop: asyncio.Event) -> None:
        if self.saved is not None:
            await asyncio.to_thread(self._restore)
        tasks = [asyncio.create_task(coro) for coro in (
            self._watch_loop(stop), self._reconcile_loop(stop), self._timer(stop, self.config.resync_interval),
            self._drift_loop(stop), self._heartbeat_loop(stop), self._save_loop(stop))]
        if self.flows is not None:
            tasks.append(asyncio.create_task(self.flows.run(stop)))
        if self.link_events is not None and self.endpoints is not None:
            tasks.append(asyncio.create_task(self._link_loop(stop)))
        try:
            await stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------ inputs

    async def _watch_loop(self, stop: asyncio.Event) -> None:
        since: int | None = None
        while not stop.is_set():
            try:
                if since is None:
                    snap = await asyncio.to_thread(self.client.snapshot)
                    conflict = self._store_conflict(snap.get("clusterId"), int(snap["revision"]),
                                                    tuple(snap.get("lineage") or ()))
                    if conflict is not None:
                        del snap
                        await self._hold(conflict)
                        continue
                    listed = len(snap["objects"])
                    self.cache.replace(int(snap["revision"]), snap["objects"])
                    del snap
                    release_free_memory()  # the listing was parsed and dropped: give its pages back
                    since = self.cache.revision
                    log.info("full sync at revision %d (%d objects)", since, listed)
                    self.dirty.set()
                result = await asyncio.to_thread(self.client.watch, since, self.config.watch_timeout)
                self.status.controller_reachable = True
                if result.get("clusterId", self.cluster_id) != self.cluster_id:
                    log.warning("the controller now answers from another store: listing again")
                    since = None
                    continue
                # A newer revision without events changed nothing this host holds (its view,
                # controller.host_views); it is still the revision to enforce and report.
                if result.get("events") or int(result["revision"]) > self.cache.revision:
                    self.cache.apply_events(int(result["revision"]), result.get("events") or [])
                    self.dirty.set()
                since = max(since, int(result["revision"]))
            except StockadeError as e:
                self.status.controller_reachable = False
                if isinstance(e, Gone):  # by type: the client raises Gone for a 410 (errors.error_from_response)
                    log.info("watch fell behind the controller's log: listing again")
                    since = None
                    continue
                log.warning("controller: %s; keeping the last program", e.message)
                self._controller_failed()
                await self.sleep(self.config.retry_interval)
            except Exception as e:  # noqa: BLE001 - the loop must survive anything the network throws
                self.status.controller_reachable = False
                log.warning("watch failed: %r; keeping the last program", e)
                self._controller_failed()
                await self.sleep(self.config.retry_interval)

    def _controller_failed(self) -> None:
        if self.on_controller_error is not None:
            self.on_controller_error()

    def _store_conflict(self, cluster_id: str | None, revision: int, lineage: tuple[str, ...] = ()) -> str | None:
        """Why the listed state must not replace what this host enforces, or None (and the
        store's identity is taken as ours). A controller started on an empty or another
        database would otherwise make every agent program its (empty) state within a second.
        A store restored from a backup of ours (our identity in its `lineage`, which only
        `stockade restore` writes) is a deliberate successor: taken, even at an older revision,
        since its revision numbers may repeat ones we saw with other content."""
        enforced = self.status.revision
        problem = None
        if self.cluster_id is not None and cluster_id is not None and self.cluster_id in lineage:
            log.warning("the controller's store was restored from a backup of the store we enforce (identity %s, "
                        "revision %d; we enforce revision %d of %s): taking its state", cluster_id, revision,
                        enforced, self.cluster_id)
        elif self.cluster_id is not None and cluster_id is not None and cluster_id != self.cluster_id:
            problem = (f"the controller's store is another one (identity {cluster_id}, we enforce revision "
                       f"{enforced} of store {self.cluster_id})")
        elif revision < enforced:
            problem = f"the controller's store is at revision {revision}, behind revision {enforced} that we enforce"
        if problem is not None and not self.config.accept_new_store:
            return (f"store conflict: {problem}; keeping the program we enforce. If that store is right, restart "
                    f"this agent with --accept-new-store")
        if problem is not None:
            log.warning("accepting a new store (--accept-new-store): %s", problem)
        self.cluster_id = cluster_id
        self._conflict = None
        return None

    async def _hold(self, conflict: str) -> None:
        """Keep the program, say why in the status report, and ask again later."""
        if conflict != self._conflict:
            log.error("%s", conflict)
            self._conflict = conflict
        self.status.error = conflict
        await self._report()
        await self.sleep(self.config.conflict_retry_interval)

    async def _link_loop(self, stop: asyncio.Event) -> None:
        """Read link events in a thread; a local workload's interface (or a lost burst) wakes the loop."""
        assert self.link_events is not None
        loop = asyncio.get_running_loop()
        halt = threading.Event()

        def sink(event: tuple[str, str]) -> None:
            kind, name = event
            if kind == "overrun" or name in self._local_interfaces:
                log.debug("link event: %s %s", kind, name or "(lost events)")
                loop.call_soon_threadsafe(self.dirty.set)

        def read() -> None:
            assert self.link_events is not None
            with self.link_events() as reader:
                reader.run(halt, sink, poll=0.5)

        reading = asyncio.create_task(asyncio.to_thread(read))
        try:
            await stop.wait()
        finally:
            halt.set()
            await asyncio.gather(reading, return_exceptions=True)

    async def _timer(self, stop: asyncio.Event, interval: float) -> None:
        while not stop.is_set():
            await self.sleep(interval)
            self.dirty.set()

    # ----------------------------------------------------- the saved program

    def _restore(self) -> None:
        """At start: put the saved program back when the kernel has no table of ours."""
        assert self.saved is not None
        saved = self.saved.load()
        if saved is None:
            return
        self._saved_hash = saved.program_hash
        self.cluster_id = saved.cluster_id
        self.status.revision = saved.revision  # what this host enforced last: a store behind it is suspect
        try:
            if self.reconciler.driver.list_table() is not None:
                return  # the kernel kept its program (an agent restart): the first sync takes over
            self.reconciler.driver.apply(saved.program)
        except StockadeError as e:
            log.error("restoring the saved program failed: %s", e.message)
            return
        self._restored = saved.program
        self.status.revision, self.status.program_hash = saved.revision, saved.program_hash
        log.warning("no table in the kernel: enforcing the saved program of revision %d until the controller "
                    "answers", saved.revision)

    def _repair_restored(self) -> None:
        """Before the first sync, the saved program is what we enforce: put it back if removed."""
        if self._restored is not None and self.reconciler.driver.list_table() is None:
            log.warning("our table was removed before the first sync: restoring the saved program")
            self.reconciler.driver.apply(self._restored)
            self.status.drift_repairs += 1

    async def _save_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set() and self.saved is not None:
            await self.sleep(self.config.save_interval)
            applied, applied_hash = self.reconciler.applied, self.reconciler.applied_hash
            if applied is None or applied_hash is None or applied_hash == self._saved_hash:
                continue
            try:
                await asyncio.to_thread(self.saved.save, applied, applied_hash, self.cluster_id)
                self._saved_hash = applied_hash
            except OSError as e:
                log.warning("saving the applied program failed: %r", e)

    async def _drift_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.sleep(self.config.drift_interval)
            if self.reconciler.applied is None:
                if self._restored is not None:
                    try:
                        await asyncio.to_thread(self._repair_restored)
                    except StockadeError as e:
                        log.warning("restoring the saved program failed: %s", e.message)
                continue
            self._restored = None
            try:
                in_sync = await asyncio.to_thread(self.reconciler.in_sync)
            except StockadeError as e:
                log.warning("drift check failed: %s", e.message)
                in_sync = False
            if not in_sync:
                # Told to the controller at once, before the repair, so drift is never silent.
                self.status.in_sync = False
                self.status.last_drift_at = _now()
                self.dirty.set()
                await self._report()

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.sleep(self.config.heartbeat_interval)
            if self.rule_counters is not None:
                await asyncio.to_thread(self._read_rule_counters)
            await self._report()

    def _read_rule_counters(self) -> None:
        """Take the kernel's per-rule counters for the next reports (in a worker thread); when the
        kernel cannot be read, the last reading stays (counters only grow: it is an undercount)."""
        assert self.rule_counters is not None
        try:
            self.status.rule_counters, self.status.rule_counters_omitted = self.rule_counters()
        except Exception as e:  # noqa: BLE001 - a failed reading must not stop the heartbeat
            log.warning("reading the rule counters failed: %r; reporting the last reading", e)

    # -------------------------------------------------------- the loop

    async def _reconcile_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.dirty.wait()
            self.dirty.clear()
            if not self.cache.synced:
                continue  # never program a partial view
            # The whole step in one worker thread: each hop from the loop to a thread costs about
            # as much CPU as a small delta transaction, and a label change used to take four.
            failed, reported = await asyncio.to_thread(self._step, self.cache.state())
            if reported:
                self.reported.set()
            while self._arrivals:
                task = asyncio.create_task(self._take_over(*self._arrivals.pop(0)))
                self._takeovers.add(task)
                task.add_done_callback(self._takeovers.discard)
            if failed:
                asyncio.get_running_loop().call_later(self.config.retry_interval, self.dirty.set)

    def _step(self, state: DesiredState) -> tuple[bool, bool]:
        """Program the kernel, then the lab's interfaces, then report: (failed, reported)."""
        failed = False
        stale: set[str] = set()
        try:
            outcome = self.reconciler.reconcile(state)
            # Enforcement starts when the transaction commits, not when the lab's interfaces
            # have been checked after it: that moment is what `appliedAt` reports.
            programmed_at = _now()
            if outcome.drift_repaired:
                self.status.drift_repairs += 1
            if outcome.kind != "none" or outcome.drift_repaired:
                log.info("revision %d: %s transaction, %d objects, %.1f ms%s", outcome.revision,
                         outcome.kind, outcome.objects_sent, outcome.seconds * 1000,
                         " (drift repaired)" if outcome.drift_repaired else "")
            if self.endpoints is not None:
                self._local_interfaces = frozenset(
                    workload_interface(wl) for wl in state.workloads.values() if wl.spec.host == self.config.host)
                self.status.endpoints = self.endpoints.reconcile(state)
            if self.flows is not None:  # workloads and log sites of what the kernel now runs
                self.flows.update(state, self.reconciler.applied)
            if self.carrier is not None:
                self._carry_connections(state)
            stale = self._flows_seen.forget(state, self.config.host)
            self.status.revision = outcome.revision
            self.status.program_hash = outcome.program_hash
            not_programmed = [n.to_dict() for n in outcome.not_programmed]
            if not_programmed != self.status.not_programmed:  # logged when it changes, not every resync
                for n in outcome.not_programmed:
                    log.warning("revision %d: Workload %s is not programmed: %s", outcome.revision,
                                n.workload, n.reason)
            self.status.not_programmed = not_programmed
            if outcome.kind != "none" or self.status.applied_at is None:
                self.status.applied_at = programmed_at
            self.status.in_sync = True
            self.status.error = self._conflict  # a store conflict stays in the report until resolved
            if self.on_outcome:
                self.on_outcome(outcome)
        except Exception as e:  # noqa: BLE001 - report, keep the old program, retry
            msg = e.message if isinstance(e, StockadeError) else repr(e)
            log.error("reconcile of revision %d failed: %s", state.revision, msg)
            self.status.error = msg
            self.status.in_sync = False
            if self.on_failure:
                self.on_failure()
            failed = True
        # Before the report: a revision is enforced once the connections it ends are gone, so
        # `apply --wait` never returns while one of them can still carry a packet. There is
        # nothing to end in most revisions (`FlowMemory.forget`), and then this costs nothing.
        if stale and self.forget_connections is not None:
            self._end_connections(state.revision, stale)
        reported = self._report_now()
        return failed, reported

    def _carry_connections(self, state: DesiredState) -> None:
        """After the program is in force: hand off the connections of workloads that left (their
        ports are dropped now, so no packet changes an entry after its export); note the arrivals,
        whose connections are taken over beside the loop (`_take_over`), not in its way."""
        assert self.carrier is not None
        before, self._enforced = self._enforced, state
        moved = moves(before, state, self.config.host)
        if moved.left:
            staying = {ip for wl in state.workloads.values() if wl.spec.host == self.config.host
                       for ip in state.workload_ips(wl)}
            for key in moved.left:
                self.carrier.hand_off(state, key, staying)
        if moved.arrived and before is not None:
            self._arrivals += [(key, state.revision, before.revision) for key in moved.arrived]

    async def _take_over(self, key: str, revision: int, seen_elsewhere_at: int) -> None:
        assert self.carrier is not None
        note = await asyncio.to_thread(self.carrier.take_over, key, revision, seen_elsewhere_at)
        self.status.handoffs[key] = note
        while len(self.status.handoffs) > MAX_HANDOFFS_SHOWN:
            self.status.handoffs.pop(next(iter(self.status.handoffs)))
        await self._report()

    def _end_connections(self, revision: int, stale: set[str]) -> None:
        """After the program is in force: a connection's next packet meets the new policy (or no
        owner), so one that conntrack forgets now cannot come back through an old rule."""
        assert self.forget_connections is not None
        try:
            ended = self.forget_connections(stale)
        except StockadeError as e:
            log.error("revision %d: ending the connections of %s failed: %s", revision, sorted(stale), e.message)
            return
        log.info("revision %d: ended %d connections of %d addresses that changed hands or whose policy "
                 "enforces established connections", revision, ended, len(stale))

    async def _report(self) -> None:
        if await asyncio.to_thread(self._report_now):
            self.reported.set()

    def _report_now(self) -> bool:
        """Send the status (in a worker thread); False when the controller did not take it."""
        # One report at a time, its content taken once it is this one's turn: a heartbeat that
        # snapshotted revision N and was still in flight used to land after the reconcile's report
        # of N+1, so the controller showed the agent behind until the next heartbeat (5 s later).
        with self._report_lock:
            try:
                self.client.report_status(self.config.host, self.status.report())
                return True
            except Exception as e:  # noqa: BLE001 - the controller may be down; we report again later
                log.debug("status report failed: %r", e)
                return False
