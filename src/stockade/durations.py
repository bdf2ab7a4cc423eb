"""The one duration syntax every command and API takes: a number and a unit, `90s`, `30m`,
`1.5h`, `7d`, `2w` (seconds, minutes, hours, days, weeks). Pure."""

from __future__ import annotations

import re
from datetime import timedelta

HINT = "a duration like 90s, 30m, 12h, 7d or 2w"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str, whole: bool = False) -> timedelta:
    """`text` as a timedelta; ValueError (saying what is expected) when it is no duration.
    `whole`: a whole number of units only (a token's lifetime: `12h`, not `1.5h`)."""
    m = _DURATION.match(text.strip())
    if m is None or (whole and "." in m[1]):
        raise ValueError(f"{text!r} is not {HINT}")
    try:
        return timedelta(seconds=float(m[1]) * _UNIT_SECONDS[m[2]])
    except OverflowError:  # beyond what a timedelta holds (about 2.7 million years)
        raise ValueError(f"{text!r} is too long a duration") from None
