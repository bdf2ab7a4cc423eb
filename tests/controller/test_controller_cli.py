"""`stockade controller serve` as a real process: TCP and unix socket up, socket file gone after SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stockade.client import ControllerClient
from stockade.controller.auth import create_token_file
from stockade.controller.main import bind_tcp, parse_listen
from stockade.errors import ControllerUnavailable, ValidationError
from tests.controller.controller_docs import namespace, workload

LAUNCH = "from stockade.controller.cli import controller_app; controller_app()"


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:7470") == ("127.0.0.1", 7470)
    assert parse_listen("[::1]:80") == ("::1", 80)
    assert parse_listen(":9") == ("0.0.0.0", 9)
    for bad in ("127.0.0.1", "host:port", "1.2.3.4:70000"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def test_serve_command_runs_the_controller_on_tcp_and_unix_socket(tmp_path: Path, short_dir: Path) -> None:
    tokens = create_token_file(tmp_path / "tokens.json", [{"name": "alice", "role": "admin"}])
    probe = bind_tcp("127.0.0.1", 0)
    port = probe.getsockname()[1]
    probe.close()
    sock = short_dir / "ctl.sock"
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "serve", "--db", str(tmp_path / "db.sqlite"),
         "--listen", f"127.0.0.1:{port}", "--socket", str(sock), "--tokens", str(tmp_path / "tokens.json"),
         "--known-hosts", "hv1,hv2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        with ControllerClient(f"http://127.0.0.1:{port}", tokens["alice"], timeout=2) as tcp, \
                ControllerClient(f"unix://{sock}", tokens["alice"], timeout=2) as unix:
            deadline = time.monotonic() + 15
            while True:
                try:
                    tcp.healthz()
                    break
                except ControllerUnavailable:
                    assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                    assert time.monotonic() < deadline, "controller did not come up"
                    time.sleep(0.05)
            assert unix.apply([namespace("shop"), workload("w", host="hv2")], "cli")["revision"] == 1
            with pytest.raises(ValidationError):  # --known-hosts reached the validation settings
                tcp.apply([workload("x", host="hv3")], "")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    assert proc.returncode == 0
    assert not sock.exists()


def test_interface_rules_come_from_the_command_line_or_keep_their_defaults() -> None:
    from stockade.controller.main import validation_settings
    from stockade.model.validation import DEFAULT_INTERFACE_PATTERN, DEFAULT_RESERVED_INTERFACES

    default = validation_settings()
    assert (default.interface_pattern, default.reserved_interfaces, default.known_hosts) == (
        DEFAULT_INTERFACE_PATTERN, DEFAULT_RESERVED_INTERFACES, None)
    custom = validation_settings("hv1, hv2", r"eth[1-9]", "lo, uplink0")
    assert custom.interface_pattern == r"eth[1-9]"
    assert custom.reserved_interfaces == frozenset({"lo", "uplink0"})
    assert custom.known_hosts == frozenset({"hv1", "hv2"})
    with pytest.raises(ValueError, match="not a regular expression"):
        validation_settings(interface_pattern="(")


def test_serve_takes_a_listening_socket_it_is_handed(tmp_path: Path) -> None:
    """Socket activation (`--listen-fd N`): the parent binds and listens, the controller serves it
    (the lab binds one in the host namespace while the controller runs on the fabric)."""
    tokens = create_token_file(tmp_path / "tokens.json", [{"name": "alice", "role": "admin"}])
    handed = bind_tcp("127.0.0.1", 0)
    handed.listen(16)
    handed_port = handed.getsockname()[1]
    fd = handed.fileno()
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "serve", "--db", str(tmp_path / "db.sqlite"), "--listen", "127.0.0.1:0",
         "--tokens", str(tmp_path / "tokens.json"), "--listen-fd", str(fd)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, pass_fds=(fd,))
    handed.close()  # the controller holds it now
    try:
        with ControllerClient(f"http://127.0.0.1:{handed_port}", tokens["alice"], timeout=2) as client:
            deadline = time.monotonic() + 15
            while True:
                try:
                    assert client.apply([namespace("shop")], "through the handed socket")["revision"] == 1
                    break
                except ControllerUnavailable:
                    assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                    assert time.monotonic() < deadline, "controller did not come up"
                    time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    assert proc.returncode == 0


def test_serve_refuses_a_descriptor_that_is_no_listening_socket(tmp_path: Path) -> None:
    create_token_file(tmp_path / "tokens.json", [{"name": "alice", "role": "admin"}])
    result = subprocess.run(
        [sys.executable, "-c", LAUNCH, "serve", "--db", str(tmp_path / "db.sqlite"), "--listen", "127.0.0.1:0",
         "--tokens", str(tmp_path / "tokens.json"), "--listen-fd", "57"],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "--listen-fd 57" in result.stderr
