"""Issue 13, item 10: a token is revoked by what its holder has in hand, and never written anywhere.

- `token revoke stk_…` works (the CLI sends the token's id; the API takes the token too), and
  neither the audit log (store and JSON lines) nor the controller's log holds the secret, even
  when it was sent as the path of the request;
- `--token-file PATH` and `--token-file -` (stdin) give every command its credential without
  putting it on the command line;
- every file holding a secret is created 0600: there is no moment at which it has a wider mode.
"""

from __future__ import annotations

import io
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from stockade.cli.main import app
from stockade.controller.api import build_app
from stockade.controller.auth import create_token_file, hash_token
from stockade.controller.config import ControllerConfig
from stockade.controller.main import RunningController
from stockade.errors import ValidationError
from tests.controller.conftest import admin, config, controller, short_dir, tokens  # noqa: F401 (fixtures)

API = "/api/v1"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, str, Path]]:
    root = create_token_file(tmp_path / "tokens.json", [{"name": "root", "role": "admin"}])["root"]
    audit_file = tmp_path / "audit.jsonl"
    config = ControllerConfig(db_path=tmp_path / "stockade.db", tokens_file=tmp_path / "tokens.json",
                              audit_log=audit_file)
    with TestClient(build_app(config)) as client:
        yield client, root, audit_file


def test_revoking_by_the_token_itself_works_and_the_secret_is_written_nowhere(
        api: tuple[TestClient, str, Path], caplog: pytest.LogCaptureFixture) -> None:
    client, root, audit_file = api
    auth = {"Authorization": f"Bearer {root}"}
    made = client.post(f"{API}/tokens", json={"role": "viewer", "name": "leaked"}, headers=auth).json()
    leaked = made["token"]
    assert client.get(f"{API}/status", headers={"Authorization": f"Bearer {leaked}"}).status_code == 200
    with caplog.at_level(logging.INFO):
        # What a person with the token in hand does with curl: the token itself in the path.
        r = client.delete(f"{API}/tokens/{leaked}", headers=auth)
        assert r.status_code == 200, r.text
        assert r.json()["tokens"][0]["id"] == made["info"]["id"]
        assert client.get(f"{API}/status", headers={"Authorization": f"Bearer {leaked}"}).status_code == 401
        # An unknown token sent for revocation is refused without being echoed.
        unknown = "stk_" + "x" * 43
        r = client.delete(f"{API}/tokens/{unknown}", headers=auth)
        assert r.status_code == 404 and unknown not in r.text
    entries = client.get(f"{API}/audit", headers=auth).json()["entries"]
    revoke = [e for e in entries if e["action"] == "token.revoke"]
    assert revoke and revoke[0]["outcome"] == "ok"
    stored, mirrored, logs = json.dumps(entries, ensure_ascii=False), audit_file.read_text(), caplog.text
    for secret in (leaked, unknown, root):
        assert secret not in stored and secret not in mirrored and secret not in logs
    assert "stk_…REDACTED" in stored  # the path was kept, masked


def test_token_revoke_in_the_cli_sends_the_id_never_the_token() -> None:
    from stockade.client_config import revocation_ref

    token = "stk_" + "A" * 43
    assert revocation_ref(token) == hash_token(token)[:12]
    assert revocation_ref(f"  {token}\n") == hash_token(token)[:12]
    assert revocation_ref("4f2a9c0d1e2b") == "4f2a9c0d1e2b" and revocation_ref("ci-bot") == "ci-bot"


def test_redaction_masks_token_shaped_text_only() -> None:
    from stockade.redaction import redact

    token = "stk_" + "b" * 43
    assert redact(f"DELETE /api/v1/tokens/{token}") == "DELETE /api/v1/tokens/stk_…REDACTED"
    assert redact("interface stk_ab12 on hv1") == "interface stk_ab12 on hv1"


# ------------------------------------------------------------------ --token-file


def test_read_token_from_a_file_or_stdin_and_refuses_both_flags(tmp_path: Path) -> None:
    from stockade.client_config import read_token

    f = tmp_path / "t"
    f.write_text("stk_secret-value\n")
    assert read_token(None, str(f)) == "stk_secret-value"
    assert read_token(None, "-", stdin=io.StringIO("  stk_from-stdin \n")) == "stk_from-stdin"
    assert read_token("stk_flag", None) == "stk_flag"
    with pytest.raises(ValidationError, match="not both"):
        read_token("stk_flag", str(f))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValidationError, match="holds no token") as caught:
        read_token(None, str(tmp_path / "empty"))
    assert str(tmp_path / "empty") in caught.value.message
    with pytest.raises(ValidationError, match="cannot read"):
        read_token(None, str(tmp_path / "missing"))


def test_every_command_takes_token_file_and_stdin(controller: RunningController, tokens: dict[str, str],  # noqa: F811
                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOCKADE_CONFIG", str(tmp_path / "none.json"))
    monkeypatch.delenv("STOCKADE_TOKEN", raising=False)
    monkeypatch.setenv("STOCKADE_CONTROLLER", controller.url)
    token_file = tmp_path / "admin.token"
    token_file.write_text(tokens["alice"] + "\n")
    runner = CliRunner()
    by_file = runner.invoke(app, ["get", "namespaces", "-o", "json", "--token-file", str(token_file)])
    assert by_file.exit_code == 0, by_file.output
    by_stdin = runner.invoke(app, ["status", "-o", "json", "--token-file", "-"], input=tokens["alice"] + "\n")
    assert by_stdin.exit_code == 0, by_stdin.output
    assert "revision" in json.loads(by_stdin.stdout)
    nothing = runner.invoke(app, ["status", "-o", "json"])
    assert nothing.exit_code != 0  # no credential anywhere: the file was what made it work
    # Every command that talks to the controller offers it (they share one options helper).
    for command in (["apply"], ["delete"], ["get"], ["status"], ["flows"], ["probe"], ["trace"], ["test"],
                    ["history"], ["diff"], ["rollback"], ["audit"], ["token", "create"], ["token", "list"],
                    ["token", "revoke"]):
        assert "--token-file" in runner.invoke(app, [*command, "--help"], terminal_width=200).stdout, command


def test_cli_token_revoke_by_value_from_stdin(controller: RunningController, tokens: dict[str, str],  # noqa: F811
                                              admin: Any, tmp_path: Path,  # noqa: F811
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    leaked = admin.create_token("viewer", name="leaked")["token"]
    monkeypatch.setenv("STOCKADE_CONFIG", str(tmp_path / "none.json"))
    monkeypatch.setenv("STOCKADE_CONTROLLER", controller.url)
    monkeypatch.setenv("STOCKADE_TOKEN", tokens["alice"])
    result = CliRunner().invoke(app, ["token", "revoke", "-"], input=leaked + "\n")
    assert result.exit_code == 0, result.output
    assert "leaked" in result.stdout and "revoked" in result.stdout
    assert [t["revoked"] for t in admin.tokens() if t["name"] == "leaked"] != [None]


# ------------------------------------------------------------------ files with secrets


@pytest.fixture
def open_umask_and_spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int, int]]]:
    """umask 0 (the worst case), and every os.open/mkstemp creation recorded as (path, flags, mode)."""
    created: list[tuple[str, int, int]] = []
    real_open = os.open

    def spy(path: Any, flags: int, mode: int = 0o777, *a: Any, **kw: Any) -> int:
        if flags & os.O_CREAT:
            created.append((str(path), flags, mode))
        return real_open(path, flags, mode, *a, **kw)

    monkeypatch.setattr(os, "open", spy)
    old = os.umask(0)
    try:
        yield created
    finally:
        os.umask(old)


def _assert_private_from_creation(created: list[tuple[str, int, int]], final: Path) -> None:
    assert created, "nothing was created through os.open"
    for path, flags, mode in created:
        assert flags & os.O_EXCL, path  # a fresh file, not an existing one reused with its old mode
        assert mode & 0o077 == 0, (path, oct(mode))
    assert stat.S_IMODE(final.stat().st_mode) == 0o600


def test_tokens_file_is_private_from_creation(open_umask_and_spy: list[tuple[str, int, int]], tmp_path: Path) -> None:
    create_token_file(tmp_path / "tokens.json", [{"name": "root", "role": "admin"}])
    _assert_private_from_creation(open_umask_and_spy, tmp_path / "tokens.json")


def test_cli_config_is_private_from_creation(open_umask_and_spy: list[tuple[str, int, int]], tmp_path: Path) -> None:
    from stockade.client_config import write_config

    write_config("https://127.0.0.1:1", "stk_" + "c" * 43, tmp_path / "config.json")
    _assert_private_from_creation(open_umask_and_spy, tmp_path / "config.json")


def test_lab_secret_files_are_private_from_creation_even_over_a_wider_old_file(
        open_umask_and_spy: list[tuple[str, int, int]], tmp_path: Path) -> None:
    from stockade.private_files import write_private

    target = tmp_path / "agent-hv1.token"
    target.write_text("old\n")
    os.chmod(target, 0o644)  # left wide by an older version or a hand edit
    open_umask_and_spy.clear()
    write_private(target, "stk_" + "d" * 43 + "\n")
    _assert_private_from_creation(open_umask_and_spy, target)


def test_lab_keys_are_private_from_creation(open_umask_and_spy: list[tuple[str, int, int]], tmp_path: Path) -> None:
    from stockade.lab import pki

    pki.ensure_pki(tmp_path)
    keys = [c for c in open_umask_and_spy if c[0].endswith(".key.tmp") or ".key." in c[0]]
    assert len(keys) == 2, open_umask_and_spy  # the CA's key and the controller's
    for key in ("ca.key", "controller.key"):
        _assert_private_from_creation(keys, tmp_path / key)
