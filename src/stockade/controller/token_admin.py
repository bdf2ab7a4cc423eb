"""Token use cases: make, list and revoke API tokens, each write audited once it is stored.

`auth.TokenAuthority` keeps and checks the tokens; this adds what a request to change them
means: the caller becomes the creator, and the audit entry (without any secret) is stored
before the answer leaves (`AuditLog.record_now`). Only admins get here (`rbac`, by the route's
permission).
"""

from __future__ import annotations

from typing import Any, Sequence

from stockade.controller.audit import AuditEntry, AuditLog, WriteAudit
from stockade.controller.auth import Principal, TokenAuthority, parse_ttl

_SHOWN_ON_CREATE = ("id", "name", "role", "namespaces", "host", "expires")


class TokenUseCases:
    def __init__(self, tokens: TokenAuthority, audit: AuditLog) -> None:
        self._tokens = tokens
        self._audit = audit

    def create(self, principal: Principal, request: WriteAudit, role: str, namespaces: Sequence[str],
               ttl: str | None, name: str | None, host: str | None) -> tuple[str, dict[str, Any]]:
        """(the new token's secret, its public description); the secret is not kept anywhere."""
        entry, secret = self._tokens.create(principal.name, role, namespaces, parse_ttl(ttl) if ttl else None,
                                            name, host)
        info = self._described(entry.id)
        self._record(request, {k: v for k, v in info.items() if k in _SHOWN_ON_CREATE})
        return secret, info

    def describe_all(self) -> list[dict[str, Any]]:
        """Every known token (file and API) without its secret or hash."""
        return self._tokens.describe_all()

    def revoke(self, ref: str, request: WriteAudit) -> dict[str, Any]:
        """Revoke by id, unique name or the token itself; the revoked token's description."""
        entry = self._tokens.revoke(ref)
        info = self._described(entry.id)
        self._record(request, {"id": entry.id, "name": entry.name})
        return info

    def _described(self, token_id: str) -> dict[str, Any]:
        return next(d for d in self._tokens.describe_all() if d["id"] == token_id)

    def _record(self, request: WriteAudit, detail: dict[str, Any]) -> None:
        self._audit.record_now(AuditEntry(action=request.action, outcome="ok", status=200, method=request.method,
                                          path=request.path, client=request.client, actor=request.actor,
                                          detail=detail))
