"""What every command shares, written once: the common options, the client, error mapping.

A controller command is a plain function whose first parameter is an `Invocation`:

    @command(app, outputs=OUTPUTS)
    def status(call: Invocation) -> None:
        data = call.client().status()
        ...

`command` registers it on a typer app with the command's own options followed by the
shared ones (`--output` when the command prints data, then `--controller`, `--token`,
`--token-file`), checks `--output` before the command runs, and turns any `StockadeError`
into one line on standard error and the error's own exit code (`report`). `local_command`
does only the last part, for commands that never reach a controller (`stockade config`).

Invariants: the client is built only when a command asks for it (`Invocation.client`), so
input errors (a missing file, a bad option) are reported before any configuration is read;
a token is never printed (errors carry no secrets, see `stockade.client_config`).
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

import typer
import yaml
from rich.console import Console

from stockade.client_config import load_config, read_token
from stockade.errors import StockadeError, ValidationError

if TYPE_CHECKING:
    from stockade.client import ControllerClient

T = TypeVar("T")

# Piped output (CI logs, `| grep`) keeps whole lines instead of wrapping at 80 columns.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True)

OUTPUTS = ("table", "json", "yaml")
OUTPUTS_HELP = "table, json or yaml"

ControllerOpt = typer.Option(None, "--controller", envvar="STOCKADE_CONTROLLER", help="Controller URL.")
# STOCKADE_TOKEN is read by `load_config`, after the flags: --token-file must win over it.
TokenOpt = typer.Option(None, "--token", help="API token (overrides STOCKADE_TOKEN and the config file). "
                        "Other users can read a command line (/proc/PID/cmdline): prefer --token-file.")
TokenFileOpt = typer.Option(None, "--token-file",
                            help="Read the API token from this file, or from standard input with -.")
SinceOpt = typer.Option(None, "--since", help="ISO 8601 time, or a duration back from now: 30s, 5m, 1h, 2d.")


@dataclass(frozen=True)
class Invocation:
    """The shared options of one run of a controller command."""

    output: str
    controller: str | None
    token: str | None
    token_file: str | None

    def client(self) -> "ControllerClient":
        """The client for the controller these options (then the environment, then the config
        file's context) name; the CA comes from STOCKADE_CA or the context."""
        return load_config(self.controller, read_token(self.token, self.token_file)).client()


def report(error: StockadeError) -> int:
    """Print `error` once on standard error (each problem of a multi-problem validation error on
    its own line) and return the exit code it carries."""
    err.print(f"[red]error:[/red] {error.message}", highlight=False, soft_wrap=True)
    if isinstance(error, ValidationError) and len(error.problems) > 1:
        for p in error.problems:
            err.print(f"  - {p}", highlight=False, soft_wrap=True)
    return error.exit_code


def check_output(output: str, choices: tuple[str, ...], command: str = "") -> None:
    if output not in choices:
        raise ValidationError.single(command, "--output", f"{output!r} is not one of {', '.join(choices)}")


def dump(data: Any, output: str) -> None:
    """JSON or YAML of `data` on standard output (tables are the commands' own business)."""
    if output == "json":
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))


def _mapping_errors(fn: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except StockadeError as e:
            raise typer.Exit(report(e)) from None
    return run


def local_command(app: typer.Typer, name: str | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Register a command that reaches no controller; only its errors are mapped."""
    def register(fn: Callable[..., T]) -> Callable[..., T]:
        app.command(name)(_mapping_errors(fn))
        return fn
    return register


def _option(name: str, default: Any, annotation: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def command(app: typer.Typer, name: str | None = None, *, outputs: tuple[str, ...] | None = None,
            output_help: str = OUTPUTS_HELP, output_ref: str = "") -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Register `fn(call: Invocation, <own options>)` as a controller command.

    `outputs`: the formats `--output` takes (None: the command has no --output); `output_help`
    is its help text and `output_ref` the object a bad value is reported against."""
    def register(fn: Callable[..., T]) -> Callable[..., T]:
        own = list(inspect.signature(fn, eval_str=True).parameters.values())[1:]  # without `call`
        shared = [_option("controller", ControllerOpt, Optional[str]), _option("token", TokenOpt, Optional[str]),
                  _option("token_file", TokenFileOpt, Optional[str])]
        if outputs is not None:
            shared.insert(0, _option("output", typer.Option(outputs[0], "--output", "-o", help=output_help), str))

        def run(**kwargs: Any) -> T:
            call = Invocation(kwargs.pop("output", ""), kwargs.pop("controller"), kwargs.pop("token"),
                              kwargs.pop("token_file"))
            if outputs is not None:
                check_output(call.output, outputs, output_ref)
            return fn(call, **kwargs)

        # typer reads a command's options from its signature: the command's own, then the shared
        # ones (the order `--help` lists them in). Keyword-only, so any own parameter may precede them.
        signature = inspect.Signature([p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + shared,
                                      return_annotation=inspect.Signature.empty)
        run.__signature__ = signature  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
        run.__name__, run.__qualname__, run.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        run.__module__ = fn.__module__
        app.command(name)(_mapping_errors(run))
        return fn
    return register
