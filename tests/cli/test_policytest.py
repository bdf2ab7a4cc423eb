"""`stockade test` as a user runs it (the policytest package itself: tests/policytest/).

The tests run `python -m stockade test` as a subprocess, offline (no root,
no lab) or against a controller served from a thread of this process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from stockade.client import ControllerClient
from stockade.controller.auth import create_token_file
from stockade.controller.config import ControllerConfig
from stockade.controller.main import RunningController, start_in_thread
from stockade.model.validation import ValidationSettings
from tests.policytest.examples import EXAMPLE, FLOWS, REPO, example_documents


# --------------------------------------------------------------------- CLI

def stockade(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # No config file and no controller variables: offline runs must need neither.
    base = {k: v for k, v in os.environ.items() if not k.startswith("STOCKADE_")}
    base["STOCKADE_CONFIG"] = "/nonexistent/stockade-config.json"
    return subprocess.run([sys.executable, "-m", "stockade", "test", *args], capture_output=True, text=True,
                          timeout=60, cwd=REPO, env={**base, **(env or {})})


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_cli_all_expectations_hold_exits_0() -> None:
    result = stockade("-f", str(FLOWS), "--objects", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "13 passed, 0 failed"


def test_cli_miss_exits_12_with_a_table_of_the_flow_and_deciding_rule(tmp_path: Path) -> None:
    tests = write(tmp_path / "t.yaml", """
- {name: web-to-db, from: shop/web-1, to: shop/db-1, port: 5432, protocol: tcp, expect: allow}
- {from: shop/app-1, to: shop/db-1, port: 5432, protocol: tcp, expect: allow}
""")
    result = stockade("-f", tests, "--objects", str(EXAMPLE))
    assert result.returncode == 12, result.stderr
    row = next(line for line in result.stdout.splitlines() if "web-to-db" in line)
    for cell in ("shop/web-1", "shop/db-1", "tcp/5432 IPv4", "allow", "deny", "shop/default-deny/egress"):
        assert cell in row
    assert "shop/app-1" not in result.stdout  # only misses are listed
    assert result.stdout.strip().endswith("1 passed, 1 failed")
    assert "1 of 2 expectations failed" in result.stderr


def test_cli_json_output(tmp_path: Path) -> None:
    tests = write(tmp_path / "t.yaml", "- {from: shop/lb-1, to: shop/web-2, port: 8080, protocol: tcp, expect: deny}\n")
    result = stockade("-f", tests, "--objects", str(EXAMPLE), "-o", "json")
    assert result.returncode == 12
    data = json.loads(result.stdout)
    assert (data["passed"], data["failed"]) == (0, 1)
    assert data["results"][0]["deciding_rule"] == "shop/web/http-from-lb"
    assert data["results"][0]["got"] == "allow" and data["results"][0]["expect"] == "deny"


def test_cli_takes_object_files_as_a_glob_would_give_them() -> None:
    files = [str(p) for p in sorted(EXAMPLE.glob("*.yaml"))]
    assert stockade("-f", str(FLOWS), "--objects", *files).returncode == 0
    result = stockade("-f", str(FLOWS), *files)
    assert result.returncode == 2 and "--objects" in result.stderr


def test_cli_refuses_a_bad_expectation_naming_entry_and_field(tmp_path: Path) -> None:
    tests = write(tmp_path / "t.yaml", """
- {from: shop/lb-1, to: shop/web-2, port: 8080, protocol: tcp, expect: allow}
- {name: db, from: shop/web-1, to: shop/db-1, port: 5432, protocol: tcp, expect: blocked}
""")
    result = stockade("-f", tests, "--objects", str(EXAMPLE))
    assert result.returncode == 2
    assert f"{tests} entry 2 (db): expect: 'blocked' is not one of allow, deny, reject" in result.stderr
    assert "passed" not in result.stdout


def test_cli_refuses_a_bad_proposed_object_naming_object_and_field(tmp_path: Path) -> None:
    proposal = tmp_path / "proposal"
    shutil.copytree(EXAMPLE, proposal)
    write(proposal / "40-new.yaml", """
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: cache, namespace: shop}
spec:
  appliesTo: {group: cache}
""")
    result = stockade("-f", str(FLOWS), "--objects", str(proposal))
    assert result.returncode == 2
    assert "Policy shop/cache: spec.appliesTo.group: group shop/cache does not exist" in result.stderr


# ------------------------------------------------------- the stored revision

@pytest.fixture
def controller(tmp_path: Path) -> Iterator[tuple[RunningController, str]]:
    tokens = create_token_file(tmp_path / "tokens.json", [{"name": "alice", "role": "admin"}])
    config = ControllerConfig(db_path=tmp_path / "db.sqlite", tokens_file=tmp_path / "tokens.json",
                              validation=ValidationSettings(known_hosts=frozenset({"hv1", "hv2"})))
    sock_dir = Path(tempfile.mkdtemp(prefix="stk-", dir="/tmp"))  # unix socket paths are short
    running = start_in_thread(config, unix_socket=sock_dir / "ctl.sock")
    try:
        yield running, tokens["alice"]
    finally:
        running.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_cli_without_objects_checks_the_stored_revision(controller: tuple[RunningController, str],
                                                        tmp_path: Path) -> None:
    running, token = controller
    env = {"STOCKADE_CONTROLLER": running.url, "STOCKADE_TOKEN": token}
    with ControllerClient(running.url, token) as client:
        client.apply(example_documents(), "example")
    stored = stockade("-f", str(FLOWS), "-o", "json", env=env)
    assert stored.returncode == 0, stored.stderr
    offline = stockade("-f", str(FLOWS), "--objects", str(EXAMPLE), "-o", "json")
    # Same verdicts, same rules, same addresses: offline is what the controller would store.
    assert json.loads(stored.stdout)["results"] == json.loads(offline.stdout)["results"]

    with ControllerClient(running.url, token) as client:
        client.delete([{"kind": "Policy", "namespace": "shop", "name": "db"}], "close the database")
    closed = stockade("-f", str(FLOWS), env=env)
    assert closed.returncode == 12
    assert "shop/default-deny/ingress" in closed.stdout and "shop/app-1" in closed.stdout


