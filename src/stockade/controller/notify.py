"""Wake long-polling watchers when the store's revision moves.

Commits run in worker threads (SQLite is blocking); watchers wait on the event
loop. `publish` may be called from any thread; it records the revision and
schedules `notify_all` on each loop's `asyncio.Condition`. One condition per
loop, because an asyncio primitive belongs to the loop that first used it
(tests and tools may run several loops in turn).

No wakeup is lost: a watcher checks the revision while holding its condition's
lock and releases it only inside `Condition.wait`, and the notifying task must
take the same lock first.
"""

from __future__ import annotations

import asyncio
import threading
import weakref


class RevisionNotifier:
    def __init__(self, revision: int) -> None:
        self._revision = revision
        self._lock = threading.Lock()
        self._conditions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Condition] = (
            weakref.WeakKeyDictionary())
        self._tasks: set[asyncio.Task[None]] = set()  # strong refs until the notify tasks finish
        self._released = False

    @property
    def revision(self) -> int:
        return self._revision

    def publish(self, revision: int) -> None:
        """Record that `revision` is committed and wake every watcher. Thread-safe."""
        with self._lock:
            self._revision = max(self._revision, revision)
        self._wake_all()

    def release(self) -> None:
        """Shutting down: every current and future wait returns at once (with no news), so
        long-polls answer instead of being cut off when the server stops."""
        self._released = True
        self._wake_all()

    def _wake_all(self) -> None:
        with self._lock:
            targets = list(self._conditions.items())
        for loop, condition in targets:
            if loop.is_closed():
                continue
            try:
                loop.call_soon_threadsafe(self._schedule_notify, condition)
            except RuntimeError:  # the loop closed between the check and the call
                pass

    def _schedule_notify(self, condition: asyncio.Condition) -> None:
        task = asyncio.get_running_loop().create_task(self._notify(condition))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _notify(condition: asyncio.Condition) -> None:
        async with condition:
            condition.notify_all()

    def _condition(self) -> asyncio.Condition:
        loop = asyncio.get_running_loop()
        with self._lock:
            condition = self._conditions.get(loop)
            if condition is None:
                condition = self._conditions[loop] = asyncio.Condition()
            return condition

    async def wait_beyond(self, since: int, timeout: float) -> bool:
        """True as soon as the revision is above `since`; False after `timeout` seconds or on release."""
        condition = self._condition()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        async with condition:
            while self._revision <= since and not self._released:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                try:
                    await asyncio.wait_for(condition.wait(), remaining)
                except asyncio.TimeoutError:
                    return self._revision > since
            return self._revision > since  # False when released with no news
