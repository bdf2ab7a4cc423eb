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
    """Tuples, lists and sets (a Literal's arguments are a tuple), and the keys of dicts, of two
    or more verdict or action words written out in `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            elts: list[ast.expr | None] = list(node.elts)
        elif isinstance(node, ast.Dict):
            elts = list(node.keys)
        else:
            continue
        words = [e.value for e in elts if isinstance(e, ast.Constant) and e.value in WORDS]
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
        fake.write_text('STYLE = {"deny": "red", "reject": "red"}\n')
        assert relistings(fake) == ["stockade/x.py:1: ['deny', 'reject']"]
    finally:
        SRC = saved


def test_an_audit_rule_logs_would_and_its_action() -> None:
    # The compiler logs `would-<action>` for every action of an audit-mode rule; only the deciding
    # ones are verdicts a flow record carries (would-pass and would-log decide nothing).
    assert [verdicts.would(a) for a in ACTIONS if verdicts.would(a) in VERDICTS] == list(AUDIT_VERDICTS)
    assert {verdicts.would(a) for a in ACTIONS} - set(VERDICTS) == {"would-pass", "would-log"}


def test_the_rule_model_the_api_and_policy_tests_take_the_shared_lists() -> None:
    from typing import get_args

    from stockade.controller.schemas import FlowRecord as FlowRecordSchema
    from stockade.model.objects import Rule
    from stockade.policytest.expectations import VERDICTS as EXPECTABLE

    assert get_args(Rule.model_fields["action"].annotation) == ACTIONS
    assert get_args(FlowRecordSchema.model_fields["verdict"].annotation) == VERDICTS
    assert tuple(EXPECTABLE) == FINAL_VERDICTS
