"""The agent's copy of the desired state, kept by list + watch.

`synced` is False until the first full list has been loaded: the agent must
never program the kernel from a partial view.
"""

from __future__ import annotations

from dataclasses import replace

from typing import Any, Iterable, Mapping, TypeVar

from pydantic import BaseModel

from stockade.model.kinds import ObjectKey, key_of, parse_stored
from stockade.model.kinds import StockadeObject
from stockade.model.objects import Metadata, WorkloadSpec
from stockade.model.state import DesiredState

T = TypeVar("T")


# One frozenset per distinct "fields given" of a model, shared by every model that has it.
_FIELDS_SETS: dict[frozenset[str], frozenset[str]] = {}


def _share_fields_set(model: BaseModel) -> None:
    fields = model.__pydantic_fields_set__
    object.__setattr__(model, "__pydantic_fields_set__", _FIELDS_SETS.setdefault(frozenset(fields),
                                                                                frozenset(fields)))


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
            _share_fields_set(node)
            stack.extend(node.__dict__.values())
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, (BaseModel, list, dict)))
        elif isinstance(node, dict):
            stack.extend(v for v in node.values() if isinstance(v, (BaseModel, list, dict)))
    return obj


def _identity(value: Any) -> Any:
    """What stands for `value` in the key of the part holding it: scalars by value (bool and float
    tagged, since True == 1 == 1.0), anything else (already shared) by identity."""
    t = type(value)
    if t is str or t is int or value is None:
        return value
    if t is bool or t is float:
        return (t, value)
    return (id(value),)


class Sharing:
    """Equal parts of one full listing's objects made one object (hash-consing).

    Of 10,000 workloads and 2,000 policies, most strings (namespaces, hosts, label keys and
    values, group names), label dicts, empty lists, ports, peers, selectors and rules are
    equal to others; parsed, each is an object of its own. Sharing them took the agent's
    desired state from ~45 MB to ~18 MB (docs/performance.md). The objects are frozen
    models and nothing in the agent changes their lists or dicts (a shared one changed in
    place would change every object holding it).

    The table lives for one listing only (`StateCache.replace`), so it never outgrows what
    is listed; objects that come later by watch keep their own parts. Parts that are unique
    to their object (metadata, a workload's spec: names and addresses) are not entered.
    """

    UNIQUE: tuple[type[BaseModel], ...] = (Metadata, WorkloadSpec)

    def __init__(self) -> None:
        self._strings: dict[str, str] = {}
        self._parts: dict[Any, Any] = {}

    def object(self, obj: T) -> T:
        """`obj` (a top-level object, itself never equal to another) with its parts shared."""
        if isinstance(obj, BaseModel):
            self._model_fields(obj)
        return obj

    def _model_fields(self, node: BaseModel) -> None:
        values = node.__dict__
        for name, value in values.items():
            values[name] = self._share(value)
        _share_fields_set(node)  # see share_fields_sets

    def _share(self, value: Any) -> Any:
        t = type(value)
        key: Any
        if t is str:
            return self._strings.setdefault(value, value)
        if t is list:
            for i, item in enumerate(value):
                value[i] = self._share(item)
            key = (list, *map(_identity, value))
        elif t is dict:
            items = [(self._strings.setdefault(k, k) if type(k) is str else k, self._share(v))
                     for k, v in value.items()]
            value.clear()
            value.update(items)
            key = (dict, *(x for k, v in items for x in (k, _identity(v))))
        elif isinstance(value, BaseModel):
            self._model_fields(value)
            if t in self.UNIQUE:
                return value
            key = (t, *map(_identity, value.__dict__.values()))
        else:
            return value
        return self._parts.setdefault(key, value)


class StateCache:
    def __init__(self) -> None:
        self.revision = 0
        self.synced = False
        self._objects: dict[ObjectKey, StockadeObject] = {}
        self._state: DesiredState | None = None

    def replace(self, revision: int, documents: Iterable[Mapping[str, Any]]) -> None:
        """Load a full listing (first sync, or after the watch fell too far behind).

        Consumes `documents`: a list's items are set to None as they are parsed. All or
        nothing: the new objects are built aside and take the old ones' place only once every
        one has parsed, so a listing that fails half way never leaves a partial state behind
        to be programmed (the old one stays, with its revision)."""
        objects: dict[ObjectKey, StockadeObject] = {}
        # A listing of 10,000 workloads is ~43 MB of JSON dicts next to ~45 MB of parsed
        # objects: each dict is dropped from the caller's list once parsed (or, from
        # ControllerClient.snapshot_lazy, only parsed when reached), so both never coexist in
        # full, and equal parts of the objects are shared (see docs/performance.md).
        mutable = isinstance(documents, list)
        sharing = Sharing()
        for i, d in enumerate(documents):
            obj = sharing.object(parse_stored(d))
            objects[key_of(obj)] = obj
            if mutable:
                documents[i] = None  # type: ignore[index]
        del sharing
        self._objects = objects
        self.revision = revision
        self.synced = True
        self._state = None

    def apply_events(self, revision: int, events: list[Mapping[str, Any]]) -> None:
        """Events of revisions up to `revision`; none when the revisions changed nothing this host
        holds (controller.host_views): then the objects are kept as they are, at the new revision."""
        if not events:
            if revision > self.revision:
                self.revision = revision
                if self._state is not None:
                    self._state = replace(self._state, revision=revision)
            return
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
