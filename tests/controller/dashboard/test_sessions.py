"""Dashboard sessions (pure): a handle on a token that is authenticated again on every use."""

from __future__ import annotations

import pytest

from stockade.controller.auth import Principal
from stockade.controller.dashboard.sessions import DashboardSessions, cookie_name, cookie_value
from stockade.errors import Forbidden, Unauthorized


class Tokens:
    def __init__(self) -> None:
        self.valid = {"good": Principal("alice", "admin"), "other": Principal("bob", "viewer"),
                      "host": Principal("agent-hv1", "agent", "hv1")}

    def authenticate(self, token: str | None) -> Principal:
        if token not in self.valid:
            raise Unauthorized("the bearer token is not valid")
        return self.valid[token]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_opens_only_for_a_valid_token_and_its_id_is_not_the_token() -> None:
    sessions = DashboardSessions(Tokens().authenticate)
    with pytest.raises(Unauthorized):
        sessions.open("bad")
    session, principal = sessions.open("good")
    assert principal.name == "alice"
    assert "good" not in session.id and len(session.id) >= 40 and session.csrf != session.id
    assert "good" not in repr(session)


def test_revoking_the_token_ends_its_sessions_at_the_next_request() -> None:
    tokens = Tokens()
    sessions = DashboardSessions(tokens.authenticate)
    session, _ = sessions.open("good")
    assert sessions.resolve(session.id)[1].name == "alice"
    del tokens.valid["good"]
    with pytest.raises(Unauthorized):
        sessions.resolve(session.id)
    assert len(sessions) == 0


def test_idle_and_absolute_timeouts_end_a_session() -> None:
    clock = Clock()
    sessions = DashboardSessions(Tokens().authenticate, idle=60, absolute=300, clock=clock)
    session, _ = sessions.open("good")
    for _ in range(5):  # used every 50 s: never idle, but 300 s after opening it ends anyway
        clock.now += 50
        sessions.resolve(session.id)
    clock.now += 51
    with pytest.raises(Unauthorized):
        sessions.resolve(session.id)
    other, _ = sessions.open("good")
    clock.now += 61
    with pytest.raises(Unauthorized):
        sessions.resolve(other.id)


def test_capacity_closes_the_least_recently_used_session() -> None:
    sessions = DashboardSessions(Tokens().authenticate, capacity=2)
    first, _ = sessions.open("good")
    second, _ = sessions.open("good")
    sessions.resolve(first.id)  # first is now the most recently used
    sessions.open("good")
    sessions.resolve(first.id)
    with pytest.raises(Unauthorized):
        sessions.resolve(second.id)


def test_csrf_must_match_exactly() -> None:
    session, _ = DashboardSessions(Tokens().authenticate).open("good")
    assert session.csrf_matches(session.csrf)
    assert not session.csrf_matches(None) and not session.csrf_matches("") and not session.csrf_matches(session.id)


def test_cookie_value_reads_one_cookie_of_many() -> None:
    assert cookie_value("a=1; stockade_session=abc; b=2", "stockade_session") == "abc"
    assert cookie_value("xstockade_session=abc", "stockade_session") is None
    assert cookie_value("", "stockade_session") is None
    # Over HTTPS only the __Host- cookie is a session: a plain one may come from a sibling host.
    assert cookie_name("https") == "__Host-stockade_session" and cookie_name("http") == "stockade_session"
    assert cookie_value("stockade_session=planted", cookie_name("https")) is None


def test_one_token_logging_in_again_and_again_closes_only_its_own_older_sessions() -> None:
    sessions = DashboardSessions(Tokens().authenticate, capacity=100, per_token=3)
    bob, _ = sessions.open("other")
    alice = [sessions.open("good")[0] for _ in range(50)]
    assert sessions.resolve(bob.id)[1].name == "bob"  # another user's session is untouched
    for old in alice[:-3]:
        with pytest.raises(Unauthorized):
            sessions.resolve(old.id)
    assert all(sessions.resolve(s.id)[1].name == "alice" for s in alice[-3:])


def test_an_agent_token_cannot_log_in() -> None:
    with pytest.raises(Forbidden, match="agent token"):
        DashboardSessions(Tokens().authenticate).open("host")
