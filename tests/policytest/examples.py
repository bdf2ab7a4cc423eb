"""Shared fixtures of the policytest tests: the three-tier example and problem listing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from stockade.errors import ValidationError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "three-tier"
FLOWS = REPO / "examples" / "three-tier.flows.yaml"


def example_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(EXAMPLE.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def problems_of(exc: pytest.ExceptionInfo[ValidationError]) -> set[tuple[str, str]]:
    return {(p.object_ref, p.field) for p in exc.value.problems}
