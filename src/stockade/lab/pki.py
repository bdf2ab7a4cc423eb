"""The lab's own certificate authority and the controller's TLS certificate.

    ensure_pki(directory)  → Pki: ca.crt, ca.key, controller.crt, controller.key, made once and reused

The CA exists only to let the CLI and the agents verify the lab controller; it
signs nothing but that one server certificate (its path length is 0). Keys are
ECDSA P-256.

Invariants:
- Private keys are written 0600, and every file is written to a temporary
  name and renamed, so an interrupted `lab up` never leaves half a key or a
  certificate without its key.
- A file set is reused only while it still holds: the controller certificate
  verifies against the CA, names 127.0.0.1, localhost and the controller's fabric
  addresses, and neither expires
  within RENEW_BEFORE. Otherwise what no longer holds is made again (a new CA
  also means a new controller certificate) and `Pki.changed` says so, so the
  caller restarts the controller with the new files.
- Nothing here logs or prints a key.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stockade.clock import utc_now
from stockade.lab import naming
from stockade.private_files import write_private

CA_VALIDITY = dt.timedelta(days=365)
CERT_VALIDITY = dt.timedelta(days=30)
RENEW_BEFORE = dt.timedelta(days=2)  # a lab brought up again this close to expiry gets fresh files
CLOCK_SKEW = dt.timedelta(minutes=5)  # not_before is back-dated by this much
# The CLI reaches the controller on 127.0.0.1, the agents on its fabric address.
SERVER_IPS = (ipaddress.IPv4Address("127.0.0.1"),
              *(ipaddress.ip_address(a) for i in range(1, naming.MAX_CONTROLLERS + 1)
                for a in naming.controller_addresses(i)))
SERVER_DNS = ("localhost",)


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path
    changed: bool  # True when this call made any file, i.e. a running controller has stale ones


def paths(directory: Path) -> tuple[Path, Path, Path, Path]:
    d = Path(directory)
    return d / "ca.crt", d / "ca.key", d / "controller.crt", d / "controller.key"


def ensure_pki(directory: Path, now: dt.datetime | None = None) -> Pki:
    """Make (or reuse) the lab CA and the controller certificate in `directory`."""
    now = now or utc_now()
    ca_cert_path, ca_key_path, cert_path, key_path = paths(directory)
    changed = False

    ca = _load_pair(ca_cert_path, ca_key_path)
    if ca is None or not _fresh(ca[0], now):
        ca = _make_ca(now)
        write_private(ca_key_path, _key_pem(ca[1]), 0o600)
        write_private(ca_cert_path, ca[0].public_bytes(serialization.Encoding.PEM), 0o644)
        changed = True

    server = _load_pair(cert_path, key_path)
    if changed or server is None or not _fresh(server[0], now) or not _issued_by(server[0], ca[0]) \
            or not _names_ok(server[0]):
        cert, key = _make_server_cert(ca[0], ca[1], now)
        write_private(key_path, _key_pem(key), 0o600)
        write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        changed = True
    return Pki(ca_cert_path, ca_key_path, cert_path, key_path, changed)


# ------------------------------------------------------------------ checks

def _load_pair(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """The certificate and its key, or None when either is missing, damaged or they do not match."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        return None
    return cert, key


def _fresh(cert: x509.Certificate, now: dt.datetime) -> bool:
    return cert.not_valid_before_utc <= now and now + RENEW_BEFORE < cert.not_valid_after_utc


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _names_ok(cert: x509.Certificate) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return (set(SERVER_IPS) <= set(san.get_values_for_type(x509.IPAddress))
            and set(SERVER_DNS) <= set(san.get_values_for_type(x509.DNSName)))


# ------------------------------------------------------------------- making

def _make_ca(now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Stockade lab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "Stockade lab CA")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _make_server_cert(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
                      now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in SERVER_DNS]
    names += [x509.IPAddress(ip) for ip in SERVER_IPS]
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    not_after = min(now + CERT_VALIDITY, ca_cert.not_valid_after_utc)  # never outlive its CA
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Stockade lab"),
                                     x509.NameAttribute(NameOID.COMMON_NAME, "stockade-controller")]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


