"""The agent's copy of the desired state, kept by list + watch.

`synced` is False until the first full list has been loaded: the agent must
never program the kernel from a partial view.
"""

from __future__ import annotations

from typing import Any, Mapping, TypeVar

from pydantic import BaseModel

from stockade.model.kinds import ObjectKey, key_of, parse_stored
from stockade.model.kinds import StockadeObject
from stockade.model.state import DesiredState

T = TypeVar("T")


# One frozenset per distinct "fields given" of a model, shared by every model that has it.
_FIELDS_SETS: dict[frozenset[str], frozenset[str]] = {}


def share_fields_sets(obj: T) -> T:
    """`obj` with every nested model's `__pydantic_fields_set__` replaced by a shared frozenset.

    Each pydantic model carries its own set of the field names it was given (216 bytes at
    least); a 10,000-workload state holds ~150,000 models, so those sets alone were ~30 MB of
    the agent's RSS (docs/performance.md). The cache's objects are frozen and never copied
    with updates, so the sets are only read; a frozenset makes any attempt to change one
    fail loudly instead of changing the others.
    """
    stack: list[Any] = [obj]
    while stack:
        node = stack.pop()
        if isinstance(node, BaseModel):
            fields = node.__pydantic_fields_set__
            shared = _FIELDS_SETS.setdefault(frozenset(fields), frozenset(fields))
            object.__setattr__(node, "__pydantic_fields_set__", shared)
            stack.extend(node.__dict__.values())
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, (BaseModel, list, dict)))
        elif isinstance(node, dict):
            stack.extend(v for v in node.values() if isinstance(v, (BaseModel, list, dict)))
    return obj


class StateCache:
    def __init__(self) -> None:
        self.revision = 0
        self.synced = False
        self._objects: dict[ObjectKey, StockadeObject] = {}
        self._state: DesiredState | None = None

    def replace(self, revision: int, documents: list[Mapping[str, Any]]) -> None:
        """Load a full listing (first sync, or after the watch fell too far behind).

        Consumes `documents`: a list's items are set to None as they are parsed."""
        self._objects = {}
        self._state = None
        # A listing of 10,000 workloads is ~30 MB of JSON dicts next to ~50 MB of parsed
        # objects: each dict is dropped from the caller's list once parsed, so both never
        # coexist in full and the agent's peak RSS stays lower (see docs/performance.md).
        mutable = isinstance(documents, list)
        for i, d in enumerate(documents):
            obj = share_fields_sets(parse_stored(d))
            self._objects[key_of(obj)] = obj
            if mutable:
                documents[i] = None  # type: ignore[index]
        self.revision = revision
        self.synced = True
        self._state = None

    def apply_events(self, revision: int, events: list[Mapping[str, Any]]) -> None:
        for ev in events:
            key = ObjectKey(str(ev["kind"]), str(ev.get("namespace") or ""), str(ev["name"]))
            if ev["type"] == "DELETE":
                self._objects.pop(key, None)
            else:
                self._objects[key] = share_fields_sets(parse_stored(ev["object"]))
        self.revision = max(self.revision, revision)
        self._state = None

    def state(self) -> DesiredState:
        if self._state is None or self._state.revision != self.revision:
            self._state = DesiredState.from_objects(self.revision, self._objects.values())
        return self._state
