"""`lab up/down/status`: the processes' command lines, idempotent up, and a down that leaves nothing."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from stockade.client_config import ConfigFile, Context, set_context
from stockade.errors import LabError
from stockade.lab import commands, naming, netns, supervisor, tokens
from stockade.lab.state import LabSettings
from tests.lab.conftest import new_prefix
from tests.lab.helpers import needs_root
from tests.waiting import process_gone, wait_until


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[LabSettings]:
    s = LabSettings(new_prefix(), tmp_path / "state", tmp_path / "config.json")
    try:
        yield s
    finally:
        supervisor.down(s)  # also when the test failed half way


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STOCKADE_STATE_DIR", str(tmp_path / "s"))
    monkeypatch.setenv("STOCKADE_LAB_PREFIX", "abc")
    monkeypatch.setenv("STOCKADE_CONFIG", str(tmp_path / "c.json"))
    assert LabSettings.from_env() == LabSettings("abc", tmp_path / "s", tmp_path / "c.json")
    monkeypatch.setenv("STOCKADE_LAB_PREFIX", "a-b")
    with pytest.raises(LabError):
        LabSettings.from_env()


def test_agent_runs_in_its_hypervisor_netns_with_its_own_token(settings: LabSettings) -> None:
    argv = commands.agent_argv(settings, "hv2")
    assert argv[:2] == ["nsenter", f"--net=/run/netns/{settings.prefix}-hv2"]
    assert argv[2:6] == [sys.executable, "-m", "stockade.lab.agent", "run"]
    flags = dict(zip(argv[6::2], argv[7::2]))
    # Over TLS on the fabric, verified with the lab CA, as an agent on a real host.
    assert flags == {"--host": "hv2", "--controller": "https://198.18.254.254:7470",
                     "--ca": str(settings.state_dir / "ca.crt"),
                     "--token-file": str(settings.state_dir / "agent-hv2.token"),
                     "--lab-prefix": settings.prefix, "--state-dir": str(settings.state_dir),
                     "--metrics-address": "198.18.254.2:9301",
                     # Its workloads' DNS to the lab's resolver through its proxy (issue 18).
                     "--dns-resolver": "198.19.0.53", "--dns-proxy": "198.18.255.1:1053", "--fqdn-min-ttl": "1"}


def test_controller_serves_https_on_the_fabric_and_the_cli_socket_it_is_handed(settings: LabSettings) -> None:
    argv = commands.controller_argv(settings, 7, ["hv1", "hv2"])
    assert argv[:2] == ["nsenter", f"--net=/run/netns/{settings.prefix}-cp"]
    assert argv[2:7] == [sys.executable, "-m", "stockade", "controller", "serve"]
    flags = dict(zip(argv[7::2], argv[8::2]))
    assert flags == {"--db": str(settings.state_dir / "controller.db"), "--listen": "198.18.254.254:7470",
                     "--listen-fd": "7",
                     "--tokens": str(settings.state_dir / "tokens.json"), "--known-hosts": "hv1,hv2",
                     "--tls-cert": str(settings.state_dir / "controller.crt"),
                     "--tls-key": str(settings.state_dir / "controller.key")}


def test_down_in_a_directory_that_is_not_a_lab_removes_only_lab_files(settings: LabSettings) -> None:
    settings.state_dir.mkdir()
    for name in ("tokens.json", "admin.token", "agent-hv1.token", "precious.txt"):
        (settings.state_dir / name).write_text("x")
    supervisor.down(settings)
    assert sorted(p.name for p in settings.state_dir.iterdir()) == ["precious.txt"]


def test_down_keeps_a_cli_config_that_points_elsewhere(settings: LabSettings) -> None:
    settings.state_dir.mkdir()
    settings.lab_file.write_text(json.dumps({"prefix": settings.prefix, "hosts": 1, "port": 1,
                                             "config_written": True}))
    settings.config_path.write_text(json.dumps({"controller": "https://prod.example:443", "token": "t"}))
    supervisor.down(settings)
    assert settings.config_path.exists()
    assert not settings.state_dir.exists()


def _lab_dir(settings: LabSettings, port: int) -> None:
    settings.state_dir.mkdir()
    settings.lab_file.write_text(json.dumps({"prefix": settings.prefix, "hosts": 1, "port": port,
                                             "config_written": True}))


def test_down_removes_only_the_lab_context_and_keeps_the_others(settings: LabSettings) -> None:
    _lab_dir(settings, 4242)
    set_context("prod", Context("https://prod.example:443", "t"), settings.config_path)
    set_context("lab", Context("https://127.0.0.1:4242", "a", "/x/ca.crt"), settings.config_path)
    supervisor.down(settings)
    left = ConfigFile.read(settings.config_path)
    assert list(left.contexts) == ["prod"] and left.current_context == "prod"


def test_down_keeps_a_lab_context_that_now_points_elsewhere(settings: LabSettings) -> None:
    _lab_dir(settings, 4242)
    set_context("lab", Context("https://127.0.0.1:5555", "a"), settings.config_path)
    supervisor.down(settings)
    assert list(ConfigFile.read(settings.config_path).contexts) == ["lab"]


def test_down_removes_the_flat_config_an_earlier_lab_wrote(settings: LabSettings) -> None:
    _lab_dir(settings, 4242)
    settings.config_path.write_text(json.dumps({"controller": "http://127.0.0.1:4242", "token": "t"}))
    supervisor.down(settings)
    assert not settings.config_path.exists()


@pytest.mark.kernel
@needs_root
def test_up_reports_a_controller_that_dies_with_its_log(settings: LabSettings,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in that looks like our controller (state dir and "controller serve" on its command line).
    script = "import sys; print('controller boom', flush=True); sys.exit(3)"
    monkeypatch.setattr(commands, "controller_argv", lambda s, port, hosts, *rest: [
        sys.executable, "-c", script, str(s.state_dir), "controller", "serve"])
    with pytest.raises(LabError, match="controller exited") as err:
        supervisor.up(settings, hosts=1)
    assert "controller boom" in err.value.message
    assert str(settings.log_file("controller")) in err.value.message


def _is_stockade(pid: int) -> bool:
    try:
        return b"stockade" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False


def _assert_agents_reach_the_controller_over_tls_on_the_fabric(settings: LabSettings,
                                                                st: supervisor.LabStatus) -> None:
    """No unix-socket shortcut: the controller runs in the control-plane netns, and each agent
    holds a TCP connection to its fabric address (TLS: the agents are given the lab CA)."""
    pids = _pids(st)
    cp = f"/run/netns/{naming.control_netns(settings.prefix)}"
    assert os.stat(f"/proc/{pids['controller']}/ns/net").st_ino == os.stat(cp).st_ino
    assert not settings.socket.exists()
    for host in ("hv1", "hv2"):
        hv = naming.host_netns(settings.prefix, host)
        listing = subprocess.run(["ip", "netns", "exec", hv, "ss", "-tnpH", "state", "established", "dst",
                                  f"{naming.CONTROLLER_V4}:{naming.CONTROLLER_PORT}"],
                                 capture_output=True, text=True, check=True).stdout
        assert f"pid={pids[f'agent-{host}']}," in listing, listing
    assert {p.name: p.role for p in st.processes} == {"controller": "controller", "agent-hv1": "agent",
                                                      "agent-hv2": "agent", "dns": "dns"}


def _pids(st: supervisor.LabStatus) -> dict[str, int | None]:
    return {p.name: p.pid for p in st.processes}


@pytest.mark.kernel
@needs_root
def test_up_is_idempotent_restarts_what_died_and_down_leaves_nothing(settings: LabSettings) -> None:
    prod = Context("https://prod.example:443", "prod-token")
    set_context("prod", prod, settings.config_path)  # someone's own context: up and down keep it
    first = supervisor.up(settings, hosts=2)
    assert [p.name for p in first.processes if p.alive] == ["controller", "agent-hv1", "agent-hv2", "dns"]
    assert first.reporting == ["hv1", "hv2"]          # asked over HTTPS, verified against the lab CA
    assert first.controller_url is not None and first.controller_url.startswith("https://127.0.0.1:")
    config = json.loads(settings.config_path.read_text())
    assert config == {"current-context": "lab", "contexts": {
        "lab": {"controller": first.controller_url, "token": settings.admin_token.read_text().strip(),
                "ca": str(settings.state_dir / "ca.crt")},
        "prod": prod.to_json()}}
    assert stat.S_IMODE(settings.config_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((settings.state_dir / "ca.key").stat().st_mode) == 0o600
    _assert_agents_reach_the_controller_over_tls_on_the_fabric(settings, first)
    certs = {p: p.read_bytes() for p in settings.state_dir.glob("*.crt")}

    again = supervisor.up(settings)                  # nothing to do: same processes, port and certificates
    assert _pids(again) == _pids(first) and again.controller_url == first.controller_url
    assert {p: p.read_bytes() for p in certs} == certs

    killed = _pids(first)["agent-hv1"] or 0
    os.kill(killed, signal.SIGKILL)
    wait_until(lambda: process_gone(killed), f"agent-hv1 (pid {killed}) to die of SIGKILL", timeout=5)
    healed = supervisor.up(settings)
    assert healed.reporting == ["hv1", "hv2"]
    assert _pids(healed)["agent-hv1"] != _pids(first)["agent-hv1"]
    assert _pids(healed)["agent-hv2"] == _pids(first)["agent-hv2"]

    pids = [p for p in _pids(healed).values() if p]
    supervisor.down(settings)
    assert netns.list_netns(naming.lab_netns_prefix(settings.prefix)) == []
    assert [p for p in pids if _is_stockade(p)] == []
    assert not settings.state_dir.exists()
    assert list(ConfigFile.read(settings.config_path).contexts) == ["prod"]


@needs_root
def test_a_taken_cli_port_is_a_clear_error() -> None:
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        with pytest.raises(LabError, match=f"cannot listen on 127.0.0.1:{taken.getsockname()[1]} for the CLI"):
            supervisor._bind_cli_socket(taken.getsockname()[1])
    finally:
        taken.close()


def test_lab_tokens_are_made_by_the_controllers_own_command(tmp_path: Path) -> None:
    """The lab runs `python -m stockade.controller init-tokens` (it never imports the controller):
    every plaintext 0600, and a lost agent token renews that agent's entry only."""
    s = LabSettings(new_prefix(), tmp_path / "state", tmp_path / "config.json")
    assert commands.init_tokens_argv(s, ["a:admin=x"])[1:4] == ["-m", "stockade.controller", "init-tokens"]
    assert tokens.ensure_tokens(s, ["hv1", "hv2"]) == ["hv1", "hv2"]
    files = [s.tokens, s.admin_token, s.agent_token("hv1"), s.agent_token("hv2")]
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    entries = {e["name"]: e for e in json.loads(s.tokens.read_text())}
    assert sorted(entries) == ["agent-hv1", "agent-hv2", "lab-admin"] and entries["agent-hv2"]["host"] == "hv2"
    admin, hv1 = s.admin_token.read_text(), s.agent_token("hv1").read_text()
    assert tokens.ensure_tokens(s, ["hv1", "hv2"]) == []  # nothing lost: nothing made
    s.agent_token("hv2").unlink()
    assert tokens.ensure_tokens(s, ["hv1", "hv2"]) == ["hv2"]
    renewed = {e["name"]: e for e in json.loads(s.tokens.read_text())}
    assert renewed["agent-hv2"]["sha256"] != entries["agent-hv2"]["sha256"]
    assert renewed["lab-admin"] == entries["lab-admin"] and renewed["agent-hv1"] == entries["agent-hv1"]
    assert (s.admin_token.read_text(), s.agent_token("hv1").read_text()) == (admin, hv1)


# ------------------------------------------------- the lab processes' environment
# Issue 13: a lab process's environment is built from an allow-list, so the operator's
# STOCKADE_TOKEN (or any other credential in the environment of whoever ran `lab up`) does not
# reach the controller or the agents. No root needed.

def test_lab_process_env_drops_the_operators_token_and_credentials() -> None:
    from stockade.lab.processes import lab_process_env

    operator = {"PATH": "/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
                "STOCKADE_TOKEN": "stk_" + "o" * 43, "STOCKADE_CONFIG": "/root/.config/stockade/config.json",
                "STOCKADE_CONTROLLER": "https://prod:8443", "AWS_SECRET_ACCESS_KEY": "hunter2",
                "SSH_AUTH_SOCK": "/tmp/ssh-agent.sock"}
    env = lab_process_env(operator)
    assert not any(k.startswith("STOCKADE_") for k in env)
    assert "AWS_SECRET_ACCESS_KEY" not in env and "SSH_AUTH_SOCK" not in env
    assert "stk_" not in "".join(env.values())
    assert env["PATH"] == "/usr/bin:/bin" and env["PYTHONUNBUFFERED"] == "1"
    assert lab_process_env({})["PATH"]  # programs are still found without one
