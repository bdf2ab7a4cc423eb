"""Workloads the lab is moving between hypervisors, as marks both hosts' endpoint drivers read.

A live move takes several steps (lab.migration): the controller is told first, the agents of
both hosts program and hand the connections over, and only then does the workload's link
change hosts. In between, the host it leaves no longer plans the endpoint and the host it goes
to already does; without a mark the first would delete the workload's netns (its processes
and sockets with it) and the second would make a fresh one. The mark says: leave it, it is
in flight. One small file per workload under a run directory of the lab:

    /run/stockade-lab/<prefix>/moving/<namespace>.<name>    "FROM TO"

Invariants: a mark is written before the move's first step and removed after its last (also
when the move fails); `down` removes the lab's directory. Marks are never trusted for more
than whether to leave an endpoint alone: what is planned still comes from the desired state.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from stockade.lab import naming

RUN_DIR = Path("/run/stockade-lab")


@dataclass(frozen=True)
class Move:
    key: str        # "namespace/name"
    source: str     # the hypervisor it leaves
    target: str     # the hypervisor it goes to


def moving_dir(prefix: str) -> Path:
    return RUN_DIR / naming.check_prefix(prefix) / "moving"


def _mark_path(prefix: str, key: str) -> Path:
    namespace, name = key.split("/", 1)
    return moving_dir(prefix) / f"{namespace}.{name}"


def mark(prefix: str, move: Move) -> None:
    path = _mark_path(prefix, move.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{move.source} {move.target}\n")


def unmark(prefix: str, key: str) -> None:
    _mark_path(prefix, key).unlink(missing_ok=True)


def in_flight(prefix: str) -> dict[str, Move]:
    """Every workload the lab is moving now, by "namespace/name"."""
    found: dict[str, Move] = {}
    directory = moving_dir(prefix)
    try:
        names = sorted(p.name for p in directory.iterdir())
    except FileNotFoundError:
        return found
    for file_name in names:
        namespace, _, name = file_name.partition(".")
        try:
            source, target = (directory / file_name).read_text().split()
        except (OSError, ValueError):
            continue  # being written or removed: the next pass reads it again
        found[f"{namespace}/{name}"] = Move(f"{namespace}/{name}", source, target)
    return found


def forget_all(prefix: str) -> bool:
    """Remove the lab's run directory (at `down`); whether there was one."""
    directory = RUN_DIR / naming.check_prefix(prefix)
    if not directory.exists():
        return False
    shutil.rmtree(directory, ignore_errors=True)
    return True
