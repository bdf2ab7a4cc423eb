"""libnftables in-process: what `nft` does, without starting a process for every call.

The agent talks to nftables several times a second (the drift check lists the
table every second, each reconcile lists it before and after its transaction,
the flow shipper reads a counter). As a subprocess each call cost ~4 ms of CPU;
with twenty lab hosts on two cores that alone kept a core busy and slowed every
rollout (see docs/performance.md). This calls the same library the `nft`
command is built on (libnftables.so.1, part of Debian's nftables), with the
same input and output: the JSON flag set, one command buffer in, the output and
error buffers out. It runs in the calling thread's network namespace.

`available()` is False when the library cannot be loaded; callers then run `nft`.
"""

from __future__ import annotations

import ctypes
import threading

from stockade.dataplane.close_later import close_later

NFT_CTX_DEFAULT = 0
NFT_CTX_OUTPUT_JSON = 1 << 4

_lock = threading.Lock()  # libnftables keeps some process-wide state; one call at a time
_lib: ctypes.CDLL | None = None
_loaded = False


def _load() -> ctypes.CDLL | None:
    global _lib, _loaded
    if _loaded:
        return _lib
    _loaded = True
    try:
        lib = ctypes.CDLL("libnftables.so.1")
    except OSError:
        return None
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
    lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
    _lib = lib
    return lib


def available() -> bool:
    with _lock:
        return _load() is not None


def run(commands: str, json_output: bool) -> tuple[int, str, str]:
    """(return code 0 or 1, output, errors) of one buffer of commands, as `nft [-j] -f -` gives."""
    with _lock:
        lib = _load()
        if lib is None:
            raise OSError("libnftables.so.1 is not available")
        ctx = lib.nft_ctx_new(NFT_CTX_DEFAULT)
        if not ctx:
            raise OSError("nft_ctx_new failed")
        try:
            if json_output:
                lib.nft_ctx_output_set_flags(ctx, NFT_CTX_OUTPUT_JSON)
            lib.nft_ctx_buffer_output(ctx)
            lib.nft_ctx_buffer_error(ctx)
            rc = lib.nft_run_cmd_from_buffer(ctx, commands.encode())
            out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode()
            err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode()
        except BaseException:
            lib.nft_ctx_free(ctx)
            raise
    # The transaction is committed. Freeing the context closes its netlink socket, which can
    # wait out an RCU grace period (dataplane.close_later): done off this path, and outside
    # the lock, which the free takes.
    close_later(lambda: _free(lib, ctx))
    return (0 if rc == 0 else 1), out, err


def _free(lib: ctypes.CDLL, ctx: int) -> None:
    with _lock:  # nft_ctx_free also releases process-wide caches
        lib.nft_ctx_free(ctx)
