"""The seams of issue 14 hold across src/: one clock (stockade.clock reads the wall clock, nothing
else does) and one HTTP client to the controller (stockade.transport; httpx is a test tool)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "stockade"
WALL_CLOCK = {"datetime.now", "datetime.utcnow", "datetime.today", "time.time", "time.time_ns",
              "time.strftime", "time.localtime", "time.gmtime", "date.today"}


def _called(tree: ast.AST) -> set[str]:
    """`base.attr` of every call (and every reference, so `clock or time.time` counts too)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            base = node.value
            name = base.attr if isinstance(base, ast.Attribute) else base.id if isinstance(base, ast.Name) else ""
            out.add(f"{name}.{node.attr}")
    return out


def wall_clock_reads(path: Path) -> list[str]:
    return sorted(_called(ast.parse(path.read_text())) & WALL_CLOCK)


def test_only_stockade_clock_reads_the_wall_clock() -> None:
    found = {str(p.relative_to(SRC.parent)): wall_clock_reads(p) for p in sorted(SRC.rglob("*.py"))
             if p != SRC / "clock.py" and wall_clock_reads(p)}
    assert found == {}, "read the wall clock through stockade.clock (utc_now, unix_time)"


def test_the_clock_scan_finds_a_wall_clock_read(tmp_path: Path) -> None:
    fake = tmp_path / "x.py"
    fake.write_text("import time\nimport datetime as dt\nclock = None or time.time\n"
                    "stamp = dt.datetime.now(dt.timezone.utc)\n")
    assert wall_clock_reads(fake) == ["datetime.now", "time.time"]


def test_src_never_imports_httpx() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] == "httpx" for n in names):
                found.append(f"{path.relative_to(SRC.parent)}:{node.lineno}")
    assert found == [], "speak HTTP through stockade.transport (stockade.client)"
