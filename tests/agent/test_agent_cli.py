"""The agent's command line is defined once (agent.command) and every entry point uses it:
`python -m stockade.agent run`, `stockade agent run` (cli.entry, and the typer app's door in
agent.cli) and the lab's agent. The lean paths load neither typer nor the HTTP, web or CLI
stacks (what keeps the agent's memory small)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
from typer.testing import CliRunner

from stockade.agent import command
from stockade.agent.command import parser
from stockade.agent.main import AgentSettings
from stockade.cli import entry
from stockade.cli.main import app

LEAN = {"typer", "click", "rich", "httpx", "httpcore", "anyio", "fastapi", "starlette", "yaml"}


def _run_options() -> set[str]:
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {o for a in sub.choices["run"]._actions for o in a.option_strings}


def _captured(monkeypatch: pytest.MonkeyPatch) -> list[tuple[AgentSettings, bool]]:
    ran: list[tuple[AgentSettings, bool]] = []
    monkeypatch.setattr(command, "run_agent", lambda settings, verbose=False: ran.append((settings, verbose)))
    return ran


def _via_typer(argv: list[str]) -> None:
    result = CliRunner().invoke(app, ["agent", *argv])
    assert result.exit_code == 0, result.output


ENTRY_POINTS: dict[str, Callable[[list[str]], Any]] = {
    "python -m stockade.agent": command.main,
    "stockade (cli.entry)": lambda argv: entry.main(["agent", *argv]),
    "stockade (typer app)": _via_typer,
}


@pytest.mark.parametrize("entry_point", sorted(ENTRY_POINTS))
def test_every_entry_point_hands_the_same_options_to_the_agent(entry_point: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "agent.token"
    token.write_text(" stk_secret\n")
    argv = ["run", "--host", "hv1", "--controller", "unix:///s", "--token-file", str(token), "--table", "t2",
            "--state-dir", str(tmp_path), "--metrics-address", "127.0.0.1:9", "--flow-log-group", "0",
            "--no-flow-conntrack", "--accept-new-store", "-v"]
    ran = _captured(monkeypatch)
    ENTRY_POINTS[entry_point](argv)
    assert ran == [(AgentSettings("hv1", "unix:///s", "stk_secret", "t2", "127.0.0.1:9", None, flow_conntrack=False,
                                  state_dir=tmp_path, accept_new_store=True), True)]


def test_stockade_agent_run_help_lists_the_agents_options() -> None:
    out = subprocess.run([sys.executable, "-m", "stockade", "agent", "run", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith("usage: stockade agent run")
    assert {o for o in _run_options() if o.startswith("--")} <= set(out.replace(",", " ").replace("[", " ")
                                                                     .replace("]", " ").split())


def test_the_typer_app_only_opens_the_door() -> None:
    import typer.main

    run = typer.main.get_command(app).commands["agent"].commands["run"]  # type: ignore[attr-defined]
    assert run.params == []  # nothing parsed twice: argparse (agent.command) reads every argument


def test_defaults_match() -> None:
    args = parser().parse_args(["run", "--host", "h", "--controller", "unix:///s", "--token-file", "t"])
    assert (args.table, args.flow_log_group, args.flow_conntrack, args.verbose) == ("stockade", 100, True, False)
    args = parser().parse_args(["run", "--host", "h", "--controller", "c", "--token-file", "t", "--no-flow-conntrack",
                                "--flow-log-group", "0", "-v"])
    assert (args.flow_log_group, args.flow_conntrack, args.verbose) == (0, False, True)


def _loaded(code: str) -> set[str]:
    return set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
               .stdout.split())


def test_the_agent_entry_point_loads_no_cli_or_http_stack() -> None:
    loaded = _loaded("import sys, stockade.agent.__main__, stockade.agent.main, stockade.client\n"
                     "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    assert not loaded & LEAN


def test_stockade_agent_run_loads_what_the_agent_alone_loads() -> None:
    probe = ("import sys\n"
             "try:\n    {call}\nexcept SystemExit:\n    pass\n"
             "import stockade.client\n"
             "print(' '.join(sorted(sys.modules)))")
    alone = _loaded(probe.format(call="from stockade.agent.command import main; main(['run', '--help'])"))
    via_cli = _loaded(probe.format(call="from stockade.cli.entry import main; main(['agent', 'run', '--help'])"))
    assert not {m.split(".")[0] for m in via_cli} & LEAN
    assert via_cli - alone <= {"stockade.cli", "stockade.cli.entry"}
