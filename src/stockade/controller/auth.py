"""Bearer tokens: who is calling. (What they may do is `controller.rbac`.)

Tokens come from two places, checked the same way:
- the tokens file (JSON list of `{"name", "role", "sha256"[, "host"][, "namespaces"][, "expires"]}`),
  written by `lab up` or an operator to bootstrap the first admin and the agents;
  re-read when it changes on disk;
- the token repository (`store.tokens`), for tokens made through the API (`stockade token create`).
Only SHA-256 hashes are kept anywhere; a plaintext token exists once, when it is
created, and is never written to disk or to a log. A token's public `id` is the
first 12 hex digits of its hash: enough to name it in `token list`, `revoke` and
the audit log, useless for guessing it.

Revocation is by hash and applies to both sources; expiry is checked on every request.
Unknown, expired or revoked token → `Unauthorized` (401).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from stockade.controller.store.tokens import StoredToken, TokenRepository
from stockade.clock import utc_now
from stockade.durations import HINT as DURATION_HINT
from stockade.durations import parse_duration
from stockade.errors import NotFoundError, Unauthorized, ValidationError

log = logging.getLogger(__name__)

TOKEN_PREFIX = "stk_"
ROLES: tuple[str, ...] = ("admin", "network-admin", "tenant", "viewer", "agent")
ID_LENGTH = 12
MAX_TTL = timedelta(days=3650)

Clock = Callable[[], datetime]


_utc_now = utc_now  # the default clock (stockade.clock)


@dataclass(frozen=True)
class TokenEntry:
    """One known token, from either source, without its secret."""

    name: str
    role: str
    sha256: str
    host: str | None = None
    namespaces: tuple[str, ...] = ()
    expires: datetime | None = None
    source: str = "file"                 # "file" or "api"
    created: str | None = None
    created_by: str | None = None
    revoked: str | None = None

    @property
    def id(self) -> str:
        return self.sha256[:ID_LENGTH]

    def to_file_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "role": self.role, "sha256": self.sha256}
        if self.host is not None:
            out["host"] = self.host
        if self.namespaces:
            out["namespaces"] = list(self.namespaces)
        if self.expires is not None:
            out["expires"] = self.expires.isoformat()
        return out

    def describe(self, now: datetime) -> dict[str, Any]:
        """The public view for `token list`: everything but the hash."""
        return {"id": self.id, "name": self.name, "role": self.role, "host": self.host,
                "namespaces": list(self.namespaces), "source": self.source, "created": self.created,
                "createdBy": self.created_by,
                "expires": self.expires.isoformat(timespec="seconds") if self.expires else None,
                "expired": bool(self.expires and self.expires <= now), "revoked": self.revoked}


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the token's name and role, and its scope.

    `host` is the one host an agent may report for; `namespaces` the namespaces a tenant owns.
    """

    name: str
    role: str
    host: str | None = None
    namespaces: frozenset[str] = field(default_factory=frozenset)
    token_id: str = ""

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "role": self.role, "tokenId": self.token_id}
        if self.namespaces:
            out["namespaces"] = sorted(self.namespaces)
        if self.host:
            out["host"] = self.host
        return out


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def parse_ttl(text: str) -> timedelta:
    """`90s`, `30m`, `12h`, `7d`, `2w` (stockade.durations) → a positive timedelta of at most ten years."""
    try:
        ttl = parse_duration(text, whole=True)
    except ValueError:
        ttl = timedelta(0)
    if ttl <= timedelta(0):
        raise ValidationError.single("token", "ttl", f"{text!r} is not {DURATION_HINT}")
    if ttl > MAX_TTL:
        raise ValidationError.single("token", "ttl", f"{text!r} is longer than ten years")
    return ttl


def _check_scope(where: str, role: str, host: str | None, namespaces: Iterable[str]) -> None:
    """Raise ValueError unless role, host and namespaces fit together."""
    namespaces = list(namespaces)
    if role not in ROLES:
        raise ValueError(f"{where}.role: {role!r} is not one of {', '.join(ROLES)}")
    if role == "tenant" and not namespaces:
        raise ValueError(f"{where}.namespaces: a tenant token needs at least one namespace")
    if role != "tenant" and namespaces:
        raise ValueError(f"{where}.namespaces: only tenant tokens are scoped to namespaces")
    if host is not None and role != "agent":
        raise ValueError(f"{where}.host: only agent tokens are bound to a host")


def entry_from(raw: Any, where: str) -> TokenEntry:
    """One tokens-file entry from its JSON form; ValueError naming `where` and the field."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: must be an object with name, role and sha256")
    name, role, digest = raw.get("name"), raw.get("role"), raw.get("sha256")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}.name: must be a non-empty string")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
        raise ValueError(f"{where}.sha256: must be a hex SHA-256 digest")
    host = raw.get("host")
    if host is not None and not isinstance(host, str):
        raise ValueError(f"{where}.host: must be a string")
    namespaces = raw.get("namespaces") or []
    if not isinstance(namespaces, list) or not all(isinstance(n, str) and n for n in namespaces):
        raise ValueError(f"{where}.namespaces: must be a list of namespace names")
    _check_scope(where, str(role), host, namespaces)
    expires = raw.get("expires")
    when: datetime | None = None
    if expires is not None:
        try:
            when = datetime.fromisoformat(str(expires))
        except ValueError:
            raise ValueError(f"{where}.expires: {expires!r} is not an ISO 8601 time") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
    return TokenEntry(name, str(role), digest.lower(), host, tuple(namespaces), when)


def read_token_file(path: Path) -> list[TokenEntry]:
    raw = json.loads(Path(path).read_text())
    if isinstance(raw, Mapping):  # also accept {"tokens": [...]}
        raw = raw.get("tokens", [])
    if not isinstance(raw, list):
        raise ValueError(f"{path}: must hold a JSON list of tokens")
    return [entry_from(item, f"{path}[{i}]") for i, item in enumerate(raw)]


def write_token_file(path: Path, entries: Iterable[TokenEntry]) -> None:
    """Replace the file atomically (readers never see half of it), readable by its owner only.

    `mkstemp` creates the temporary file with O_CREAT|O_EXCL and mode 0600, so there is no
    moment at which it is readable by anyone else, whatever the umask; the rename keeps that mode.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump([e.to_file_dict() for e in entries], f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def create_token_file(path: Path | str, entries: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Write a new tokens file for `entries` ({name, role[, host][, namespaces]}); return {name: plaintext}."""
    tokens: dict[str, str] = {}
    stored: list[TokenEntry] = []
    for i, e in enumerate(entries):
        token = new_token()
        entry = entry_from({**e, "sha256": hash_token(token)}, f"entries[{i}]")
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
    entries.append(entry_from({"name": name, "role": role, "sha256": hash_token(token),
                                **({"host": host} if host else {})}, "token"))
    write_token_file(path, entries)
    return token


class TokenAuthority:
    """Checks bearer tokens against the tokens file and the token repository; makes and revokes
    API tokens.

    Only this process writes the repository, so its cache is refreshed
    by our own writes; the file is re-read when its mtime or size changes.
    """

    def __init__(self, path: Path | str | None, repository: TokenRepository | None = None,
                 clock: Clock = _utc_now) -> None:
        self.path = Path(path) if path is not None else None
        self.repository = repository
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._file: dict[str, TokenEntry] = {}
        self._api: dict[str, TokenEntry] = {}
        self._revoked: set[str] = set()
        if self.path is not None:
            self._reload_file(strict=True)
        self._reload_store()

    # ------------------------------------------------------------ loading

    def _reload_file(self, strict: bool = False) -> None:
        if self.path is None:
            return
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
        self._file = {e.sha256: e for e in entries}
        self._stamp = stamp

    def _reload_store(self) -> None:
        if self.repository is None:
            return
        self._api = {t.sha256: _entry_of_stored(t) for t in self.repository.all()}
        self._revoked = self.repository.revoked_hashes()

    # ------------------------------------------------------- authentication

    def authenticate(self, token: str | None) -> Principal:
        """The caller of `token`, or Unauthorized. The token itself is never logged."""
        if not token:
            raise Unauthorized("a bearer token is required (Authorization: Bearer TOKEN)")
        digest = hash_token(token)
        with self._lock:
            self._reload_file()
            entry = self._api.get(digest) or self._file.get(digest)
            revoked = digest in self._revoked
        if entry is None:
            raise Unauthorized("the bearer token is not valid")
        if revoked or entry.revoked:
            raise Unauthorized(f"the bearer token {entry.id} has been revoked")
        if entry.expires is not None and entry.expires <= self._clock():
            raise Unauthorized(f"the bearer token {entry.id} expired at {entry.expires.isoformat(timespec='seconds')}")
        host = entry.host if entry.host is not None else (entry.name if entry.role == "agent" else None)
        return Principal(entry.name, entry.role, host, frozenset(entry.namespaces), entry.id)

    # ----------------------------------------------------------- management

    def entries(self) -> list[TokenEntry]:
        with self._lock:
            self._reload_file()
            out = [e if e.sha256 not in self._revoked else _revoked_copy(e, "yes")
                   for e in (*self._file.values(), *self._api.values())]
        return sorted(out, key=lambda e: (e.source, e.name, e.id))

    def describe_all(self) -> list[dict[str, Any]]:
        now = self._clock()
        return [e.describe(now) for e in self.entries()]

    def create(self, creator: str, role: str, namespaces: Iterable[str] = (), ttl: timedelta | None = None,
               name: str | None = None, host: str | None = None) -> tuple[TokenEntry, str]:
        """Make an API token; return its entry and the plaintext, which is not kept anywhere."""
        if self.repository is None:
            raise ValidationError.single("token", "store", "this controller keeps no API tokens")
        namespaces = tuple(sorted(set(namespaces)))
        try:
            _check_scope("token", role, host, namespaces)
        except ValueError as e:
            where, _, problem = str(e).partition(": ")
            raise ValidationError.single("token", where.removeprefix("token."), problem) from None
        if role == "agent" and not host:
            raise ValidationError.single("token", "host", "an agent token is bound to one host; give --host")
        token = new_token()
        now = self._clock()
        stored = StoredToken(
            id=hash_token(token)[:ID_LENGTH], sha256=hash_token(token),
            name=name or f"{role}-{secrets.token_hex(3)}", role=role, namespaces=namespaces, host=host,
            created=now.isoformat(timespec="seconds"), created_by=creator,
            expires=(now + ttl).isoformat(timespec="seconds") if ttl else None, revoked=None)
        with self._lock:
            self.repository.add(stored)
            self._reload_store()
        return _entry_of_stored(stored), token

    def revoke(self, ref: str) -> TokenEntry:
        """Revoke the token with this id, unique name, or the token itself (what a person holding
        a leaked token has in hand); NotFound or Validation (ambiguous) otherwise. A token given
        here is only hashed: it is never echoed in an error."""
        if self.repository is None:
            raise ValidationError.single("token", "store", "this controller keeps no revocations")
        if ref.startswith(TOKEN_PREFIX):
            digest = hash_token(ref)
            matches = [e for e in self.entries() if e.sha256 == digest]
            if not matches:
                raise NotFoundError("the token given is not known here (nothing revoked)")
        else:
            matches = ([e for e in self.entries() if e.id == ref.lower()]
                       or [e for e in self.entries() if e.name == ref])
        if not matches:
            raise NotFoundError(f"token {ref!r} not found (give its id from `stockade token list`, or the token)")
        if len(matches) > 1:
            ids = ", ".join(e.id for e in matches)
            raise ValidationError.single(f"token {ref}", "name", f"names {len(matches)} tokens ({ids}); give the id")
        entry = matches[0]
        with self._lock:
            self.repository.revoke_hash(entry.sha256, self._clock().isoformat(timespec="seconds"))
            self._reload_store()
        return entry


def _entry_of_stored(t: StoredToken) -> TokenEntry:
    return TokenEntry(t.name, t.role, t.sha256, t.host, t.namespaces,
                      datetime.fromisoformat(t.expires) if t.expires else None, "api", t.created,
                      t.created_by, t.revoked)


def _revoked_copy(e: TokenEntry, when: str) -> TokenEntry:
    return TokenEntry(e.name, e.role, e.sha256, e.host, e.namespaces, e.expires, e.source, e.created,
                      e.created_by, e.revoked or when)
