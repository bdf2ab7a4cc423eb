"""Named network namespaces: list, create, remove, enter; netlink sockets and sysctls inside them.

The only place in the lab that deals with /run/netns and setns(2). Everything
is blocking (pyroute2's synchronous IPRoute runs its own event loop), so call
it from a worker thread when an asyncio loop is running (`asyncio.to_thread`).

Invariants:
- Never forks. pyroute2 creates namespaces and opens sockets in them from a
  forked child, and later SIGTERMs that child; in a multi-threaded asyncio
  process (the agent) the child inherits the loop's signal wake-up fd, so the
  parent's loop can see that SIGTERM as its own and shut down. Instead, the
  work that needs another netns runs in a throwaway thread: setns(2) and
  unshare(CLONE_NEWNET) act on the calling thread only, and a netlink socket
  stays in the netns it was created in.
- Never moves the calling thread to another netns, even when a function raises.
- `open_rtnl` never creates a namespace as a side effect (pyroute2 does by
  default when asked for a missing one); a missing namespace is a LabError.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Callable, Iterable, Mapping, TypeVar

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns
from pyroute2.netlink.exceptions import NetlinkError

from stockade.errors import LabError

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
NETLINK_ROUTE = 0
T = TypeVar("T")
_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(name: str) -> Path:
    return NETNS_DIR / name


def list_netns(startswith: str = "") -> list[str]:
    """Named network namespaces (sorted), optionally only those starting with `startswith`."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(startswith))


def exists(name: str) -> bool:
    return netns_path(name).exists()


def create(name: str) -> None:
    """Create the named netns: a throwaway thread unshares its netns, which is bind-mounted to the name."""

    def make() -> None:
        if _libc.unshare(CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        # pyroute2's attach does what `ip netns add` does (shared /run/netns, mount point,
        # bind mount); given this thread's own ns file rather than the process's.
        pr_netns.attach(name, f"self/task/{threading.get_native_id()}")

    try:
        _in_thread(f"create:{name}", make)
    except OSError as e:
        try:
            netns_path(name).unlink()  # a mount point left without its mount
        except OSError:
            pass
        raise LabError(f"cannot create network namespace {name}: {e}") from e


def remove(name: str) -> bool:
    """Remove the named netns; False when it was already gone.

    The namespace itself lives on while a process is still inside it, without a
    name; its interfaces go when the last such process exits.
    """
    if not exists(name):
        return False
    try:
        pr_netns.remove(name)
    except FileNotFoundError:
        return False
    except OSError as e:
        raise LabError(f"cannot remove network namespace {name}: {e}") from e
    return True


def rename(old: str, new: str) -> None:
    """Give netns `old` the name `new`, keeping the namespace itself (its interfaces, sockets and
    processes): the new name is bound to it first, then the old one let go. A live workload that
    moves to another lab hypervisor keeps its stack under the name of its new host."""
    if not exists(old):
        raise LabError(f"network namespace {old} does not exist")
    if exists(new):
        raise LabError(f"cannot rename network namespace {old} to {new}: {new} exists")

    def bind() -> None:
        pr_netns.setns(old, flags=0)
        pr_netns.attach(new, f"self/task/{threading.get_native_id()}")

    try:
        _in_thread(f"rename:{old}", bind)
    except OSError as e:
        try:
            netns_path(new).unlink()
        except OSError:
            pass
        raise LabError(f"cannot rename network namespace {old} to {new}: {e}") from e
    remove(old)


def _same_file(a: str | Path, b: str | Path) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except FileNotFoundError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def is_current(name: str) -> bool:
    """Is the calling thread already in netns `name` (e.g. an agent started with nsenter)?"""
    return _same_file("/proc/thread-self/ns/net", netns_path(name))


def open_rtnl(name: str) -> IPRoute:
    """An rtnetlink socket in netns `name`; use as a context manager.

    groups=0: we only send requests and dump, so the socket must not subscribe
    to multicast events that would pile up unread in its buffer.
    """
    if not exists(name):
        raise LabError(f"network namespace {name} does not exist")
    try:
        if is_current(name):
            return IPRoute(groups=0)
        sock = run_in(name, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE))
        return IPRoute(fileno=sock.detach(), groups=0)
    except (OSError, NetlinkError) as e:
        raise LabError(f"cannot open netlink in network namespace {name}: {e}") from e


def _in_thread(label: str, fn: Callable[[], T]) -> T:
    """Run `fn` in a new thread and wait; return or raise what it does."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn())
        except BaseException as e:  # re-raised in the caller's thread
            error.append(e)

    thread = threading.Thread(target=target, name=label, daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def run_in(name: str, fn: Callable[[], T]) -> T:
    """Run `fn` inside the network namespace `name` (in a throwaway thread); return or raise what it does."""

    def entered() -> T:
        pr_netns.setns(name, flags=0)  # flags=0: never create it
        return fn()

    return _in_thread(f"netns:{name}", entered)


def write_sysctls(name: str, values: Mapping[str, str]) -> None:
    """Write `net.*` sysctls inside netns `name` (/proc/sys/net resolves the netns of the opener)."""

    def write() -> None:
        for key, value in values.items():
            path = Path("/proc/sys") / key.replace(".", "/")
            try:
                path.write_text(value)
            except OSError as e:
                raise LabError(f"cannot set {key}={value} in network namespace {name}: {e}") from e

    run_in(name, write)


def read_sysctl(name: str, key: str) -> str:
    return run_in(name, lambda: (Path("/proc/sys") / key.replace(".", "/")).read_text().strip())


def pids_in(names: Iterable[str]) -> dict[str, list[int]]:
    """Processes whose network namespace is one of the named ones (by inode, as `ip netns pids`)."""
    wanted: dict[tuple[int, int], str] = {}
    for name in names:
        try:
            st = os.stat(netns_path(name))
        except FileNotFoundError:
            continue
        wanted[(st.st_dev, st.st_ino)] = name
    found: dict[str, list[int]] = {}
    if not wanted:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue  # exited meanwhile, or a kernel thread
        owner = wanted.get((st.st_dev, st.st_ino))
        if owner is not None:
            found.setdefault(owner, []).append(int(entry))
    return found


def kill_pids(pids: Iterable[int]) -> list[int]:
    """SIGKILL each pid (never our own); the ones that were signalled."""
    killed = []
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass
    return killed
