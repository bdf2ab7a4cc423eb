"""Fixtures for the controller tests: a real SQLite file per test, and a real HTTP server
(uvicorn in a thread, on 127.0.0.1 with a free port and on a unix socket)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from stockade.client import ControllerClient
from stockade.controller.api import build_app
from stockade.controller.auth import create_token_file
from stockade.controller.config import ControllerConfig
from stockade.controller.main import RunningController, start_in_thread
from stockade.controller.service import ControllerService
from stockade.model.validation import ValidationSettings

HOSTS = frozenset({"hv1", "hv2"})


@pytest.fixture
def tokens(tmp_path: Path) -> dict[str, str]:
    return create_token_file(tmp_path / "tokens.json", [
        {"name": "alice", "role": "admin"},
        {"name": "agent-hv1", "role": "agent", "host": "hv1"},
    ])


@pytest.fixture
def config(tmp_path: Path, tokens: dict[str, str]) -> ControllerConfig:
    return ControllerConfig(db_path=tmp_path / "stockade.db", tokens_file=tmp_path / "tokens.json",
                            validation=ValidationSettings(known_hosts=HOSTS))


@pytest.fixture
def service(config: ControllerConfig) -> Iterator[ControllerService]:
    svc = ControllerService(config)
    try:
        yield svc
    finally:
        svc.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # A unix socket path must fit in 108 bytes; pytest's tmp_path may not.
    d = Path(tempfile.mkdtemp(prefix="stk-", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def controller(config: ControllerConfig, short_dir: Path) -> Iterator[RunningController]:
    running = start_in_thread(config, unix_socket=short_dir / "ctl.sock", app=build_app(config))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def admin(controller: RunningController, tokens: dict[str, str]) -> Iterator[ControllerClient]:
    with ControllerClient(controller.url, tokens["alice"]) as client:
        yield client


@pytest.fixture
def agent(controller: RunningController, tokens: dict[str, str]) -> Iterator[ControllerClient]:
    assert controller.unix_url is not None
    with ControllerClient(controller.unix_url, tokens["agent-hv1"]) as client:
        yield client
