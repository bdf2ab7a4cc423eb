"""The one place a command's error becomes a message and an exit code (cli.commanding), and the
shared options it adds to every controller command."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from stockade.cli.commanding import OUTPUTS, Invocation, command, local_command
from stockade.errors import (ConflictError, ControllerUnavailable, DataplaneError, FieldProblem, Forbidden, Gone,
                             LabError, NotFoundError, PayloadTooLarge, PolicyTestFailed, QuotaExceeded,
                             StockadeError, TimeoutError_, TooManyRequests, Unauthorized, ValidationError)

# Each error class, raised by a command, with the exit code and the message the user must see.
CASES: list[tuple[StockadeError, int, str]] = [
    (StockadeError("the CLI config /x: context 'lab' needs a `controller` URL"), 1,
     "error: the CLI config /x: context 'lab' needs a `controller` URL"),
    (ValidationError.single("Workload shop/web-1", "spec.ips[0]", "not an IP address"), 2,
     "error: Workload shop/web-1: spec.ips[0]: not an IP address"),
    (NotFoundError("Workload shop/web-9: not found"), 3, "error: Workload shop/web-9: not found"),
    (ConflictError("Group shop/db is used by Policy shop/web-to-db"), 4,
     "error: Group shop/db is used by Policy shop/web-to-db"),
    (Unauthorized("no valid token"), 5, "error: no valid token"),
    (Forbidden("role viewer cannot write Policy shop/p"), 6, "error: role viewer cannot write Policy shop/p"),
    (QuotaExceeded("Namespace shop: workloads: 11 over the quota of 10"), 6,
     "error: Namespace shop: workloads: 11 over the quota of 10"),
    (TimeoutError_("revision 7 is stored, but no agent is reporting"), 7,
     "error: revision 7 is stored, but no agent is reporting"),
    (ControllerUnavailable("cannot reach the controller at http://127.0.0.1:1"), 8,
     "error: cannot reach the controller at http://127.0.0.1:1"),
    (DataplaneError(["nft", "-f", "-"], 1, "Error: No such file\n"), 9, "error: nft -f - exited 1: Error: No such file"),
    (LabError("namespace eee-hv1 is missing"), 10, "error: namespace eee-hv1 is missing"),
    (Gone("revision 3 is older than the event log"), 11, "error: revision 3 is older than the event log"),
    (PolicyTestFailed(3, 2), 12, "error: 2 of 5 expectations failed"),
    (PayloadTooLarge("Policy shop/p: 5001 rules, over the limit of 5000"), 13,
     "error: Policy shop/p: 5001 rules, over the limit of 5000"),
    (TooManyRequests("too many failed authentications", retry_after=3), 14, "error: too many failed authentications"),
]


def _app_raising(error: StockadeError) -> typer.Typer:
    app = typer.Typer()

    @command(app, "remote", outputs=OUTPUTS)
    def remote(call: Invocation) -> None:
        raise error

    @local_command(app, "local")
    def local() -> None:
        raise error

    return app


@pytest.mark.parametrize("error,code,message", CASES, ids=[type(c[0]).__name__ for c in CASES])
@pytest.mark.parametrize("kind", ["remote", "local"])
def test_each_error_class_exits_with_its_code_and_names_the_object(
        error: StockadeError, code: int, message: str, kind: str) -> None:
    result = CliRunner().invoke(_app_raising(error), [kind])
    assert result.exit_code == code == error.exit_code
    assert result.stderr == message + "\n"
    assert result.stdout == ""


def test_every_error_class_is_covered() -> None:
    def subclasses(cls: type) -> set[type]:
        return {cls} | {s for sub in cls.__subclasses__() for s in subclasses(sub)}

    assert {type(e) for e, _, _ in CASES} == subclasses(StockadeError)


def test_a_validation_error_lists_each_problem_on_its_own_line() -> None:
    error = ValidationError([FieldProblem("Workload shop/a", "spec.host", "required"),
                             FieldProblem("Workload shop/b", "metadata.name", "too long")])
    result = CliRunner().invoke(_app_raising(error), ["remote"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: Workload shop/a: spec.host: required; Workload shop/b: metadata.name: too long",
        "  - Workload shop/a: spec.host: required",
        "  - Workload shop/b: metadata.name: too long"]


def test_a_bad_output_is_refused_before_the_command_runs() -> None:
    ran: list[str] = []
    app = typer.Typer()

    @command(app, "show", outputs=("table", "json"), output_ref="show")
    def show(call: Invocation) -> None:
        ran.append(call.output)

    @local_command(app, "other")
    def other() -> None:  # a second command keeps `show` a subcommand
        pass

    result = CliRunner().invoke(app, ["show", "-o", "yaml"])
    assert (result.exit_code, result.stderr, ran) == (2, "error: show: --output: 'yaml' is not one of table, json\n", [])
    assert CliRunner().invoke(app, ["show", "-o", "json"]).exit_code == 0 and ran == ["json"]


def test_the_shared_options_follow_the_commands_own_and_reach_the_invocation() -> None:
    import typer.main

    seen: list[tuple[Invocation, str]] = []
    app = typer.Typer()

    @command(app, "get", outputs=OUTPUTS)
    def get(call: Invocation, kind: str = typer.Argument(...), limit: int = typer.Option(3, "--limit")) -> None:
        seen.append((call, f"{kind}:{limit}"))

    @command(app, "other")
    def other(call: Invocation) -> None:  # a second command keeps `get` a subcommand
        pass

    params = [p.name for p in typer.main.get_command(app).commands["get"].params]  # type: ignore[attr-defined]
    assert params == ["kind", "limit", "output", "controller", "token", "token_file"]
    result = CliRunner().invoke(app, ["get", "wl", "--limit", "5", "-o", "yaml", "--controller", "http://c:1",
                                      "--token-file", "/t"])
    assert result.exit_code == 0, result.output
    assert seen == [(Invocation("yaml", "http://c:1", None, "/t"), "wl:5")]
