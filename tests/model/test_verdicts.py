"""One vocabulary of actions and verdicts (model.verdicts), and nothing re-listing it elsewhere."""

from __future__ import annotations

import ast
from pathlib import Path

from stockade.model import verdicts
from stockade.model.verdicts import ACTIONS, AUDIT_VERDICTS, DECIDING, DENIED, FINAL_VERDICTS, VERDICTS

SRC = Path(__file__).resolve().parents[2] / "src" / "stockade"
WORDS = set(VERDICTS) | set(ACTIONS)


def test_the_vocabulary_holds_together() -> None:
    assert DECIDING == {"allow", "deny", "reject"} and set(FINAL_VERDICTS) == DECIDING
    assert set(AUDIT_VERDICTS) == {verdicts.would(a) for a in DECIDING}
    assert DENIED == {"deny", "reject", "would-deny", "would-reject"} <= set(VERDICTS)
    assert verdicts.is_denied("would-reject") and not verdicts.is_denied("would-allow")


def relistings(path: Path) -> list[str]:
    """Tuples, lists and sets of two or more verdict or action words written out in `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            words = [e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in WORDS]
            if len(words) >= 2:
                found.append(f"{path.relative_to(SRC.parent)}:{node.lineno}: {words}")
    return found


def test_no_module_relists_actions_or_verdicts() -> None:
    found = [f for path in sorted(SRC.rglob("*.py")) if path.name != "verdicts.py" for f in relistings(path)]
    assert not found, "re-listed outside stockade.model.verdicts:\n" + "\n".join(found)


def test_the_scan_finds_a_relisting(tmp_path: Path) -> None:
    fake = tmp_path / "stockade" / "x.py"
    fake.parent.mkdir()
    fake.write_text('from typing import Literal\nV = Literal["allow", "would-deny"]\n')
    global SRC
    saved, SRC = SRC, fake.parent
    try:
        assert relistings(fake) == ["stockade/x.py:2: ['allow', 'would-deny']"]
    finally:
        SRC = saved
