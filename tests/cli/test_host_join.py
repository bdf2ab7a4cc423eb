"""`stockade host join HOST --dir DIR`: a new host's credential, bound to that host, in a 0600 file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stockade.cli.main import app
from stockade.client import ControllerClient
from stockade.controller.main import RunningController
from stockade.errors import Forbidden
from tests.controller.conftest import config, controller, short_dir, tokens  # noqa: F401 (fixtures)


def join(controller: RunningController, admin_token: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["host", "join", *args, "--controller", controller.url,
                                      "--token-file", str(admin_token)], env={"STOCKADE_CONFIG": "/nonexistent"})
    return result.exit_code, result.stdout, result.stderr


def test_join_writes_a_credential_that_reports_for_that_host_only(
        controller: RunningController, tokens: dict[str, str], tmp_path: Path) -> None:
    admin_token = tmp_path / "admin.token"
    admin_token.write_text(tokens["alice"])
    code, stdout, _ = join(controller, admin_token, "hv2", "--dir", str(tmp_path / "hv2"),
                           "--controller-url", "https://ctl-a:7470,https://ctl-b:7470")
    assert code == 0
    credential = tmp_path / "hv2" / "agent.token"
    assert stat.S_IMODE(credential.stat().st_mode) == 0o600
    token = credential.read_text().strip()
    assert token not in stdout  # never printed
    assert (f"stockade agent run --host hv2 --controller https://ctl-a:7470,https://ctl-b:7470 "
            f"--token-file {credential}") in stdout
    with ControllerClient(controller.url, token) as agent:
        agent.report_status("hv2", revision=0)
        with pytest.raises(Forbidden):
            agent.report_status("hv1", revision=0)
        with pytest.raises(Forbidden):
            agent.list("policies")  # of objects, a host credential reads only its own host's Workloads


def test_join_refuses_to_overwrite_a_credential(controller: RunningController, tokens: dict[str, str],
                                                tmp_path: Path) -> None:
    admin_token = tmp_path / "admin.token"
    admin_token.write_text(tokens["alice"])
    assert join(controller, admin_token, "hv1", "--dir", str(tmp_path / "d"))[0] == 0
    code, _, stderr = join(controller, admin_token, "hv1", "--dir", str(tmp_path / "d"))
    assert code == 2 and "--dir" in stderr and "exists" in stderr
