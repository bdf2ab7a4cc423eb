"""`python -m stockade.agent run --host H --controller URL --token-file F`: the agent alone.

The same command as `stockade agent run`, without loading the rest of the CLI
(the controller's web stack among it): ~15 MB less resident memory on every host.
"""

import typer

from stockade.agent.main import agent_app

app = typer.Typer(help="Run the per-host agent.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Run the per-host agent."""
    # A callback keeps `run` a subcommand, as under `stockade agent`.


app.registered_commands.extend(agent_app.registered_commands)
app(prog_name="python -m stockade.agent")
