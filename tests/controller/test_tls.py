"""A controller serving HTTPS on TCP (and plain HTTP on its unix socket), and clients that verify it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Iterator

import pytest

from stockade.client import AsyncControllerClient, ControllerClient
from stockade.controller.config import ControllerConfig
from stockade.controller.main import RunningController, TlsFiles, start_in_thread, tls_files
from stockade.errors import ControllerUnavailable, StockadeError
from stockade.lab import pki
from tests.controller.controller_docs import shop


@pytest.fixture
def certs(tmp_path: Path) -> pki.Pki:
    return pki.ensure_pki(tmp_path / "pki")


@pytest.fixture
def tls_controller(config: ControllerConfig, short_dir: Path, certs: pki.Pki) -> Iterator[RunningController]:
    running = start_in_thread(config, unix_socket=short_dir / "ctl.sock", tls=TlsFiles(certs.cert, certs.key))
    try:
        yield running
    finally:
        running.stop()


def test_a_client_trusting_the_lab_ca_talks_https(tls_controller: RunningController, certs: pki.Pki,
                                                  tokens: dict[str, str]) -> None:
    assert tls_controller.url.startswith("https://127.0.0.1:")
    with ControllerClient(tls_controller.url, tokens["alice"], ca=certs.ca_cert) as client:
        assert client.healthz()["ok"] is True
        assert client.apply(shop(), "over tls")["revision"] == 1


def test_the_unix_socket_of_a_tls_controller_stays_plain_http(tls_controller: RunningController,
                                                              tokens: dict[str, str]) -> None:
    assert tls_controller.unix_url is not None
    with ControllerClient(tls_controller.unix_url, tokens["agent-hv1"]) as agent:
        assert agent.snapshot()["revision"] == 0


def test_without_the_ca_the_certificate_does_not_verify_and_the_error_says_so(
        tls_controller: RunningController, tokens: dict[str, str]) -> None:
    with ControllerClient(tls_controller.url, tokens["alice"], timeout=5) as client:  # system trust store only
        with pytest.raises(ControllerUnavailable) as caught:
            client.status()
    message = caught.value.message
    assert f"cannot verify the controller's TLS certificate at {tls_controller.url}" in message
    assert "system's trusted CAs" in message and "STOCKADE_CA" in message
    assert tokens["alice"] not in message


def test_another_labs_ca_does_not_verify_this_controller(tls_controller: RunningController, tmp_path: Path,
                                                         tokens: dict[str, str]) -> None:
    other = pki.ensure_pki(tmp_path / "other-lab")
    with ControllerClient(tls_controller.url, tokens["alice"], ca=other.ca_cert, timeout=5) as client:
        with pytest.raises(ControllerUnavailable, match="cannot verify the controller's TLS certificate") as caught:
            client.healthz()
    assert str(other.ca_cert) in caught.value.message


def test_plain_http_to_the_tls_port_fails_with_a_hint(tls_controller: RunningController,
                                                      tokens: dict[str, str]) -> None:
    plain = tls_controller.url.replace("https://", "http://")
    with ControllerClient(plain, tokens["alice"], timeout=5) as client:
        with pytest.raises(ControllerUnavailable, match="use an https:// URL"):
            client.status()


def test_https_to_a_plain_controller_fails_clearly(controller: RunningController, certs: pki.Pki) -> None:
    with ControllerClient(controller.url.replace("http://", "https://"), ca=certs.ca_cert, timeout=5) as client:
        with pytest.raises(ControllerUnavailable, match="TLS with the controller .* failed"):
            client.healthz()


def test_the_async_client_verifies_with_the_ca_too(tls_controller: RunningController, certs: pki.Pki,
                                                   tokens: dict[str, str]) -> None:
    async def main() -> None:
        async with AsyncControllerClient(tls_controller.url, tokens["alice"], ca=certs.ca_cert) as good:
            assert (await good.healthz())["ok"] is True
        async with AsyncControllerClient(tls_controller.url, tokens["alice"], timeout=5) as bad:
            with pytest.raises(ControllerUnavailable, match="cannot verify"):
                await bad.healthz()

    asyncio.run(main())


def test_an_unreadable_ca_bundle_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StockadeError, match="cannot load the CA bundle"):
        ControllerClient("https://127.0.0.1:1", ca=tmp_path / "missing.crt")
    (tmp_path / "empty.crt").write_text("not a certificate\n")
    with pytest.raises(StockadeError, match="cannot load the CA bundle"):
        ControllerClient("https://127.0.0.1:1", ca=tmp_path / "empty.crt")


def test_tls_needs_both_files_and_a_matching_key_before_it_starts(config: ControllerConfig, certs: pki.Pki,
                                                                  tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="go together"):
        tls_files(certs.cert, None)
    assert tls_files(None, None) is None
    other = pki.ensure_pki(tmp_path / "other")
    with pytest.raises(OSError):  # ssl.SSLError: key values mismatch; raised here, not in the server thread
        start_in_thread(config, tls=TlsFiles(certs.cert, other.key))
