"""The import layers of src/stockade hold: every import between parts is an allowed arrow, and
no part imports one that must never be imported from it (docs/architecture.md, "Layers").

Imports inside functions count too (a lazy import is still a dependency). No root needed.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "stockade"

# Which part each module belongs to: the package under stockade/, or for the top-level modules
# the part they serve. "Base" holds what every layer may use (errors, redaction, private files).
TOP_LEVEL = {"client": "Client", "transport": "Client", "listing": "Client", "client_config": "Client",
             "errors": "Base", "build_info": "Base", "redaction": "Base", "private_files": "Base", "clock": "Base",
             "durations": "Base", "__main__": "Cli",
             "__init__": "Base"}
PACKAGES = {"model": "Model", "compile": "Compile", "nft": "Nft", "dataplane": "Dataplane", "agent": "Agent",
            "controller": "Controller", "lab": "Lab", "cli": "Cli", "policytest": "Policytest",
            "cni": "Cni"}

# part -> the parts it may import (besides itself and Base)
ALLOWED: dict[str, frozenset[str]] = {
    "Base": frozenset(),
    "Model": frozenset(),
    "Nft": frozenset({"Model"}),
    "Compile": frozenset({"Model", "Nft"}),
    "Dataplane": frozenset({"Nft", "Model"}),
    "Client": frozenset({"Model"}),
    "Policytest": frozenset({"Model", "Compile", "Nft"}),
    "Agent": frozenset({"Model", "Compile", "Nft", "Dataplane", "Client"}),
    "Controller": frozenset({"Model", "Compile", "Nft"}),
    "Lab": frozenset({"Model", "Client", "Dataplane", "Agent", "Compile", "Nft"}),
    # A runtime's plugin on a real host: the client to register, the dataplane's netlink helpers.
    "Cni": frozenset({"Model", "Client", "Dataplane"}),
    "Cli": frozenset({"Model", "Client", "Compile", "Nft", "Policytest", "Lab", "Agent", "Controller"}),
}
# Arrows that must never exist, with the reason the failure message gives.
NEVER: dict[tuple[str, str], str] = {
    ("Model", "Compile"): "the model knows nothing of programs",
    ("Compile", "Dataplane"): "compiling is pure: no kernel",
    ("Compile", "Controller"): "compiling is pure: no store",
    ("Nft", "Dataplane"): "the IR is pure",
    ("Agent", "Lab"): "the agent takes its endpoint driver as an argument",
    ("Agent", "Controller"): "the agent speaks to the controller only through the client",
    ("Controller", "Agent"): "the controller never imports agent code",
    ("Lab", "Cli"): "the lab is a user of the client, not of the CLI",
    ("Lab", "Controller"): "the lab starts servers; it does not reach into them",
    ("Policytest", "Controller"): "policy tests run offline, without controller internals",
    ("Controller", "Cli"): "no server code depends on the CLI",
    ("Cni", "Lab"): "the plugin runs on real hosts, where there is no lab",
    ("Cni", "Agent"): "the plugin and the agent meet only through the controller",
}


def part_of(module: str) -> str | None:
    """`stockade.compile.host` -> Compile; None for modules outside stockade."""
    names = module.split(".")
    if names[0] != "stockade":
        return None
    if len(names) == 1:
        return "Base"
    return PACKAGES.get(names[1]) or TOP_LEVEL.get(names[1], "Base")


def module_name(path: Path, root: Path = SRC) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path = SRC) -> list[tuple[str, int]]:
    """Every module `path` imports (absolute names), with the line."""
    tree = ast.parse(path.read_text(), str(path))
    own = module_name(path, root)
    package = own if path.name == "__init__.py" else own.rsplit(".", 1)[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((name, node.lineno))
            # `from stockade import client` names a module too
            found.extend((f"{name}.{alias.name}", node.lineno) for alias in node.names)
    return found


def cross_part_imports(root: Path = SRC) -> list[tuple[str, str, str, int, str]]:
    """(from part, to part, file, line, imported module) for every import between parts."""
    out = []
    for path in sorted(root.rglob("*.py")):
        here = part_of(module_name(path, root))
        assert here is not None
        for name, line in imports_of(path, root):
            there = part_of(name)
            if there is None or there == here or there == "Base":
                continue
            if name.split(".")[1] not in PACKAGES and name.split(".")[1] not in TOP_LEVEL:
                continue  # `from stockade import X` where X is a name, not a module: the X line counts
            out.append((here, there, str(path.relative_to(root.parent.parent)), line, name))
    return out


def test_every_import_between_parts_is_an_allowed_arrow() -> None:
    wrong: dict[str, str] = {}  # one line per import statement
    for a, b, f, line, name in cross_part_imports():
        if b not in ALLOWED[a]:
            wrong.setdefault(f"{f}:{line}", f"{f}:{line}: {a} -> {b} ({name})"
                             + (f": never, {NEVER[(a, b)]}" if (a, b) in NEVER else ""))
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong.values())


def test_no_never_arrow_is_allowed() -> None:
    assert not [arrow for arrow in NEVER if arrow[1] in ALLOWED[arrow[0]]]


def test_the_parts_import_each_other_without_a_cycle() -> None:
    edges: dict[str, set[str]] = {}
    for a, b, *_ in cross_part_imports():
        edges.setdefault(a, set()).add(b)
    # Cli mounts the lab/agent/controller commands lazily; those never import Cli back (NEVER).
    seen: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        if seen.get(node) == 1:
            raise AssertionError("import cycle between parts: " + " -> ".join(trail + [node]))
        if seen.get(node) == 2:
            return
        seen[node] = 1
        for nxt in sorted(edges.get(node, ())):
            visit(nxt, trail + [node])
        seen[node] = 2

    for start in sorted(edges):
        visit(start, [])


def test_the_scan_sees_a_forbidden_import_also_inside_a_function(tmp_path: Path) -> None:
    fake = tmp_path / "src" / "stockade"
    (fake / "agent").mkdir(parents=True)
    (fake / "agent" / "__init__.py").write_text("")
    (fake / "agent" / "bad.py").write_text("def f():\n    from ..lab import supervisor\n    return supervisor\n")
    found = {(a, b, name) for a, b, _, _, name in cross_part_imports(fake)}
    assert ("Agent", "Lab", "stockade.lab") in found and "Lab" not in ALLOWED["Agent"]
