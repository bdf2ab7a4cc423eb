"""`stockade flows --from/--to/--verdict/--port/--protocol/--rule/--last` as a real process against a
real controller (HTTP, in a thread): the flags reach the controller's filters, a bad value is
refused naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stockade.client import ControllerClient
from stockade.controller.main import RunningController
from tests.cli.test_flows_cli import cli_env, stockade
from tests.controller.conftest import agent, config, controller, short_dir, tokens  # noqa: F401 (fixtures)
from tests.controller.test_flows import record


@pytest.fixture
def env(controller: RunningController, tokens: dict[str, str], tmp_path: Path) -> dict[str, str]:  # noqa: F811
    return cli_env(controller, tokens["alice"], tmp_path)


def test_hubble_like_filters_reach_the_controller(env: dict[str, str], agent: ControllerClient) -> None:  # noqa: F811
    agent.send_flows("hv1", [
        record("allow"),                                                         # 1
        record("deny", src="bank/app", port=22),                                 # 2
        record("would-deny", dst=None, port=443),                                # 3
        record("reject", protocol="udp", port=53, rule="shop/dns/out"),          # 4
        record("allow", src="bank/app", dst="shop/db-1", port=5432),             # 5
    ])

    def seqs(*args: str) -> list[int]:
        done = stockade(env, "flows", "-o", "json", *args)
        assert done.returncode == 0, done.stderr
        return [json.loads(line)["seq"] for line in done.stdout.splitlines()[:-1]]

    assert seqs("--from", "bank/app") == [2, 5]
    assert seqs("--from", "app", "--verdict", "allow") == [5]
    assert seqs("--to", "198.18.10.12", "--verdict", "deny", "--verdict", "reject") == [2, 4]
    assert seqs("--port", "443") == [3]
    assert seqs("--protocol", "udp") == [4]
    assert seqs("--rule", "shop/dns/out") == [4]
    assert seqs("--to", "db-1", "--last", "2") == [4, 5]
    assert seqs("--verdict", "would-deny", "--denied") == [3]
    done = stockade(env, "flows", "--from", "bank/app", "--port", "22")  # the table too
    assert done.returncode == 0, done.stderr
    assert "bank/app" in done.stdout and "deny" in done.stdout and "5432" not in done.stdout


def test_bad_filter_values_are_refused_naming_the_field(env: dict[str, str]) -> None:
    done = stockade(env, "flows", "--verdict", "dney")
    assert done.returncode != 0 and "query.verdict" in done.stderr and "'dney' is not a verdict" in done.stderr
    done = stockade(env, "flows", "--from", "a/b/c")
    assert done.returncode != 0 and "query.from" in done.stderr
    done = stockade(env, "flows", "--port", "70000")
    assert done.returncode != 0 and "--port" in done.stderr
    done = stockade(env, "flows", "--last", "0")
    assert done.returncode != 0 and "--last" in done.stderr
