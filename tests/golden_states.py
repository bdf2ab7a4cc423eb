"""Desired states from the golden inputs (tests/golden/<case>.yaml), and small edits of them.

Shared by the reconciler's and the driver's tests, with a real kernel or a fake one: the same
states, so a decision tested without a kernel is the one the kernel tests see.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from stockade.model.kinds import parse_object
from stockade.model.state import DesiredState

GOLDEN = Path(__file__).resolve().parent / "golden"
HOST = "hv1"


def load_state(case: str = "shop", revision: int = 1) -> DesiredState:
    docs = [d for d in yaml.safe_load_all((GOLDEN / f"{case}.yaml").read_text()) if d]
    return DesiredState.from_objects(revision, [parse_object(d) for d in docs])


def relabel(state: DesiredState, ns: str, name: str, labels: dict[str, str], revision: int = 2) -> DesiredState:
    wl = state.workloads[(ns, name)]
    changed = wl.model_copy(update={"metadata": wl.metadata.model_copy(update={"labels": labels})})
    return state.with_changes(revision, put=[changed])
