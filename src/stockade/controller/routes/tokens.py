"""Token routes: create, list, revoke (admins only); `controller.token_admin` does the work."""

from typing import Any

from fastapi import APIRouter, Request

from stockade.controller.routes.deps import API, ERROR_RESPONSES, TokenAdmin, write_audit
from stockade.controller.schemas import TokenCreated, TokenCreateRequest, TokensResponse
from stockade.controller.token_admin import TokenUseCases


def router(tokens: TokenUseCases) -> APIRouter:
    r = APIRouter(tags=["tokens"])

    @r.post(f"{API}/tokens", response_model=TokenCreated, responses=ERROR_RESPONSES)
    def create_token(body: TokenCreateRequest, principal: TokenAdmin, request: Request) -> dict[str, Any]:
        """Make a token; the secret is in this answer only. Admins only."""
        secret, info = tokens.create(principal, write_audit(request, principal, "token.create"), body.role,
                                     body.namespaces, body.ttl, body.name, body.host)
        return {"token": secret, "info": info}

    @r.get(f"{API}/tokens", response_model=TokensResponse, responses=ERROR_RESPONSES)
    def list_tokens(_: TokenAdmin) -> dict[str, Any]:
        """Every known token (file and API) without its secret or hash."""
        return {"tokens": tokens.describe_all()}

    @r.delete(f"{API}/tokens/{{ref}}", response_model=TokensResponse, responses=ERROR_RESPONSES)
    def revoke_token(ref: str, principal: TokenAdmin, request: Request) -> dict[str, Any]:
        """Revoke a token by id, unique name, or the token itself; it is refused from the next request
        on. (The CLI sends a token's id, never the token: a path ends up in access logs.)"""
        return {"tokens": [tokens.revoke(ref, write_audit(request, principal, "token.revoke"))]}

    return r
