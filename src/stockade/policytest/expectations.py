"""Expectation files: which verdict a flow between two workloads must get.

The format is the one `examples/three-tier.flows.yaml` uses (the demo reads it
too): a YAML list, or several documents each holding a list or one entry.

    - {from: shop/web-1, to: shop/db-1, port: 5432, protocol: tcp, expect: deny}
    - {name: ping, from: ops/bastion, to: shop/web-1, protocol: icmp, type: 8, expect: allow, family: 6}

Every problem in every entry is reported at once, each naming the entry (its
position, and its name when given) and the field, so one CI run shows them all.
Pure apart from `read_expectations`, which reads the file.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, TypeGuard, cast

import yaml

from stockade.compile.trace import Flow
from stockade.errors import FieldProblem, ValidationError
from stockade.model.verdicts import FINAL_VERDICTS, FinalVerdict

Protocol = Literal["tcp", "udp", "sctp", "icmp"]
Verdict = FinalVerdict
Problem = Callable[[str, str], None]  # record (field, text) against the entry being parsed

PROTOCOLS: tuple[str, ...] = ("tcp", "udp", "sctp", "icmp")
VERDICTS: tuple[str, ...] = FINAL_VERDICTS
FIELDS: tuple[str, ...] = ("name", "from", "to", "protocol", "port", "family", "expect", "type", "code")
REQUIRED: tuple[str, ...] = ("from", "to", "protocol", "expect")
# Namespace and workload names are DNS labels (model.objects checks the same shape).
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_WORKLOAD_REF = re.compile(rf"^{_DNS_LABEL}/{_DNS_LABEL}$")


@dataclass(frozen=True)
class Expectation:
    """One entry: a flow and the verdict it must get."""

    index: int                    # 1-based position in the file
    src: tuple[str, str]          # (namespace, name)
    dst: tuple[str, str]
    protocol: Protocol
    expect: Verdict
    port: int | None = None       # None for icmp
    family: Literal[4, 6] = 4
    icmp_type: int | None = None  # None: trace's default, echo request
    icmp_code: int | None = None
    name: str | None = None
    source: str = ""

    @property
    def ref(self) -> str:
        """How messages name this entry: `tests.yaml entry 3 (db-closed)`."""
        return entry_ref(self.source, self.index, self.name)

    @property
    def flow(self) -> Flow:
        return Flow(self.src, self.dst, self.protocol, self.port, self.family, self.icmp_type, self.icmp_code)

    def describe_flow(self) -> str:
        """`tcp/5432 IPv4`, `icmp type 8 IPv6`."""
        if self.protocol == "icmp":
            detail = "" if self.icmp_type is None else f" type {self.icmp_type}"
            detail += "" if self.icmp_code is None else f" code {self.icmp_code}"
        else:
            detail = f"/{self.port}"
        return f"{self.protocol}{detail} IPv{self.family}"

    def to_dict(self) -> dict[str, Any]:
        """The entry as a user writes it (file keys), for JSON output."""
        out: dict[str, Any] = {"name": self.name, "from": "/".join(self.src), "to": "/".join(self.dst),
                               "protocol": self.protocol, "port": self.port, "family": self.family,
                               "expect": self.expect}
        if self.icmp_type is not None:
            out["type"] = self.icmp_type
        if self.icmp_code is not None:
            out["code"] = self.icmp_code
        return out


def entry_ref(source: str, index: int, name: str | None) -> str:
    where = f"{source} entry {index}" if source else f"entry {index}"
    return f"{where} ({name})" if name else where


def read_expectations(path: str) -> list[Expectation]:
    """Read and parse an expectation file (`-` for stdin)."""
    if path == "-":
        return parse_expectations(sys.stdin.read(), "<stdin>")
    p = Path(path)
    if not p.is_file():
        raise ValidationError.single(path, "", "no such file" if not p.exists() else "is not a file")
    return parse_expectations(p.read_text(), path)


def parse_expectations(text: str, source: str = "") -> list[Expectation]:
    """Every entry of the file, typed; a ValidationError naming every bad entry and field."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise ValidationError.single(source, "", f"not valid YAML: {e}") from None
    entries: list[Any] = []
    problems: list[FieldProblem] = []
    for number, doc in enumerate(documents, 1):
        if isinstance(doc, list):
            entries.extend(doc)
        elif isinstance(doc, Mapping):
            entries.append(doc)
        else:
            problems.append(FieldProblem(f"{source} document {number}", "",
                                         "must be a list of expectations, or one expectation"))
    if problems:
        raise ValidationError(problems)
    if not entries:
        # An empty file would pass vacuously: a CI gate that checks nothing is worse than none.
        raise ValidationError.single(source, "", "contains no expectations")
    out: list[Expectation] = []
    for index, raw in enumerate(entries, 1):
        entry, entry_problems = _parse_entry(raw, index, source)
        problems += entry_problems
        if entry is not None:
            out.append(entry)
    if problems:
        raise ValidationError(problems)
    return out


def _parse_entry(raw: Any, index: int, source: str) -> tuple[Expectation | None, list[FieldProblem]]:
    if not isinstance(raw, Mapping):
        return None, [FieldProblem(entry_ref(source, index, None), "",
                                   "must be a mapping with from, to, protocol and expect")]
    name = raw.get("name")
    ref = entry_ref(source, index, name if isinstance(name, str) and name else None)
    problems: list[FieldProblem] = []

    def problem(field: str, text: str) -> None:
        problems.append(FieldProblem(ref, field, text))

    for key in raw:
        if key not in FIELDS:
            problem(str(key), f"unknown field (known fields: {', '.join(FIELDS)})")
    for key in REQUIRED:
        if key not in raw:
            problem(key, "is required")
    if "name" in raw and not (isinstance(name, str) and name):
        problem("name", "must be a non-empty string")

    src = _workload_ref(raw, "from", problem)
    dst = _workload_ref(raw, "to", problem)
    protocol = _protocol(raw, problem)
    expect = raw.get("expect")
    if "expect" in raw and expect not in VERDICTS:
        problem("expect", f"{expect!r} is not one of {', '.join(VERDICTS)}")
    family = raw.get("family", 4)
    if not _is_int(family) or family not in (4, 6):
        problem("family", f"{family!r} is not 4 or 6")
    port, icmp_type, icmp_code = _port_fields(raw, protocol, problem)

    if problems or src is None or dst is None or protocol is None:
        return None, problems
    return Expectation(index, src, dst, cast(Protocol, protocol), cast(Verdict, expect), port,
                       cast(Literal[4, 6], family), icmp_type, icmp_code, name, source), []


def _is_int(value: Any) -> TypeGuard[int]:
    # YAML `true` is a bool, and bool is an int in Python: not a port or a family.
    return isinstance(value, int) and not isinstance(value, bool)


def _workload_ref(raw: Mapping[str, Any], field: str, problem: Problem) -> tuple[str, str] | None:
    value = raw.get(field)
    if field not in raw:
        return None
    if not isinstance(value, str) or not _WORKLOAD_REF.match(value):
        problem(field, f"{value!r} is not a workload as NAMESPACE/NAME")
        return None
    ns, name = value.split("/")
    return ns, name


def _protocol(raw: Mapping[str, Any], problem: Problem) -> str | None:
    if "protocol" not in raw:
        return None
    value = raw["protocol"]
    # Policies write TCP, flows are usually written tcp: both are accepted.
    text = value.lower() if isinstance(value, str) else value
    if text in PROTOCOLS:
        return cast(str, text)
    hint = "; for ICMPv6 write protocol: icmp with family: 6" if text in ("icmpv6", "ipv6-icmp") else ""
    problem("protocol", f"{value!r} is not one of {', '.join(PROTOCOLS)}{hint}")
    return None


def _port_fields(raw: Mapping[str, Any], protocol: str | None,
                 problem: Problem) -> tuple[int | None, int | None, int | None]:
    """port for tcp/udp/sctp; type and code for icmp. Checked only once the protocol is known."""
    if protocol is None:
        return None, None, None
    port, icmp_type, icmp_code = raw.get("port"), raw.get("type"), raw.get("code")
    if protocol != "icmp":
        for key in ("type", "code"):
            if key in raw:
                problem(key, f"only icmp has a {key}, not {protocol}")
        if "port" not in raw:
            problem("port", f"is required for {protocol}")
        elif not _is_int(port) or not 1 <= port <= 65535:
            problem("port", f"{port!r} is not a port number 1-65535")
        return (port if _is_int(port) else None), None, None
    if "port" in raw:
        problem("port", "icmp has no ports; use type and code")
    for key, value in (("type", icmp_type), ("code", icmp_code)):
        if key in raw and (not _is_int(value) or not 0 <= value <= 255):
            problem(key, f"{value!r} is not a number 0-255")
    if "code" in raw and "type" not in raw:
        problem("code", "needs a type")
    return None, icmp_type, icmp_code
