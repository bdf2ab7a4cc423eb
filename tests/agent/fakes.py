"""Fakes for tests of the agent's decisions (no root, no kernel): a table whose "kernel" state the
test controls, a clock the test moves, and a controller that answers what the test queues.

They stand in for the kernel and the network only where the test is about what the agent decides
(which transaction, when to program, when to keep what it has); what reaches the kernel is tested
with the real one (tests/agent/test_reconciler.py, tests/dataplane/test_nft_driver.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import queue
import threading
from typing import Any

from stockade.errors import ControllerUnavailable, DataplaneError, StockadeError
from stockade.nft.render import to_json

Json = dict[str, Any]


def is_element_only(program: Json) -> bool:
    """A set-element transaction (a delta), as opposed to a full replacement of the table."""
    return all(set(body) == {"element"} for cmd in program["nftables"] for body in cmd.values())


class FakeTable:
    """The kernel's copy of our table as the reconciler sees it: what was applied, a ruleset
    generation (the count of committed transactions, or None: unknown, as through another
    netns's runner) and a fingerprint of the table's content. The test edits it by hand."""

    table = "stockade"

    def __init__(self, generations: bool = True) -> None:
        self.generations = generations
        self.content: str | None = None  # None: no table of ours in the kernel
        self.commits = 0
        self.programs: list[Json] = []  # every transaction the kernel took, in order
        self.calls = 0
        self.listings = 0
        self.refuse = False  # make the next transactions fail as the kernel would
        self.gate: threading.Event | None = None  # when set up, apply() waits for it

    # -- what the agent calls
    def apply(self, program: Json) -> None:
        self.calls += 1  # counted on entry: a pass waiting at the gate is already under way
        if self.gate is not None:
            assert self.gate.wait(10), "the test never opened the gate"
        if self.refuse:
            raise DataplaneError(["nft", "-j", "-f", "-"], 1, "Error: refused by the fake kernel")
        self.programs.append(program)
        text = to_json(program)
        self.content = (self.content or "") + text if is_element_only(program) else text
        self.commits += 1

    def check(self, program: Json) -> None:
        """`nft --check`: refused as apply() would be; nothing is committed."""
        if self.refuse:
            raise DataplaneError(["nft", "-c", "-j", "-f", "-"], 1, "Error: refused by the fake kernel")

    def list_table(self) -> Json | None:
        self.listings += 1
        return None if self.content is None else {"nftables": [{"table": {"family": "inet", "name": self.table}}]}

    def fingerprint(self) -> str | None:
        self.listings += 1
        return None if self.content is None else hashlib.sha256(self.content.encode()).hexdigest()

    def generation(self) -> int | None:
        return self.commits if self.generations else None

    # -- what the test does to the kernel
    def hand_edit(self) -> None:
        """Someone changes our table (`nft add rule ...`)."""
        assert self.content is not None
        self.content += "|a rule added by hand"
        self.commits += 1

    def delete_by_hand(self) -> None:
        self.content = None
        self.commits += 1

    def another_program_commits(self) -> None:
        """A transaction on another table: the generation moves, our table does not."""
        self.commits += 1

    @property
    def kinds(self) -> list[str]:
        return ["delta" if is_element_only(p) else "full" for p in self.programs]


class FakeClock:
    """Virtual time for the agent's timers (`Agent(sleep=clock.sleep)`): a sleep ends only when
    the test moves the clock past it, so a resync or a retry happens when the test says."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._order), future))
        await future

    def waiting(self, seconds: float) -> int:
        """How many sleeps are waiting for `seconds` (which timers are armed)."""
        return sum(1 for when, _, f in self._sleepers if not f.done() and when - self.now == seconds)

    async def advance(self, seconds: float) -> None:
        """Move the clock; every sleep that is due ends, in time order, and runs to its next wait."""
        until = self.now + seconds
        while self._sleepers and self._sleepers[0][0] <= until:
            when, _, future = heapq.heappop(self._sleepers)
            self.now = when
            if not future.done():
                future.set_result(None)
            await settle()
        self.now = until
        await settle()


async def settle() -> None:
    """Let every task that can run, run (a few turns of the loop)."""
    for _ in range(20):
        await asyncio.sleep(0)


class FakeController:
    """The controller as the agent's client sees it. `snapshot()` answers the listing the test set
    (or raises what it set); `watch()` answers the next queued result, or after `timeout`
    (real seconds: a long-poll in a worker thread) nothing new; `fail` makes every call raise."""

    def __init__(self, revision: int = 0, objects: list[Json] | None = None, cluster_id: str = "c1") -> None:
        self.listing: Json = {"revision": revision, "objects": list(objects or []), "clusterId": cluster_id}
        self.cluster_id = cluster_id
        self.fail: StockadeError | None = None
        self.snapshots = 0
        self.watches: list[int] = []  # the `since` of every watch
        self.reports: list[Json] = []
        self._results: queue.Queue[Json | StockadeError] = queue.Queue()
        self._closed = threading.Event()

    def answer(self, result: Json | StockadeError) -> None:
        """Queue what the next watch returns (an event batch) or raises."""
        self._results.put(result)

    def events(self, revision: int, *events: Json) -> None:
        self.answer({"revision": revision, "events": list(events), "clusterId": self.cluster_id})

    def snapshot(self) -> Json:
        self.snapshots += 1
        if self.fail is not None:
            raise self.fail
        return {**self.listing, "objects": list(self.listing["objects"])}

    def watch(self, since: int, timeout: float) -> Json:
        self.watches.append(since)
        if self.fail is not None:
            raise self.fail
        try:
            result = self._results.get(timeout=min(timeout, 0.05))
        except queue.Empty:
            return {"revision": since, "events": [], "clusterId": self.cluster_id}
        if isinstance(result, StockadeError):
            raise result
        return result

    def report_status(self, host: str, report: Json) -> None:
        if self.fail is not None:
            raise ControllerUnavailable("the fake controller is down")
        self.reports.append(dict(report))

    def close(self) -> None:
        self._closed.set()
