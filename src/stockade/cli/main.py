"""The `stockade` command's root: a typer app that mounts the groups of commands. No commands here.

The groups live in `cli.commands` (one module per group, sharing `cli.commanding`); the
server-side sub-apps (`lab`, `controller`, `agent`) are small typer apps whose modules load
their process's graph only when one of their commands runs, so `stockade get` never imports
the web stack (tests/cli/test_startup.py). The installed `stockade` program starts at
`cli.entry`, which hands `stockade agent run` to the agent before any of this is imported.
"""

from __future__ import annotations

import typer

from stockade.agent.cli import agent_app
from stockade.cli.commands import changes, checks, contexts, flows, hosts, objects, status, tokens
from stockade.controller.cli import controller_app
from stockade.controller.store_cli import restore_app, store_app
from stockade.lab.cli import lab_app

app = typer.Typer(help="Stockade: a distributed, stateful firewall; policy as code, enforced at every workload's NIC.",
                  no_args_is_help=True, pretty_exceptions_enable=False)

# Unnamed groups add their commands to the root, in this order (the order `stockade --help` lists).
for group in (objects.app, status.app, flows.app, checks.app, changes.app, restore_app):
    app.add_typer(group)
app.add_typer(lab_app, name="lab", help="Build, inspect and tear down the one-machine lab.")
app.add_typer(controller_app, name="controller", help="Run the controller.")
app.add_typer(store_app, name="store", help="Back up, restore and move a controller's store (offline tools).")
app.add_typer(agent_app, name="agent", help="Run a host agent.")
app.add_typer(contexts.app, name="config", help="Show and edit the CLI config (contexts).")
app.add_typer(tokens.app, name="token", help="Create, list and revoke API tokens.")
app.add_typer(hosts.app, name="host", help="Join hosts to the controller.")
