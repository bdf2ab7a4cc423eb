"""Keep the agent's resident memory close to what it holds (glibc malloc tuning). No-ops elsewhere.

The agent parses a full listing (tens of MB of JSON for a large fleet) in a
worker thread and keeps a fraction of it. glibc gives each thread that calls
malloc its own arena, and memory freed in one arena is not reused by the
others, so the transient listing stayed resident (see docs/performance.md):
- `limit_arenas()` (at start, before any thread) keeps one arena;
- `release_free_memory()` (after a full sync) returns freed heap pages to the system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # mallopt parameter (malloc.h)


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def limit_arenas(arenas: int = 1) -> bool:
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_ARENA_MAX, arenas))


def release_free_memory() -> None:
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
