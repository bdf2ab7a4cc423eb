"""`stockade agent run`: the agent's command in the typer CLI.

`python -m stockade.agent run` (agent.__main__) takes the same options without
typer; tests/agent/test_agent_cli.py keeps the two option lists equal.
"""

from __future__ import annotations

from pathlib import Path

import typer


agent_app = typer.Typer(help="Run the per-host agent.", no_args_is_help=True)


@agent_app.command("run")
def run(
    host: str = typer.Option(..., help="This host's name, as workloads' spec.host gives it."),
    controller: str = typer.Option(..., help="Controller URL: http(s)://HOST:PORT or unix:///PATH"),
    token_file: Path = typer.Option(..., help="File holding this agent's API token."),
    table: str = typer.Option("stockade", help="The nftables table this agent owns."),
    state_dir: Path | None = typer.Option(
        None, help="Directory for the agent's own files: the last applied program, put back at boot."),
    metrics_address: str | None = typer.Option(None, help="Serve Prometheus /metrics on HOST:PORT."),
    flow_log_group: int = typer.Option(100, help="NFLOG group for flow records; 0 turns flow logging off."),
    flow_conntrack: bool = typer.Option(True, help="End records with packets and bytes from conntrack events "
                                                   "(turns on net.netfilter.nf_conntrack_acct)."),
    accept_new_store: bool = typer.Option(
        False, "--accept-new-store", help="Take the controller's state even from another store (another identity) or one behind "
                    "the revision this host enforces; without it the agent keeps its program."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    from stockade.agent.main import AgentSettings, run_agent  # the agent's graph only when it runs

    token = token_file.read_text().strip()
    run_agent(AgentSettings(host, controller, token, table, metrics_address, flow_log_group or None,
                            flow_conntrack=flow_conntrack, state_dir=state_dir,
                            accept_new_store=accept_new_store), verbose)
