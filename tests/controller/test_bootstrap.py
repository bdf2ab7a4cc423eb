"""`stockade controller init-tokens`: the tokens a controller starts with, made by the controller's
own command (what the lab runs as a process instead of importing controller internals)."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from stockade.client import ControllerClient
from stockade.controller.config import ControllerConfig
from stockade.controller.main import start_in_thread


def init_tokens(tokens: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stockade.controller", "init-tokens", "--tokens", str(tokens),
                           *args], capture_output=True, text=True, timeout=60)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_tokens_writes_a_working_admin_token_readable_by_its_owner_only(tmp_path: Path,
                                                                             short_dir: Path) -> None:
    tokens, admin, agent = tmp_path / "tokens.json", tmp_path / "admin.token", tmp_path / "agent-hv1.token"
    done = init_tokens(tokens, "--fresh", "--token", f"lab-admin:admin={admin}",
                       "--token", f"agent-hv1:agent:hv1={agent}")
    assert done.returncode == 0, done.stderr
    secret = admin.read_text().strip()
    assert secret.startswith("stk_") and secret not in done.stdout + done.stderr
    assert mode(admin) == mode(agent) == mode(tokens) == 0o600
    assert [(e["name"], e["role"], e.get("host")) for e in json.loads(tokens.read_text())] == [
        ("lab-admin", "admin", None), ("agent-hv1", "agent", "hv1")]
    assert secret not in tokens.read_text()  # hashes only
    config = ControllerConfig(db_path=tmp_path / "stockade.db", tokens_file=tokens)
    running = start_in_thread(config, unix_socket=short_dir / "ctl.sock")
    try:
        with ControllerClient(running.url, secret) as client:
            assert client.create_token("viewer", name="v")["info"]["createdBy"] == "lab-admin"  # an admin
        assert running.unix_url is not None
        with ControllerClient(running.unix_url, agent.read_text().strip()) as client:
            client.report_status("hv1", {"revision": 0, "inSync": True})
    finally:
        running.stop()


def test_init_tokens_renews_the_named_tokens_and_keeps_the_others(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    assert init_tokens(tokens, "--token", f"a:admin={tmp_path / 'a'}", "--token",
                       f"agent-hv1:agent:hv1={tmp_path / 'h1'}").returncode == 0
    before = {e["name"]: e for e in json.loads(tokens.read_text())}
    old = (tmp_path / "h1").read_text()
    assert init_tokens(tokens, "--token", f"agent-hv1:agent:hv1={tmp_path / 'h1'}").returncode == 0
    after = {e["name"]: e for e in json.loads(tokens.read_text())}
    assert after["a"] == before["a"] and after["agent-hv1"]["sha256"] != before["agent-hv1"]["sha256"]
    assert (tmp_path / "h1").read_text() != old and mode(tmp_path / "h1") == 0o600


def test_init_tokens_refuses_a_bad_spec_and_writes_nothing(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    for bad in ("no-equals", "x:root=out", "x:admin:hv1=out", "x=out"):
        done = init_tokens(tokens, "--token", f"ok:admin={tmp_path / 'ok'}", "--token", bad)
        assert done.returncode == 1 and done.stderr.startswith("error: "), (bad, done.stderr)
    assert not tokens.exists() and not (tmp_path / "ok").exists()
