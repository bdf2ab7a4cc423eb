"""Bearer tokens: who is calling, and may they do this.

The tokens file is JSON, a list of `{"name", "role", "sha256"[, "host"]}`. Only
SHA-256 hashes are stored; a plaintext token exists once, when it is created,
and is never written to disk or to a log.

Roles:
- `admin`: everything.
- `agent`: read desired state (objects, snapshot, watch) and report the status of
  its own host (`host`, or its `name` when no host is given); nothing else.

Unknown or missing token → `Unauthorized` (401); known token, wrong right → `Forbidden` (403).
(Fuller RBAC and the audit log come later; this module stays the one place that decides.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import tempfile
import threading
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Iterable, Mapping

from stockade.errors import Forbidden, Unauthorized

log = logging.getLogger(__name__)

TOKEN_PREFIX = "stk_"


class Permission(Enum):
    READ = "read desired state and status"          # objects, snapshot, watch, status, revisions
    WRITE = "change objects (apply, delete)"
    REPORT = "report an agent's status"


ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "admin": frozenset(Permission),
    "agent": frozenset({Permission.READ, Permission.REPORT}),
}
ROLES: tuple[str, ...] = tuple(ROLE_PERMISSIONS)


@dataclass(frozen=True)
class TokenEntry:
    name: str
    role: str
    sha256: str
    host: str | None = None

    def to_dict(self) -> dict[str, str]:
        out = {"name": self.name, "role": self.role, "sha256": self.sha256}
        if self.host is not None:
            out["host"] = self.host
        return out


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. `host` is the one host an agent may report for (None: any)."""

    name: str
    role: str
    host: str | None = None

    def require(self, permission: Permission, host: str | None = None) -> None:
        """Raise Forbidden unless this caller has `permission` (for `host`, when reporting)."""
        if permission not in ROLE_PERMISSIONS.get(self.role, frozenset()):
            raise Forbidden(f"{self.name!r} (role {self.role}) may not {permission.value}")
        if host is not None and self.host is not None and host != self.host:
            raise Forbidden(f"{self.name!r} may only report for host {self.host!r}, not {host!r}")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _entry_from(raw: Any, where: str) -> TokenEntry:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: must be an object with name, role and sha256")
    name, role, digest = raw.get("name"), raw.get("role"), raw.get("sha256")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}.name: must be a non-empty string")
    if role not in ROLE_PERMISSIONS:
        raise ValueError(f"{where}.role: {role!r} is not one of {', '.join(ROLES)}")
    if not isinstance(digest, str) or len(digest) != 64:
        raise ValueError(f"{where}.sha256: must be a hex SHA-256 digest")
    host = raw.get("host")
    if host is not None and not isinstance(host, str):
        raise ValueError(f"{where}.host: must be a string")
    return TokenEntry(name, role, digest.lower(), host)


def read_token_file(path: Path) -> list[TokenEntry]:
    raw = json.loads(Path(path).read_text())
    if isinstance(raw, Mapping):  # also accept {"tokens": [...]}
        raw = raw.get("tokens", [])
    if not isinstance(raw, list):
        raise ValueError(f"{path}: must hold a JSON list of tokens")
    return [_entry_from(item, f"{path}[{i}]") for i, item in enumerate(raw)]


def write_token_file(path: Path, entries: Iterable[TokenEntry]) -> None:
    """Replace the file atomically (readers never see half of it), readable by its owner only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump([e.to_dict() for e in entries], f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def create_token_file(path: Path | str, entries: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """Write a new tokens file for `entries` ({name, role[, host]}); return {name: plaintext token}."""
    tokens: dict[str, str] = {}
    stored: list[TokenEntry] = []
    for i, e in enumerate(entries):
        token = new_token()
        entry = _entry_from({**e, "sha256": hash_token(token)}, f"entries[{i}]")
        if entry.name in tokens:
            raise ValueError(f"entries[{i}].name: {entry.name!r} appears twice")
        tokens[entry.name] = token
        stored.append(entry)
    write_token_file(Path(path), stored)
    return tokens


def add_token(path: Path | str, name: str, role: str, host: str | None = None) -> str:
    """Add one token to the file (created if absent); return its plaintext. Names are unique."""
    path = Path(path)
    entries = read_token_file(path) if path.exists() else []
    if any(e.name == name for e in entries):
        raise ValueError(f"a token named {name!r} already exists")
    token = new_token()
    entries.append(_entry_from({"name": name, "role": role, "sha256": hash_token(token),
                                **({"host": host} if host else {})}, "token"))
    write_token_file(path, entries)
    return token


class TokenAuthority:
    """Checks bearer tokens against the tokens file, re-reading it when it changes on disk."""

    def __init__(self, path: Path | str | None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._by_hash: dict[str, TokenEntry] = {}
        if self.path is not None:
            self._reload(strict=True)

    def _reload(self, strict: bool = False) -> None:
        assert self.path is not None
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return
            entries = read_token_file(self.path)
        except (OSError, ValueError) as e:
            if strict:
                raise
            # Keep the tokens we had: a broken edit must not lock every agent out.
            log.warning("tokens file %s unreadable, keeping the previous tokens: %s", self.path, e)
            return
        self._by_hash = {e.sha256: e for e in entries}
        self._stamp = stamp

    def authenticate(self, token: str | None) -> Principal:
        """The caller of `token`, or Unauthorized. The token itself is never logged."""
        if not token:
            raise Unauthorized("a bearer token is required (Authorization: Bearer TOKEN)")
        if self.path is None:
            raise Unauthorized("this controller has no tokens file; no token is valid")
        with self._lock:
            self._reload()
            entry = self._by_hash.get(hash_token(token))
        if entry is None:
            raise Unauthorized("the bearer token is not valid")
        host = entry.host if entry.host is not None else (entry.name if entry.role == "agent" else None)
        return Principal(entry.name, entry.role, host)
