"""The token repository: tokens made through the API (SHA-256 hashes only) and revocations.

`controller.auth.TokenAuthority` checks bearer tokens against this and the tokens file;
it is the only writer. A plaintext token never reaches this module.

Invariants: a revocation is by hash and covers tokens of the tokens file too (which this
repository does not hold); a token, once revoked, stays revoked.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any, Iterable, Protocol, Sequence

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


TOKEN_COLUMNS = "id, sha256, name, role, namespaces, host, created, created_by, expires, revoked"


def token_row(token: StoredToken) -> tuple[Any, ...]:
    """`token` as a row of the tokens table (TOKEN_COLUMNS)."""
    return (token.id, token.sha256, token.name, token.role, json.dumps(list(token.namespaces)), token.host,
            token.created, token.created_by, token.expires, token.revoked)


def token_from_row(row: Sequence[Any]) -> StoredToken:
    return StoredToken(row[0], row[1], row[2], row[3], tuple(json.loads(row[4])), row[5], row[6], row[7], row[8],
                       row[9])


def insert_tokens(conn: sqlite3.Connection, tokens: Iterable[StoredToken]) -> None:
    conn.executemany(f"INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     [token_row(t) for t in tokens])


def token_rows(conn: sqlite3.Connection) -> list[StoredToken]:
    """Every stored token, by creation time."""
    return [token_from_row(r) for r in conn.execute(f"SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created, id")]


class SqliteTokens:
    """Tokens in the revisions' database file (`SqliteFile`, which it does not own)."""

    def __init__(self, db: SqliteFile) -> None:
        self._db = db

    def add(self, token: StoredToken) -> None:
        with self._db.write() as conn:
            insert_tokens(conn, (token,))

    def all(self) -> list[StoredToken]:
        with self._db.read() as conn:
            return token_rows(conn)

    def revoke_hash(self, sha256: str, when: str) -> None:
        with self._db.write() as conn:
            conn.execute("UPDATE tokens SET revoked = ? WHERE sha256 = ? AND revoked IS NULL", (when, sha256))
            conn.execute("INSERT INTO revoked_hashes (sha256, revoked) VALUES (?, ?) "
                         "ON CONFLICT (sha256) DO NOTHING", (sha256, when))

    def revoked_hashes(self) -> set[str]:
        with self._db.read() as conn:
            return {r[0] for r in conn.execute("SELECT sha256 FROM revoked_hashes")}
