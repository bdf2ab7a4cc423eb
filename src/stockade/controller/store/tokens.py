"""The token repository: tokens made through the API (SHA-256 hashes only) and revocations.

`controller.auth.TokenAuthority` checks bearer tokens against this and the tokens file;
it is the only writer. A plaintext token never reaches this module.

Invariants: a revocation is by hash and covers tokens of the tokens file too (which this
repository does not hold); a token, once revoked, stays revoked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from stockade.controller.store.sqlite_file import SqliteFile


@dataclass(frozen=True)
class StoredToken:
    """A token made through the API (hash only). `namespaces` is empty for roles without a scope."""

    id: str
    sha256: str
    name: str
    role: str
    namespaces: tuple[str, ...]
    host: str | None
    created: str
    created_by: str
    expires: str | None
    revoked: str | None


class TokenRepository(Protocol):
    def add(self, token: StoredToken) -> None: ...

    def all(self) -> list[StoredToken]:
        """Every API token, by creation time."""
        ...

    def revoke_hash(self, sha256: str, when: str) -> None:
        """Revoke by hash, whether the token was made through the API or comes from the tokens file."""
        ...

    def revoked_hashes(self) -> set[str]: ...


class SqliteTokens:
    """Tokens in the revisions' database file (`SqliteFile`, which it does not own)."""

    def __init__(self, db: SqliteFile) -> None:
        self._db = db

    def add(self, token: StoredToken) -> None:
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO tokens (id, sha256, name, role, namespaces, host, created, created_by, expires, "
                "revoked) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (token.id, token.sha256, token.name, token.role, json.dumps(list(token.namespaces)),
                 token.host, token.created, token.created_by, token.expires, token.revoked))

    def all(self) -> list[StoredToken]:
        with self._db.read() as conn:
            rows = conn.execute("SELECT id, sha256, name, role, namespaces, host, created, created_by, expires, "
                                "revoked FROM tokens ORDER BY created, id").fetchall()
        return [StoredToken(r[0], r[1], r[2], r[3], tuple(json.loads(r[4])), r[5], r[6], r[7], r[8], r[9])
                for r in rows]

    def revoke_hash(self, sha256: str, when: str) -> None:
        with self._db.write() as conn:
            conn.execute("UPDATE tokens SET revoked = ? WHERE sha256 = ? AND revoked IS NULL", (when, sha256))
            conn.execute("INSERT INTO revoked_hashes (sha256, revoked) VALUES (?, ?) "
                         "ON CONFLICT (sha256) DO NOTHING", (sha256, when))

    def revoked_hashes(self) -> set[str]:
        with self._db.read() as conn:
            return {r[0] for r in conn.execute("SELECT sha256 FROM revoked_hashes")}
