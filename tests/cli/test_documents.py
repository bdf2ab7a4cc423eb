"""Issue 13, item 12: the CLI refuses a YAML alias bomb before it builds (and sends) its expansion."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from stockade.cli.documents import read_documents
from stockade.errors import ValidationError


def _laughs(levels: int) -> str:
    """The "billion laughs": each anchor lists the previous one ten times (10**levels strings)."""
    names = [f"l{i}" for i in range(levels + 1)]
    lines = [f"{names[0]}: &{names[0]} [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for prev, name in zip(names, names[1:]):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]")
    return "apiVersion: stockade.io/v1\nkind: Namespace\nmetadata: {name: lol}\nspec:\n" + \
        "\n".join("  " + line for line in lines) + "\n"


def test_an_alias_bomb_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    f = tmp_path / "bomb.yaml"
    f.write_text(_laughs(9))  # a 1 KB file standing for a billion strings
    started = time.monotonic()
    with pytest.raises(ValidationError) as caught:
        read_documents(str(f))
    assert time.monotonic() - started < 5  # measured, not expanded
    [problem] = caught.value.problems
    assert problem.object_ref == f"{f} document 1" and "expands" in problem.problem


def test_a_self_referring_alias_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "loop.yaml"
    f.write_text("kind: Namespace\nmetadata: &m {name: x, labels: {self: *m}}\n")
    with pytest.raises(ValidationError, match="refers to itself"):
        read_documents(str(f))


def test_ordinary_aliases_and_several_documents_still_read(tmp_path: Path) -> None:
    f = tmp_path / "ok.yaml"
    f.write_text("kind: List\nitems:\n- {kind: Namespace, metadata: {name: a, labels: &l {team: x}}}\n"
                 "- {kind: Namespace, metadata: {name: b, labels: *l}}\n---\n"
                 "kind: Namespace\nmetadata: {name: c}\n")
    docs = read_documents(str(f))
    assert [d["metadata"].get("labels") for d in docs] == [{"team": "x"}, {"team": "x"}, None]
