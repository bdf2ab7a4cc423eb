"""Close nftables netlink handles off the caller's path.

Since Linux 6.x, releasing any NETLINK_NETFILTER socket makes the kernel flush its
netns's pending nf_tables destroy work first (`nft_rcv_nl_event` →
`nf_tables_trans_destroy_flush_work`). After a transaction that deleted
something — a set element when a workload leaves a group, the old table in a
full replace — that work waits for an RCU grace period: on these machines the
`close()` took 12 ms (p50) and up to 30 ms, while the transaction itself had
committed and was enforced before it (docs/performance.md). Every libnftables
context owns such a socket (`nft_ctx_free` closes it), and so does each read of
the ruleset generation, so a label change waited out a grace period before the
agent could report it, although the kernel already enforced it.

`close_later(fn)` hands the closing to one background thread. The caller gets
on as soon as its transaction is committed. The handle still closes within a
grace period, and if that thread falls behind (more than `MAX_PENDING` waiting),
the caller closes inline, so pending handles and their memory stay bounded.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from typing import Callable

log = logging.getLogger(__name__)

MAX_PENDING = 8

_pending: queue.Queue[Callable[[], None]] = queue.Queue(maxsize=MAX_PENDING)
_start_lock = threading.Lock()
_closer: threading.Thread | None = None


def close_later(close: Callable[[], None]) -> None:
    """Run `close` soon, in the closer thread; inline when that thread is MAX_PENDING behind."""
    _ensure_closer()
    try:
        _pending.put_nowait(close)
    except queue.Full:
        close()


def drain() -> None:
    """Wait until every handle given so far is closed (tests, orderly shutdown)."""
    if _closer is not None:
        _pending.join()


def _ensure_closer() -> None:
    global _closer
    if _closer is not None:
        return
    with _start_lock:
        if _closer is None:
            # A daemon: at exit the process's own teardown closes whatever is still queued.
            _closer = threading.Thread(target=_run, name="nft-close-later", daemon=True)
            _closer.start()


def _forget_closer() -> None:
    """In a forked child the closer thread does not exist: start a new one when needed."""
    global _closer, _pending
    _closer = None
    _pending = queue.Queue(maxsize=MAX_PENDING)


os.register_at_fork(after_in_child=_forget_closer)


def _run() -> None:
    while True:
        close = _pending.get()
        try:
            close()
        except Exception:  # noqa: BLE001 - a failed close must not stop later ones
            log.exception("closing a netfilter netlink handle failed")
        finally:
            _pending.task_done()
