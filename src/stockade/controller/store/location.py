"""Where the controller's store is: `--store sqlite:PATH` or `--store etcd://HOST:PORT[,HOST:PORT...]`.

Parsing only (no I/O): `parse_store` turns the option's text and the `--etcd-ca/-cert/-key`
files into a `SqliteLocation` or an `EtcdLocation`; `store.open_store` opens it. Every
error is a ValueError whose message names the option, for the CLI to print as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stockade.controller.store.etcd_layout import DEFAULT_PREFIX

FORMS = "sqlite:PATH or etcd://HOST:PORT[,HOST:PORT...][/PREFIX/]"


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for TLS to etcd: the CA that signed the members' certificates, and this
    controller's client certificate and key (etcd's `--client-cert-auth`), each optional."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class SqliteLocation:
    path: Path


@dataclass(frozen=True)
class EtcdLocation:
    """The members to reach (any one will do), TLS to them (None: plain HTTP), the key prefix."""

    endpoints: tuple[Endpoint, ...]
    tls: TlsFiles | None = None
    prefix: str = DEFAULT_PREFIX


StoreLocation = SqliteLocation | EtcdLocation


def parse_store(text: str, ca: Path | str | None = None, cert: Path | str | None = None,
                key: Path | str | None = None) -> StoreLocation:
    """The store `--store TEXT` names; `ca`/`cert`/`key` (`--etcd-ca/--etcd-cert/--etcd-key`)
    turn on TLS to etcd and are refused with a SQLite store."""
    etcd_files = {"--etcd-ca": ca, "--etcd-cert": cert, "--etcd-key": key}
    given = [name for name, value in etcd_files.items() if value]
    if text.startswith("sqlite:"):
        path = text[len("sqlite:"):]
        if not path:
            raise ValueError(f"--store {text!r}: no database path after 'sqlite:' (expected {FORMS})")
        if given:
            raise ValueError(f"{', '.join(given)} are for an etcd store, not for --store {text!r}")
        return SqliteLocation(Path(path))
    if text.startswith("etcd://"):
        return EtcdLocation(_endpoints(text), _tls(text, ca, cert, key) if given else None, _prefix(text))
    raise ValueError(f"--store {text!r}: expected {FORMS}")


def _endpoints(text: str) -> tuple[Endpoint, ...]:
    hosts = text[len("etcd://"):].split("/", 1)[0]
    endpoints = []
    for part in hosts.split(","):
        part = part.strip()
        host, sep, port = part.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--store {text!r}: {part!r} is not HOST:PORT (expected {FORMS})")
        endpoints.append(Endpoint(host, int(port)))
    return tuple(endpoints)


def _prefix(text: str) -> str:
    _, slash, path = text[len("etcd://"):].partition("/")
    if not slash or not path:
        return DEFAULT_PREFIX
    prefix = "/" + path.strip("/") + "/"
    if "//" in prefix:
        raise ValueError(f"--store {text!r}: the key prefix {prefix!r} has an empty part")
    return prefix


def _tls(text: str, ca: Path | str | None, cert: Path | str | None, key: Path | str | None) -> TlsFiles:
    if bool(cert) != bool(key):
        raise ValueError(f"--store {text!r}: --etcd-cert and --etcd-key go together (a client certificate "
                         "and its key)")
    return TlsFiles(str(ca) if ca else None, str(cert) if cert else None, str(key) if key else None)
