"""`stockade config ...`: look at and edit the CLI's config file (contexts, like a kubeconfig).

    view                         the file, tokens redacted
    use-context NAME             make NAME the current context
    set-context NAME --controller URL [--token T] [--ca PATH]   add or replace a context

Parsing and printing only; `stockade.client_config` owns the file. Never prints a token.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from stockade.cli.commanding import local_command
from stockade.client_config import ConfigFile, Context, config_path, set_context
from stockade.errors import StockadeError, ValidationError

app = typer.Typer(help="Show and edit the CLI config (contexts: controller, token, CA).", no_args_is_help=True)


@local_command(app, "view")
def view() -> None:
    """Print the config file with every token replaced by REDACTED."""
    typer.echo(json.dumps({"path": str(config_path()), **ConfigFile.read().redacted()}, indent=2))


@local_command(app, "use-context")
def use_context(name: Annotated[str, typer.Argument(help="a context in the config file")]) -> None:
    """Make NAME the current context."""
    cfg = ConfigFile.read()
    if name not in cfg.contexts:
        raise StockadeError(f"no context {name!r} in {config_path()} "
                            f"(contexts: {', '.join(sorted(cfg.contexts)) or 'none'})")
    cfg.current_context = name
    cfg.write()
    typer.echo(f"current context: {name}")


@local_command(app, "set-context")
def set_context_cmd(
    name: Annotated[str, typer.Argument(help="the context's name")],
    controller: Annotated[str, typer.Option(help="controller URL: https://HOST:PORT, http://… or unix:///PATH")],
    token: Annotated[Optional[str], typer.Option(help="API token (kept out of every output)")] = None,
    ca: Annotated[Optional[Path], typer.Option(help="PEM CA bundle that signed the controller's certificate")] = None,
    current: Annotated[bool, typer.Option("--current/--no-current", help="also make it the current context")] = True,
) -> None:
    """Add or replace context NAME; the other contexts are kept."""
    if not controller.startswith(("http://", "https://", "unix://")):
        raise ValidationError.single("", "--controller", f"{controller!r}: expected http(s)://HOST:PORT "
                                     f"or unix:///PATH")
    if ca is not None and not ca.is_file():
        raise ValidationError.single("", "--ca", f"{ca} is not a file")
    path = set_context(name, Context(controller, token or "", str(ca.absolute()) if ca else None),
                       make_current=current)
    typer.echo(f"context {name} set in {path}")
