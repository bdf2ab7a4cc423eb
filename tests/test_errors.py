"""The error tree (src/stockade/errors.py): its drawing is the code, and an answer's status or code
comes back as the class the controller raised (so nobody has to parse a message)."""

from __future__ import annotations

import re

import pytest

from stockade import errors
from stockade.errors import Gone, StockadeError, error_from_response


def _classes() -> list[type[StockadeError]]:
    found: list[type[StockadeError]] = []
    todo: list[type[StockadeError]] = [StockadeError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return [c for c in found if c.__module__ == errors.__name__]


def test_the_docstring_draws_every_error_class_with_its_status_and_exit_code() -> None:
    drawn = {m.group(1): (int(m.group(2)), int(m.group(3)))
             for m in re.finditer(r"(\w+)\s+(\d{3}), exit (\d+)", errors.__doc__ or "")}
    assert drawn == {c.__name__: (c.http_status, c.exit_code) for c in _classes()}


@pytest.mark.parametrize("body", [{"error": "gone", "message": "revision 3 is too old"},
                                  {"message": "no error code in this body"}])
def test_a_410_answer_is_raised_as_gone(body: dict[str, str]) -> None:
    assert type(error_from_response(410, body)) is Gone
