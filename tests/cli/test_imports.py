"""The CLI's modules form no import cycle, and no command module imports another (each group of
commands stands alone on the shared helpers). Imports are read with `ast`, at any depth of a
module (a function's lazy import counts too)."""

from __future__ import annotations

import ast
from pathlib import Path

import stockade.cli

CLI = Path(stockade.cli.__file__).parent


def _module(path: Path) -> str:
    parts = path.relative_to(CLI.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The modules of `modules` that `path` imports (`from pkg import mod` names the module mod)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        found |= {n for n in names if n in modules}
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in CLI.rglob("*.py")}
    return {name: _imports(path, set(files)) - {name} for name, path in files.items()}


def test_the_graph_is_read() -> None:
    graph = _graph()
    assert "stockade.cli.commanding" in graph["stockade.cli.commands.objects"]
    assert "stockade.cli.commands.objects" in graph["stockade.cli.main"]


def test_no_import_cycle_in_the_cli() -> None:
    graph = _graph()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        assert name not in path, f"import cycle: {' -> '.join([*path[path.index(name):], name])}"
        if name in done:
            return
        for dep in sorted(graph[name]):
            visit(dep, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_no_command_module_imports_another() -> None:
    graph = _graph()
    commands = {name for name in graph if name.startswith("stockade.cli.commands.")}
    assert len(commands) >= 5
    for name in sorted(commands):
        assert not graph[name] & (commands | {"stockade.cli.commands"}), name
