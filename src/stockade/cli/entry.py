"""Where the `stockade` program starts (`python -m stockade` too): it picks the path before
anything heavy is imported.

`stockade agent run ...` goes straight to the agent's own command line (agent.command),
so a host's agent holds what `python -m stockade.agent run` holds and not the CLI's stack
(typer, rich, YAML, the model's pydantic classes: docs/performance.md). Everything else
is the typer app of cli.main.

Invariant: this module imports nothing at load time beyond the standard library's `sys`.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:2] == ["agent", "run"]:
        from stockade.agent.command import main as agent_main

        agent_main(args[1:], prog="stockade agent")
        return
    from stockade.cli.main import app

    app(args=args)
