"""Kubernetes-style label selectors: parsed once into a tiny AST, evaluated many times.

Pure: no I/O. `parse_selector` validates and raises `SelectorSyntaxError` with
the field at fault; `Selector.matches` is what the compiler calls per workload.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, Mapping

Operator = Literal["In", "NotIn", "Exists", "DoesNotExist"]
OPERATORS: tuple[str, ...] = ("In", "NotIn", "Exists", "DoesNotExist")

_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class SelectorSyntaxError(ValueError):
    """A selector that does not parse; `field` is relative to the selector."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def label_key_problem(key: str) -> str | None:
    """Why `key` is not a valid label key, or None when it is."""
    if not isinstance(key, str) or not key:
        return "label key must be a non-empty string"
    prefix, slash, name = key.rpartition("/")
    # `/name` (an empty prefix) is invalid in Kubernetes: a slash needs a prefix before it.
    if slash and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return f"label key {key!r}: prefix must be a DNS subdomain"
    if not _NAME.match(name):
        return (f"label key {key!r}: name must be 1-63 characters of letters, digits, "
                "'-', '_' or '.', starting and ending with a letter or digit")
    return None


def label_value_problem(value: Any) -> str | None:
    """Why `value` is not a valid label value, or None when it is."""
    if not isinstance(value, str):
        return f"label value {value!r} must be a string"
    if value and not _NAME.match(value):
        return (f"label value {value!r} must be at most 63 characters of letters, digits, "
                "'-', '_' or '.', starting and ending with a letter or digit")
    return None


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        # NotIn: Kubernetes matches when the key is absent too.
        return self.key not in labels or labels[self.key] not in self.values


@dataclass(frozen=True)
class Selector:
    """A conjunction of requirements; the empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    @property
    def is_empty(self) -> bool:
        return not self.requirements

    def describe(self) -> str:
        """kubectl-like text form, e.g. `tier=web,env in (prod,staging)`."""
        parts: list[str] = []
        for r in self.requirements:
            if r.operator == "Exists":
                parts.append(r.key)
            elif r.operator == "DoesNotExist":
                parts.append(f"!{r.key}")
            elif r.operator == "In" and len(r.values) == 1:
                parts.append(f"{r.key}={next(iter(r.values))}")
            else:
                op = "in" if r.operator == "In" else "notin"
                parts.append(f"{r.key} {op} ({','.join(sorted(r.values))})")
        return ",".join(parts) or "<all>"


MATCH_ALL = Selector()


def parse_selector(raw: Mapping[str, Any] | None) -> Selector:
    """Parse a `LabelSelector` mapping (matchLabels, matchExpressions) into a Selector."""
    if raw is None:
        return MATCH_ALL
    if not isinstance(raw, Mapping):
        raise SelectorSyntaxError("", "a selector must be a mapping with matchLabels and/or matchExpressions")
    unknown = sorted(set(raw) - {"matchLabels", "matchExpressions"})
    if unknown:
        raise SelectorSyntaxError(unknown[0], "unknown field (expected matchLabels or matchExpressions)")
    requirements: list[Requirement] = []
    match_labels = raw.get("matchLabels") or {}
    if not isinstance(match_labels, Mapping):
        raise SelectorSyntaxError("matchLabels", "must be a mapping of label keys to values")
    for key, value in match_labels.items():
        problem = label_key_problem(key) or label_value_problem(value)
        if problem:
            raise SelectorSyntaxError(f"matchLabels.{key}", problem)
        requirements.append(Requirement(key, "In", frozenset([value])))
    expressions = raw.get("matchExpressions") or []
    if not isinstance(expressions, list):
        raise SelectorSyntaxError("matchExpressions", "must be a list")
    for i, expr in enumerate(expressions):
        where = f"matchExpressions[{i}]"
        if not isinstance(expr, Mapping):
            raise SelectorSyntaxError(where, "must be a mapping with key, operator and values")
        extra = sorted(set(expr) - {"key", "operator", "values"})
        if extra:
            raise SelectorSyntaxError(f"{where}.{extra[0]}", "unknown field")
        key = expr.get("key")
        problem = label_key_problem(key) if key is not None else "is required"
        if problem:
            raise SelectorSyntaxError(f"{where}.key", problem)
        operator = expr.get("operator")
        if operator not in OPERATORS:
            raise SelectorSyntaxError(f"{where}.operator", f"{operator!r} is not one of {', '.join(OPERATORS)}")
        values = expr.get("values") or []
        if not isinstance(values, list):
            raise SelectorSyntaxError(f"{where}.values", "must be a list of strings")
        for j, v in enumerate(values):
            problem = label_value_problem(v)
            if problem:
                raise SelectorSyntaxError(f"{where}.values[{j}]", problem)
        if operator in ("In", "NotIn") and not values:
            raise SelectorSyntaxError(f"{where}.values", f"must not be empty for operator {operator}")
        if operator in ("Exists", "DoesNotExist") and values:
            raise SelectorSyntaxError(f"{where}.values", f"must be empty for operator {operator}")
        requirements.append(Requirement(key, operator, frozenset(values)))
    # Sorted so that equal selectors compare, hash and render equal.
    requirements.sort(key=lambda r: (r.key, r.operator, tuple(sorted(r.values))))
    return Selector(tuple(requirements))
