"""The CLI starts without the web stack: every `stockade get` (and every CLI call of the test
suite) used to import FastAPI and uvicorn to mount the controller's and the lab's sub-apps."""

from __future__ import annotations

import subprocess
import sys

from stockade.controller import cli as controller_cli
from stockade.controller import main as controller_main


def test_the_cli_imports_no_web_stack_until_a_server_command_runs() -> None:
    code = ("import sys, stockade.cli.main; heavy = sorted(m for m in ('fastapi', 'uvicorn', "
            "'stockade.controller.main', 'stockade.lab.supervisor', 'stockade.agent.main') if m in sys.modules); "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_the_controller_commands_default_port_is_the_controllers() -> None:
    assert controller_cli.DEFAULT_PORT == controller_main.DEFAULT_PORT
