"""listing.loads_with_lazy_array parses like json.loads, the one array item by item."""

from __future__ import annotations

import json

import pytest

from stockade.listing import LazyArray, loads_with_lazy_array


@pytest.mark.parametrize("value", [
    {"revision": 3, "objects": [{"a": 1}, {"b": [1, 2, {"c": "]},"}]}, [], "x", None]},
    {"objects": [], "revision": 0},
    {"revision": 1},
    {},
    {"objects": "not an array", "more": {"objects": [1]}},
])
def test_same_as_json_loads(value: dict) -> None:
    compact = json.dumps(value, separators=(",", ":"))
    for text in (json.dumps(value), json.dumps(value, indent=2), " \n" + compact + "\n"):
        parsed = loads_with_lazy_array(text, "objects")
        if isinstance(value.get("objects"), list):
            assert isinstance(parsed["objects"], LazyArray)
            assert len(parsed["objects"]) == len(value["objects"])
            assert parsed["objects"][1:] == value["objects"][1:]
            parsed["objects"] = list(parsed["objects"])
        assert parsed == value


def test_each_item_is_parsed_anew_when_read() -> None:
    parsed = loads_with_lazy_array('{"objects": [{"a": 1}]}', "objects")
    first = next(iter(parsed["objects"]))
    first["a"] = 2
    assert parsed["objects"][0] == {"a": 1}


@pytest.mark.parametrize("text", ["", "[]", '{"objects": [1,]}', '{"objects": [1 2]}', '{"a": 1} x', '{"a" 1}',
                                  '{"objects": [{"a": }]}', '{"objects": [1]'])
def test_not_json_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        loads_with_lazy_array(text, "objects")
