"""The CLI config: contexts like a kubeconfig, the resolution order (flags > env > file), `stockade config`,
and commands that reach a TLS controller with no flags."""

from __future__ import annotations

import json
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
from typer.testing import CliRunner

from stockade.client_config import (ConfigFile, Context, client_from_config, load_config, remove_context,
                                 set_context)
from stockade.cli.main import app
from stockade.controller.auth import create_token_file
from stockade.controller.config import ControllerConfig
from stockade.controller.main import RunningController, TlsFiles, start_in_thread
from stockade.errors import StockadeError
from stockade.lab import pki
from stockade.model.validation import ValidationSettings

ENV = ("STOCKADE_CONTROLLER", "STOCKADE_TOKEN", "STOCKADE_CA", "STOCKADE_CONTEXT")


@pytest.fixture
def cfg_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "config.json"
    monkeypatch.setenv("STOCKADE_CONFIG", str(path))
    return path


def _two_contexts(path: Path) -> None:
    set_context("prod", Context("https://prod.example:7470", "prod-token", "/etc/prod-ca.crt"), path)
    set_context("lab", Context("https://127.0.0.1:9999", "lab-token", "/var/lib/lab/ca.crt"), path)


# ------------------------------------------------------------- resolution

def test_the_current_context_gives_controller_token_and_ca(cfg_path: Path) -> None:
    _two_contexts(cfg_path)
    got = load_config()
    assert (got.controller, got.token, got.ca, got.context) == \
        ("https://127.0.0.1:9999", "lab-token", "/var/lib/lab/ca.crt", "lab")


def test_stockade_context_picks_another_context(cfg_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _two_contexts(cfg_path)
    monkeypatch.setenv("STOCKADE_CONTEXT", "prod")
    assert load_config().token == "prod-token" and load_config().ca == "/etc/prod-ca.crt"
    monkeypatch.setenv("STOCKADE_CONTEXT", "staging")
    with pytest.raises(StockadeError, match="no context 'staging'.*contexts: lab, prod"):
        load_config()


def test_the_environment_overrides_the_file_field_by_field(cfg_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _two_contexts(cfg_path)
    monkeypatch.setenv("STOCKADE_TOKEN", "env-token")
    got = load_config()
    assert (got.controller, got.token, got.ca) == ("https://127.0.0.1:9999", "env-token", "/var/lib/lab/ca.crt")
    monkeypatch.setenv("STOCKADE_CONTROLLER", "https://other:1")
    monkeypatch.setenv("STOCKADE_CA", "/tmp/other-ca.crt")
    got = load_config()
    assert (got.controller, got.token, got.ca) == ("https://other:1", "env-token", "/tmp/other-ca.crt")


def test_flags_override_the_environment_and_the_file(cfg_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _two_contexts(cfg_path)
    monkeypatch.setenv("STOCKADE_TOKEN", "env-token")
    monkeypatch.setenv("STOCKADE_CONTROLLER", "https://env:1")
    got = load_config(controller="https://flag:2", token="flag-token", ca="/flag-ca.crt")
    assert (got.controller, got.token, got.ca) == ("https://flag:2", "flag-token", "/flag-ca.crt")


def test_the_flat_file_of_earlier_versions_still_reads(cfg_path: Path) -> None:
    cfg_path.write_text(json.dumps({"controller": "http://127.0.0.1:7470", "token": "old"}))
    got = load_config()
    assert (got.controller, got.token, got.ca, got.context) == ("http://127.0.0.1:7470", "old", None, "default")


def test_no_controller_anywhere_says_how_to_get_one(cfg_path: Path) -> None:
    with pytest.raises(StockadeError, match="stockade lab up"):
        load_config()


# ----------------------------------------------------------------- the file

def test_set_context_keeps_the_others_and_writes_0600(cfg_path: Path) -> None:
    _two_contexts(cfg_path)
    raw = json.loads(cfg_path.read_text())
    assert raw["current-context"] == "lab" and sorted(raw["contexts"]) == ["lab", "prod"]
    assert raw["contexts"]["prod"] == {"controller": "https://prod.example:7470", "token": "prod-token",
                                       "ca": "/etc/prod-ca.crt"}
    assert stat.S_IMODE(cfg_path.stat().st_mode) == 0o600


def test_remove_context_only_when_unchanged_and_the_file_goes_with_the_last(cfg_path: Path) -> None:
    _two_contexts(cfg_path)
    assert not remove_context("lab", cfg_path, only_if=Context("https://127.0.0.1:1", "x"))
    assert remove_context("lab", cfg_path)
    left = ConfigFile.read(cfg_path)
    assert list(left.contexts) == ["prod"] and left.current_context == "prod"
    assert remove_context("prod", cfg_path)
    assert not cfg_path.exists()


def test_a_damaged_file_is_a_clear_error(cfg_path: Path) -> None:
    cfg_path.write_text("{not json")
    with pytest.raises(StockadeError, match=f"cannot read the CLI config {cfg_path}"):
        load_config()
    cfg_path.write_text(json.dumps({"contexts": {"x": {"token": "t"}}}))
    with pytest.raises(StockadeError, match="context 'x' needs a `controller`"):
        load_config()


# ------------------------------------------------------- `stockade config`

def test_config_view_redacts_every_token(cfg_path: Path) -> None:
    _two_contexts(cfg_path)
    result = CliRunner().invoke(app, ["config", "view"])
    assert result.exit_code == 0, result.output
    assert "prod-token" not in result.output and "lab-token" not in result.output
    shown = json.loads(result.output)
    assert shown["current-context"] == "lab"
    assert shown["contexts"]["prod"] == {"controller": "https://prod.example:7470", "token": "REDACTED",
                                         "ca": "/etc/prod-ca.crt"}


def test_config_use_context_and_set_context(cfg_path: Path, tmp_path: Path) -> None:
    _two_contexts(cfg_path)
    runner = CliRunner()
    assert runner.invoke(app, ["config", "use-context", "prod"]).exit_code == 0
    assert load_config().context == "prod"
    missing = runner.invoke(app, ["config", "use-context", "nope"])
    assert missing.exit_code != 0 and "no context 'nope'" in missing.output
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    made = runner.invoke(app, ["config", "set-context", "dev", "--controller", "https://dev:1",
                               "--token", "dev-token", "--ca", str(ca)])
    assert made.exit_code == 0, made.output
    assert "dev-token" not in made.output
    assert load_config() == load_config(context="dev")
    assert (load_config().token, load_config().ca) == ("dev-token", str(ca))
    bad = runner.invoke(app, ["config", "set-context", "x", "--controller", "localhost:1"])
    assert bad.exit_code != 0 and sorted(ConfigFile.read().contexts) == ["dev", "lab", "prod"]


# ------------------------------------------------ commands against TLS, no flags

@pytest.fixture
def tls_lab(tmp_path: Path, cfg_path: Path) -> Iterator[tuple[RunningController, str, pki.Pki]]:
    """A TLS controller and a config whose current context points at it, as `lab up` leaves them."""
    tokens = create_token_file(tmp_path / "tokens.json", [{"name": "alice", "role": "admin"}])
    certs = pki.ensure_pki(tmp_path / "pki")
    config = ControllerConfig(db_path=tmp_path / "db.sqlite", tokens_file=tmp_path / "tokens.json",
                              validation=ValidationSettings(known_hosts=frozenset({"hv1"})))
    sock_dir = Path(tempfile.mkdtemp(prefix="stk-", dir="/tmp"))
    running = start_in_thread(config, unix_socket=sock_dir / "ctl.sock", tls=TlsFiles(certs.cert, certs.key))
    set_context("lab", Context(running.url, tokens["alice"], str(certs.ca_cert)), cfg_path)
    try:
        yield running, tokens["alice"], certs
    finally:
        running.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_commands_work_over_tls_with_no_flags(tls_lab: tuple[RunningController, str, pki.Pki]) -> None:
    result = CliRunner().invoke(app, ["get", "namespaces", "-o", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["items"] == []


def test_token_flag_and_env_override_the_configured_token(tls_lab: tuple[RunningController, str, pki.Pki]) -> None:
    runner = CliRunner()
    by_env = runner.invoke(app, ["get", "namespaces"], env={"STOCKADE_TOKEN": "wrong"})
    assert by_env.exit_code == 5, by_env.output            # Unauthorized: the env token was the one sent
    by_flag = runner.invoke(app, ["get", "namespaces", "--token", "wrong"])
    assert by_flag.exit_code == 5, by_flag.output
    _, token, _ = tls_lab
    fixed = runner.invoke(app, ["get", "namespaces", "--token", token], env={"STOCKADE_TOKEN": "wrong"})
    assert fixed.exit_code == 0, fixed.output              # the flag beats the environment


def test_a_context_without_the_ca_fails_verification_clearly(tls_lab: tuple[RunningController, str, pki.Pki],
                                                            cfg_path: Path) -> None:
    running, token, _ = tls_lab
    set_context("lab", Context(running.url, token), cfg_path)
    result = CliRunner().invoke(app, ["get", "namespaces"])
    assert result.exit_code == 8
    assert "cannot verify the controller's TLS certificate" in result.output
    assert "Traceback" not in result.output and token not in result.output


def test_client_from_config_talks_to_the_configured_controller(tls_lab: tuple[RunningController, str, pki.Pki],
                                                                cfg_path: Path) -> None:
    with client_from_config(cfg_path) as client:
        assert client.healthz()["ok"] is True
        assert client.list("namespaces")["items"] == []
