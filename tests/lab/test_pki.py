"""The lab CA and the controller certificate: made once, verifiable, private keys private, renewed when stale."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import stat
import threading
from pathlib import Path

from cryptography import x509

from stockade.lab import pki


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_makes_a_ca_and_a_controller_certificate_signed_by_it(tmp_path: Path) -> None:
    made = pki.ensure_pki(tmp_path / "state")
    assert made.changed
    ca, cert = _load(made.ca_cert), _load(made.cert)
    cert.verify_directly_issued_by(ca)            # raises when the signature or issuer is wrong
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # The CLI's address, and the controller's on the fabric, where the agents reach it.
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(a) for a in (
        "127.0.0.1", "198.18.254.254", "2001:db8:ffff::254", "198.18.254.253", "2001:db8:ffff::253",
        "198.18.254.252", "2001:db8:ffff::252")]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=29) < lifetime <= pki.CERT_VALIDITY + pki.CLOCK_SKEW


def test_private_keys_are_0600_and_no_temporary_files_are_left(tmp_path: Path) -> None:
    made = pki.ensure_pki(tmp_path)
    assert stat.S_IMODE(made.ca_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(made.key.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.crt", "ca.key", "controller.crt", "controller.key"]


def test_a_second_call_reuses_every_file(tmp_path: Path) -> None:
    first = pki.ensure_pki(tmp_path)
    before = {p: p.read_bytes() for p in (first.ca_cert, first.ca_key, first.cert, first.key)}
    again = pki.ensure_pki(tmp_path)
    assert not again.changed
    assert {p: p.read_bytes() for p in before} == before


def test_a_lost_controller_key_gets_a_new_certificate_from_the_same_ca(tmp_path: Path) -> None:
    first = pki.ensure_pki(tmp_path)
    ca_before, cert_before = first.ca_cert.read_bytes(), first.cert.read_bytes()
    first.key.unlink()
    again = pki.ensure_pki(tmp_path)
    assert again.changed and again.ca_cert.read_bytes() == ca_before
    assert again.cert.read_bytes() != cert_before
    _load(again.cert).verify_directly_issued_by(_load(again.ca_cert))


def test_a_new_ca_also_means_a_new_controller_certificate(tmp_path: Path) -> None:
    first = pki.ensure_pki(tmp_path)
    cert_before = first.cert.read_bytes()
    first.ca_key.unlink()
    again = pki.ensure_pki(tmp_path)
    assert again.changed and again.cert.read_bytes() != cert_before
    _load(again.cert).verify_directly_issued_by(_load(again.ca_cert))


def test_a_certificate_close_to_expiry_is_renewed(tmp_path: Path) -> None:
    first = pki.ensure_pki(tmp_path)
    cert_before = first.cert.read_bytes()
    later = dt.datetime.now(dt.timezone.utc) + pki.CERT_VALIDITY - dt.timedelta(days=1)
    again = pki.ensure_pki(tmp_path, now=later)
    assert again.changed and again.cert.read_bytes() != cert_before
    assert _load(again.cert).not_valid_after_utc > later + pki.RENEW_BEFORE


def test_a_tls_client_trusting_the_ca_accepts_the_certificate_for_127_0_0_1(tmp_path: Path) -> None:
    """The standard library's verification (what httpx uses), hostname check included."""
    made = pki.ensure_pki(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(made.cert, made.key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept_one() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=accept_one, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=str(made.ca_cert))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.getpeercert()["subjectAltName"][:2] == (("DNS", "localhost"), ("IP Address", "127.0.0.1"))
                tls.sendall(b"x")
    finally:
        thread.join(5)
        listener.close()
