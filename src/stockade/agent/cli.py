"""`stockade agent run`, as the typer app shows it: a door to the agent's own command line.

The options are defined once, in agent.command (argparse); this command takes the raw
arguments, unparsed, and hands them over. The `stockade` program (cli.entry) normally
hands `agent run` over before typer is even imported; this path serves a caller that
runs the typer app itself (an older installed `stockade` script, tests).
"""

from __future__ import annotations

import typer

agent_app = typer.Typer(help="Run the per-host agent.", no_args_is_help=True)


# No parsing here, not even --help: argparse (agent.command) reads every argument.
@agent_app.command("run", add_help_option=False,
                   context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def run(ctx: typer.Context) -> None:
    from stockade.agent.command import main  # the agent's graph only when it runs

    main(["run", *ctx.args], prog="stockade agent")
