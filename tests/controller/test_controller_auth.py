"""Bearer tokens: stored only as hashes, checked per role, re-read when the file changes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stockade.controller.auth import (
    TokenAuthority,
    add_token,
    create_token_file,
    hash_token,
)
from stockade.controller.rbac import Permission, require
from stockade.errors import Forbidden, Unauthorized


def test_token_file_holds_hashes_never_plaintext(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    tokens = create_token_file(path, [{"name": "alice", "role": "admin"},
                                      {"name": "agent-hv1", "role": "agent", "host": "hv1"}])
    text = path.read_text()
    for token in tokens.values():
        assert token not in text
        assert hash_token(token) in text
    assert json.loads(text)[1] == {"name": "agent-hv1", "role": "agent", "sha256": hash_token(tokens["agent-hv1"]),
                                   "host": "hv1"}
    assert os.stat(path).st_mode & 0o077 == 0
    assert len(set(tokens.values())) == 2


def test_roles_decide_what_a_caller_may_do(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    tokens = create_token_file(path, [{"name": "alice", "role": "admin"},
                                      {"name": "agent-hv1", "role": "agent", "host": "hv1"}])
    authority = TokenAuthority(path)
    alice = authority.authenticate(tokens["alice"])
    for permission in Permission:
        require(alice, permission, host="any-host")
    agent = authority.authenticate(tokens["agent-hv1"])
    require(agent, Permission.READ_STATE)
    require(agent, Permission.REPORT, host="hv1")
    with pytest.raises(Forbidden):
        require(agent, Permission.WRITE_OBJECTS)
    with pytest.raises(Forbidden):
        require(agent, Permission.READ_AUDIT)
    with pytest.raises(Forbidden):
        require(agent, Permission.REPORT, host="hv2")


def test_missing_or_unknown_tokens_are_unauthorized(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    create_token_file(path, [{"name": "alice", "role": "admin"}])
    authority = TokenAuthority(path)
    for token in (None, "", "stk_nope"):
        with pytest.raises(Unauthorized):
            authority.authenticate(token)
    with pytest.raises(Unauthorized):
        TokenAuthority(None).authenticate("anything")


def test_tokens_added_later_are_accepted_without_restart(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    create_token_file(path, [{"name": "alice", "role": "admin"}])
    authority = TokenAuthority(path)
    bob = add_token(path, "bob", "agent")
    assert authority.authenticate(bob).name == "bob"
    assert authority.authenticate(bob).host == "bob"  # an agent without a host reports for its name
    with pytest.raises(ValueError):
        add_token(path, "bob", "admin")


def test_unknown_role_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        create_token_file(tmp_path / "t.json", [{"name": "eve", "role": "root"}])
