"""A JSON answer whose one large array is parsed an item at a time, when iterated.

The agent's full listing (`GET /snapshot`: `{"revision": N, "objects": [...]}`)
is ~5 MB of JSON for 10,000 workloads, but ~43 MB once parsed into dicts, and the
agent turns each dict into a model and drops it. Parsing the array item by item
as the cache consumes it keeps one object's dicts alive at a time instead of all
of them next to the models (docs/performance.md); the text (5 MB) is all that
stays until the iteration ends.
"""

from __future__ import annotations

import json
import re
from array import array
from typing import Any, Iterator, Sequence, overload

_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


class LazyArray(Sequence[Any]):
    """The items of one JSON array inside `text`, each parsed from the text when asked for."""

    def __init__(self, text: str, starts: array[int]) -> None:
        self._text = text
        self._starts = starts  # offset of each item in text

    def __len__(self) -> int:
        return len(self._starts)

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return _DECODER.raw_decode(self._text, self._starts[index])[0]

    def __iter__(self) -> Iterator[Any]:
        for start in self._starts:
            yield _DECODER.raw_decode(self._text, start)[0]


def _skip(text: str, i: int) -> int:
    match = _SPACE.match(text, i)
    assert match is not None  # matches the empty string
    return match.end()


def _expect(text: str, i: int, char: str) -> int:
    i = _skip(text, i)
    if text[i:i + 1] != char:
        raise json.JSONDecodeError(f"expected {char!r}", text, i)
    return i + 1


def _array_starts(text: str, i: int) -> tuple[array[int], int]:
    """Offsets of the items of the array opening at text[i] (each parsed once, to find its end,
    and dropped), and the offset after the array."""
    i = _expect(text, i, "[")
    starts: array[int] = array("q")
    i = _skip(text, i)
    if text[i:i + 1] == "]":
        return starts, i + 1
    while True:
        i = _skip(text, i)
        starts.append(i)
        _, i = _DECODER.raw_decode(text, i)
        i = _skip(text, i)
        if text[i:i + 1] == "]":
            return starts, i + 1
        i = _expect(text, i, ",")


def loads_with_lazy_array(text: str, key: str) -> dict[str, Any]:
    """`json.loads(text)` of a JSON object, except that the array under the top-level `key` is a
    LazyArray. ValueError (json.JSONDecodeError) when the text is not such an object."""
    out: dict[str, Any] = {}
    i = _expect(text, 0, "{")
    i = _skip(text, i)
    if text[i:i + 1] == "}":
        return out
    while True:
        i = _skip(text, i)
        name, i = _DECODER.raw_decode(text, i)
        if not isinstance(name, str):
            raise json.JSONDecodeError("expected a key", text, i)
        i = _expect(text, i, ":")
        i = _skip(text, i)
        if name == key and text[i:i + 1] == "[":
            starts, i = _array_starts(text, i)
            out[name] = LazyArray(text, starts)
        else:
            out[name], i = _DECODER.raw_decode(text, i)
        i = _skip(text, i)
        if text[i:i + 1] == "}":
            break
        i = _expect(text, i, ",")
    if _skip(text, i + 1) != len(text):
        raise json.JSONDecodeError("extra data", text, i + 1)
    return out
