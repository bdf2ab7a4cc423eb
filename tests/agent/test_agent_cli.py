"""`python -m stockade.agent run` and `stockade agent run` take the same options, and the former
loads neither typer nor the HTTP, web or CLI stacks (what keeps the agent's memory small)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import typer.main

from stockade.agent.__main__ import parser
from stockade.agent.cli import agent_app


def _typer_options() -> set[str]:
    command = typer.main.get_command(agent_app)  # a lone command is the app's command itself
    run = command.commands["run"] if hasattr(command, "commands") else command
    assert run.name == "run"
    options = {o for p in run.params for o in (*p.opts, *p.secondary_opts)}
    # typer's own options of a lone command's app, not of `stockade agent run`
    return options - {"--install-completion", "--show-completion"} | {"--help"}


def _argparse_options() -> set[str]:
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {o for a in sub.choices["run"]._actions for o in a.option_strings} - {"-h"}


def test_both_entry_points_take_the_same_options() -> None:
    assert _argparse_options() == _typer_options()


def test_defaults_match() -> None:
    args = parser().parse_args(["run", "--host", "h", "--controller", "unix:///s", "--token-file", "t"])
    assert (args.table, args.flow_log_group, args.flow_conntrack, args.verbose) == ("stockade", 100, True, False)
    args = parser().parse_args(["run", "--host", "h", "--controller", "c", "--token-file", "t", "--no-flow-conntrack",
                                "--flow-log-group", "0", "-v"])
    assert (args.flow_log_group, args.flow_conntrack, args.verbose) == (0, False, True)


def test_the_agent_entry_point_loads_no_cli_or_http_stack() -> None:
    code = ("import sys, stockade.agent.__main__, stockade.agent.main, stockade.client\n"
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
                 .stdout.split())
    assert not loaded & {"typer", "click", "rich", "httpx", "httpcore", "anyio", "fastapi", "starlette"}
