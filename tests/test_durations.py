"""The one duration syntax (stockade.durations) and its two users' rules."""

from __future__ import annotations

from datetime import timedelta

import pytest

from stockade.cli.render import parse_since
from stockade.controller.auth import parse_ttl
from stockade.durations import parse_duration
from stockade.errors import ValidationError


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("30m", 1800), ("1.5h", 5400), ("7d", 604800),
                                           ("2w", 1209600), (" 5m ", 300)])
def test_a_duration_is_a_number_and_a_unit(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "5", "m", "5y", "-5m", "5 m", "1e3s"])
def test_anything_else_is_refused_saying_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="a duration like 90s, 30m, 12h, 7d or 2w"):
        parse_duration(text)


def test_a_token_lifetime_is_positive_and_at_most_ten_years() -> None:
    assert parse_ttl("2w") == timedelta(weeks=2)
    for bad in ("0s", "5y", "5000w"):
        with pytest.raises(ValidationError):
            parse_ttl(bad)


def test_since_takes_the_same_durations_back_from_now() -> None:
    now = 1_700_000_000.0
    assert parse_since("2w", now) == "2023-10-31T22:13:20+00:00"  # 2023-11-14T22:13:20Z, two weeks back
    assert parse_since("1.5h", now) == parse_since("90m", now)


def test_a_token_lifetime_is_a_whole_number_of_units() -> None:
    with pytest.raises(ValueError):
        parse_duration("1.5h", whole=True)
    assert parse_duration("90m", whole=True) == timedelta(minutes=90)


def test_an_absurdly_long_duration_is_refused_not_a_crash() -> None:
    with pytest.raises(ValueError, match="too long"):
        parse_duration("999999999999999w")
    with pytest.raises(ValidationError):
        parse_ttl("999999999999999w")
