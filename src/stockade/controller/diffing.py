"""What a proposed change would do: field-level differences object by object, and the recently
observed flows whose verdict it would change. Pure functions of documents and states.

Field paths read like the YAML a user edits: `spec.ingress[2].ports[0].port`. Lists are
compared by position, because rule order is meaning (rules are evaluated top to bottom).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping, Sequence

from stockade.compile.trace import Programs, Flow, trace_flow
from stockade.errors import StockadeError
from stockade.model.kinds import ObjectKey
from stockade.model.reports import FlowRecord
from stockade.model.state import DesiredState

FieldOp = Literal["add", "change", "remove"]

_PROTOCOLS = {"tcp": "tcp", "udp": "udp", "sctp": "sctp", "icmp": "icmp", "ipv6-icmp": "icmp", "icmpv6": "icmp"}


@dataclass(frozen=True)
class FieldChange:
    path: str
    op: FieldOp
    old: Any = None
    new: Any = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "op": self.op}
        if self.op != "add":
            out["old"] = self.old
        if self.op != "remove":
            out["new"] = self.new
        return out


@dataclass(frozen=True)
class ObjectDiff:
    key: ObjectKey
    action: str                     # created, configured, unchanged
    fields: tuple[FieldChange, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.key.kind, "namespace": self.key.namespace or None, "name": self.key.name,
                "action": self.action, "fields": [f.to_dict() for f in self.fields]}


def _join(path: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    return f"{path}.{part}" if path else part


def field_changes(old: Any, new: Any, path: str = "") -> list[FieldChange]:
    """Every leaf-or-subtree difference between two JSON values, in document order."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[FieldChange] = []
        for k in list(old) + [k for k in new if k not in old]:
            p = _join(path, str(k))
            if k not in new:
                out.append(FieldChange(p, "remove", old=old[k]))
            elif k not in old:
                out.append(FieldChange(p, "add", new=new[k]))
            else:
                out.extend(field_changes(old[k], new[k], p))
        return out
    if isinstance(old, list) and isinstance(new, list):
        out = []
        for i in range(max(len(old), len(new))):
            p = _join(path, i)
            if i >= len(new):
                out.append(FieldChange(p, "remove", old=old[i]))
            elif i >= len(old):
                out.append(FieldChange(p, "add", new=new[i]))
            else:
                out.extend(field_changes(old[i], new[i], p))
        return out
    return [] if old == new else [FieldChange(path, "change", old, new)]


def diff_documents(items: Iterable[tuple[ObjectKey, str, Mapping[str, Any] | None, Mapping[str, Any] | None]]
                   ) -> list[ObjectDiff]:
    """(key, action, stored document or None, proposed document or None) → one ObjectDiff each.

    Server-kept `status` (assigned addresses, runtime facts) is not what a user changes: left out.
    """
    out = []
    for key, action, old, new in items:
        strip = (lambda d: {k: v for k, v in d.items() if k != "status"} if d is not None else None)
        o, n = strip(old), strip(new)
        if o is None and n is not None:
            fields = [FieldChange("", "add", new=n)]
        elif n is None and o is not None:
            fields = [FieldChange("", "remove", old=o)]
        else:
            fields = field_changes(o, n)
        out.append(ObjectDiff(key, action, tuple(fields)))
    return out


@dataclass(frozen=True)
class VerdictChange:
    src: str
    dst: str
    protocol: str
    port: int | None
    family: int
    before: str
    after: str
    before_rule: str | None
    after_rule: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst, "protocol": self.protocol, "port": self.port,
                "family": self.family, "before": self.before, "after": self.after,
                "beforeRule": self.before_rule, "afterRule": self.after_rule}


def _flow_of(record: FlowRecord) -> Flow | None:
    src, dst = record.src, record.dst
    protocol = _PROTOCOLS.get(record.protocol.lower())
    if protocol is None or "/" not in str(src.workload) or "/" not in str(dst.workload):
        return None
    s_ns, s_name = str(src.workload).split("/", 1)
    d_ns, d_name = str(dst.workload).split("/", 1)
    family = 6 if record.family == 6 else 4
    return Flow((s_ns, s_name), (d_ns, d_name), protocol,  # type: ignore[arg-type]
                dst.port if protocol != "icmp" else None, family,  # type: ignore[arg-type]
                record.icmp_type if protocol == "icmp" else None)


def verdict_changes(before: DesiredState, after: DesiredState,
                    records: Sequence[FlowRecord]) -> list[VerdictChange]:
    """Observed workload-to-workload flows whose traced verdict differs between the two states.

    Flows whose workloads no longer exist in either state are skipped (their fate is in the
    object diff). Both sides are traced from the compiled host programs, like `stockade trace`.
    """
    cache_before: Programs = {}
    cache_after: Programs = {}
    out: list[VerdictChange] = []
    for record in records:
        flow = _flow_of(record)
        if flow is None:
            continue
        try:
            was = trace_flow(before, flow, programs=cache_before)
            will = trace_flow(after, flow, programs=cache_after)
        except StockadeError:
            continue  # a workload gone, or without an address of that family
        if was.verdict != will.verdict:
            out.append(VerdictChange(f"{flow.src[0]}/{flow.src[1]}", f"{flow.dst[0]}/{flow.dst[1]}",
                                     flow.protocol, flow.port, flow.family, was.verdict, will.verdict,
                                     was.deciding_rule, will.deciding_rule))
    return out
