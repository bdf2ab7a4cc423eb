"""Fixtures for the controller tests: a real SQLite file per test, and a real HTTP server
(uvicorn in a thread, on 127.0.0.1 with a free port and on a unix socket)."""

from __future__ import annotations

import shutil
import urllib.request
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stockade.client import ControllerClient
from stockade.controller.api import build_app
from stockade.controller.auth import create_token_file
from stockade.controller.config import ControllerConfig
from stockade.controller.main import RunningController, start_in_thread
from stockade.controller.service import ControllerService
from stockade.controller.wiring import open_service
from stockade.model.validation import ValidationSettings
from tests.waiting import wait_until

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
    svc = open_service(config)
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


def long_polls(running: RunningController, kind: str) -> int:
    """How many long-polls of `kind` (watch | flows) the controller has waiting now, from /metrics."""
    with urllib.request.urlopen(f"{running.url}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "stockade_controller_long_polls" and sample.labels.get("kind") == kind:
                return int(sample.value)
    raise AssertionError(f"/metrics has no stockade_controller_long_polls{{kind={kind!r}}}:\n{text}")


def wait_for_long_polls(running: RunningController, kind: str, count: int = 1) -> None:
    """Until `count` long-polls of `kind` are waiting in the controller (the caller's is in place)."""
    wait_until(lambda: long_polls(running, kind) >= count, f"{count} {kind} long-poll(s) waiting in the controller",
               describe=lambda: long_polls(running, kind))
