"""Domain names as egress peers (issue 18): what a valid name or pattern is, and what it matches. Pure.

    normalise("API.Partner.Example.")     -> "api.partner.example"
    check_pattern("*.cdn.example")         -> "*.cdn.example"     (ValueError for a malformed one)
    matches("*.cdn.example", "a.b.cdn.example") -> True

The meaning is upstream's `domainNames` (ClusterNetworkPolicy, policy.networking.k8s.io):
- an exact name matches that name only: `partner.example` is not `www.partner.example`;
- `*.` may only be the first label, and stands for one or more whole labels: `*.cdn.example`
  matches `a.cdn.example` and `a.b.cdn.example`, never `cdn.example` itself nor `xcdn.example`;
- names compare case-insensitively, and a trailing dot (the root) changes nothing.
A name has at least two labels, labels of 1-63 letters, digits, `-` or `_` (not first or last
for `-` and `_`), and at most 253 characters — upstream's pattern, plus DNS's lengths.
"""

from __future__ import annotations

import re

MAX_NAME_LENGTH = 253
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9_]{0,61}[a-z0-9])?$")


def normalise(name: str) -> str:
    """The form names are compared in: lower case, without the trailing root dot."""
    return name.lower().removesuffix(".")


def check_pattern(text: str) -> str:
    """`text` if it is a valid name or `*.` pattern, as written; ValueError saying what is wrong."""
    name = normalise(text)
    labels = name.split(".")
    if labels[0] == "*":
        labels = labels[1:]
    elif "*" in name:
        raise ValueError(f"{text!r}: a wildcard may only be the first label, as '*.'")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"{text!r}: longer than {MAX_NAME_LENGTH} characters")
    if len(labels) < 2:
        raise ValueError(f"{text!r}: a domain name needs at least two labels (e.g. 'partner.example')")
    for label in labels:
        if not _LABEL.match(label):
            raise ValueError(f"{text!r}: {label!r} is not a valid label (1-63 letters, digits, '-' or '_', "
                             "starting and ending with a letter or digit)")
    return text


def is_wildcard(pattern: str) -> bool:
    return pattern.startswith("*.")


def matches(pattern: str, name: str) -> bool:
    """Does `name` (an answer's owner name) fall under `pattern` (a valid name or `*.` pattern)?"""
    wanted, got = normalise(pattern), normalise(name)
    if is_wildcard(wanted):
        return got.endswith(wanted[1:]) and len(got) > len(wanted) - 1
    return got == wanted
