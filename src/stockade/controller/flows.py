"""The controller's flow history: a bounded, in-memory ring of the flow records agents send,
mirrored to sinks (the JSON-lines file, `controller.flow_file`; the OTLP exporter,
`controller.flow_otlp`) and read back from the file on start.

Why a ring in memory and a file beside it, not the SQLite store: flow records are high-volume
telemetry, not desired state. Writing them into the store's file would put thousands of small
writes per second behind the same single SQLite writer that commits revisions, and grow the
file that `apply` must keep fast. The ring is the queryable window (a live tail for
`stockade flows --follow` and "what was just denied?"); the JSON-lines file, appended outside
the ring's lock and rotated by size, lets that window outlive a restart: the controller reads
its newest records back (`restore`) and numbers on after them, so followers and their
`since_seq` keep working. The durable history belongs in the SIEM that ships the file or
receives the OTLP logs. Without a file (etcd replicas, tests) a restart empties the window and
seqs restart from 1; a reader asking for records after a seq the log has not reached gets
everything held, so a follower just goes on.

Invariants:
- Sequence numbers increase in arrival order (consecutive, except across records a failed disk
  write lost before a restart); `last_seq` is the newest; the ring holds at most `capacity`
  records, the newest ones.
- Sinks see every accepted record once, in seq order (the sink lock is taken before the ring's
  lock is let go), and never on the caller's answer path: a sink that fails counts its loss
  and the ring keeps the records.
- Nothing is lost silently: every record evicted from the ring is counted (per host, in
  `evicted`), as is every record an agent reports it dropped or sampled away
  (`agent_dropped`). Counters are monotonic for the process's life.
- Filters match what the caller may see: with `FlowQuery.visible` (a tenant), names and rule
  ids are compared in their redacted form (`controller.visibility`), so filtering cannot tell a
  tenant whether another tenant's workload or rule exists.
- Thread-safe: `add` runs in the API's worker threads, `query` anywhere. The ring itself
  never does I/O and never touches the kernel.
"""

from __future__ import annotations

import bisect
import ipaddress
import logging
import threading
from itertools import islice
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Mapping, Protocol, Sequence

from stockade.clock import Clock, utc_now
from stockade.controller import visibility
from stockade.controller.visibility import Visible
from stockade.errors import ValidationError
from stockade.model.reports import FlowEnd, FlowRecord
from stockade.model.verdicts import DENIED, VERDICTS, is_denied
from stockade.controller.schemas import parse_utc

log = logging.getLogger(__name__)

DENIED_VERDICTS = DENIED
DEFAULT_FLOW_HISTORY = 50_000
DEFAULT_QUERY_LIMIT = 1_000
MAX_QUERY_LIMIT = 10_000


@dataclass(frozen=True)
class FlowEntry:
    """One stored record plus what the filters look at, extracted once."""

    seq: int
    time: datetime
    host: str
    namespaces: frozenset[str]
    workloads: frozenset[str]
    denied: bool
    record: FlowRecord  # validated

    @classmethod
    def of(cls, seq: int, time: datetime, host: str, record: FlowRecord) -> "FlowEntry":
        src, dst = record.src, record.dst
        return cls(seq=seq, time=time, host=host,
                   namespaces=frozenset(x for x in (src.namespace, dst.namespace) if x),
                   workloads=frozenset(x for x in (src.workload, dst.workload) if x),
                   denied=is_denied(record.verdict), record=record)

    def to_dict(self) -> dict[str, Any]:
        # Every key on every record (counts null on a start): the API's answer always had them.
        return {"seq": self.seq, **self.record.to_dict(counts=True)}

    def line(self, received: datetime) -> dict[str, Any]:
        """What the sinks get (docs/flows.md): the API's form plus when the controller accepted it."""
        return {**self.to_dict(), "received": received.isoformat(timespec="microseconds")}

    @classmethod
    def from_line(cls, doc: Mapping[str, Any]) -> "FlowEntry":
        """Back from `line` (KeyError, TypeError or ValueError when it is not one)."""
        record = FlowRecord.from_dict(doc)
        return cls.of(int(doc["seq"]), parse_utc(record.time), record.host, record)


@dataclass(frozen=True)
class EndFilter:
    """`--from`/`--to`: an IP address, a workload `namespace/name`, or a bare workload name (any
    namespace). Parse with `parse`; match one end with `matches` (names in the caller's view)."""

    ip: str | None = None
    ref: str | None = None    # namespace/name
    name: str | None = None   # name alone

    @classmethod
    def parse(cls, field_name: str, text: str) -> "EndFilter":
        text = text.strip()
        try:
            return cls(ip=str(ipaddress.ip_address(text)))
        except ValueError:
            pass
        parts = text.split("/")
        if not text or len(parts) > 2 or not all(p and p.replace("-", "").replace(".", "").isalnum()
                                                 for p in parts):
            raise ValidationError.single("request", f"query.{field_name}",
                                         f"{text!r} is neither an IP address, a workload NAMESPACE/NAME "
                                         "nor a workload NAME")
        return cls(ref=text) if len(parts) == 2 else cls(name=text)

    def matches(self, end: FlowEnd, visible: Visible | None) -> bool:
        if self.ip is not None:
            return end.ip == self.ip
        ref = end.workload if visible is None else visibility.workload_ref(end.workload, visible)
        if not ref:
            return False
        if self.ref is not None:
            return ref == self.ref
        return ref.split("/", 1)[1] == self.name


def parse_verdicts(values: Sequence[str]) -> frozenset[str]:
    """`verdict` values (repeatable; `denied` stands for all the denied ones); 422 naming a bad one."""
    out: set[str] = set()
    for v in values:
        v = v.strip().lower()
        if v == "denied":
            out |= DENIED
        elif v in VERDICTS:
            out.add(v)
        else:
            raise ValidationError.single("request", "query.verdict",
                                         f"{v!r} is not a verdict (one of: {', '.join(VERDICTS)}, or denied)")
    return frozenset(out)


def parse_protocol(text: str) -> str:
    p = text.strip().lower()
    if not p or len(p) > 16 or not p.replace("-", "").isalnum():
        raise ValidationError.single("request", "query.protocol", f"{text!r} is not a protocol name (tcp, udp, icmp, ...)")
    return p


@dataclass(frozen=True)
class FlowQuery:
    """Which records a reader wants.

    With `since_seq`: the oldest `limit` matching records after it (paging and
    following: resume from the answer's `last_seq`). Without: the newest
    `limit` matching records (a tail). Filters combine with AND; `namespace`,
    `workload` and `port` match either end of the flow, `src` the source end, `dst` the
    destination end; `verdicts` is any of them (empty: any verdict).

    `visible` (set by the service for a tenant): names and rule ids are matched in the form
    that caller sees them (`controller.visibility`), never in the raw form it may not see.
    """

    since_seq: int | None = None
    since: datetime | None = None
    namespace: str | None = None
    workload: str | None = None
    denied: bool = False
    limit: int = DEFAULT_QUERY_LIMIT
    src: EndFilter | None = None
    dst: EndFilter | None = None
    verdicts: frozenset[str] = frozenset()
    port: int | None = None
    protocol: str | None = None
    rule: str | None = None
    visible: Visible | None = None

    def matches(self, e: FlowEntry) -> bool:
        record = e.record
        return ((self.since is None or e.time >= self.since)
                and (self.namespace is None or self.namespace in e.namespaces)
                and (self.workload is None or self.workload in e.workloads)
                and (not self.denied or e.denied)
                and (not self.verdicts or record.verdict in self.verdicts)
                and (self.port is None or self.port in (record.src.port, record.dst.port))
                and (self.protocol is None or record.protocol == self.protocol)
                and (self.rule is None or self._rule_seen(record.rule) == self.rule)
                and (self.src is None or self.src.matches(record.src, self.visible))
                and (self.dst is None or self.dst.matches(record.dst, self.visible)))

    def _rule_seen(self, rule: str) -> str | None:
        return rule if self.visible is None else visibility.rule_ref(rule, self.visible)


class FlowSink(Protocol):
    """Where accepted records go besides the ring: `write` gets `FlowEntry.line`s in seq order,
    one caller at a time, and must never raise for an I/O problem (count it instead)."""

    name: str

    def write(self, lines: Sequence[dict[str, Any]]) -> None: ...

    def counts(self) -> tuple[int, int]:
        """(records taken, records lost)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class FlowCounts:
    """Per host: records accepted, records the agent dropped or sampled, records evicted here."""

    received: Mapping[str, int]
    agent_dropped: Mapping[str, int]
    evicted: Mapping[str, int]

    def dropped_total(self) -> dict[str, int]:
        """Per host that ever sent or dropped (0 included, so a rate() has a series to start from)."""
        hosts = set(self.received) | set(self.agent_dropped) | set(self.evicted)
        return {h: self.agent_dropped.get(h, 0) + self.evicted.get(h, 0) for h in sorted(hosts)}

    def dropped_dict(self) -> dict[str, Any]:
        hosts = sorted(set(self.agent_dropped) | set(self.evicted))
        return {h: {"agent": self.agent_dropped.get(h, 0), "evicted": self.evicted.get(h, 0)} for h in hosts}


@dataclass(frozen=True)
class FlowPage:
    records: tuple[FlowEntry, ...]
    last_seq: int     # resume a follow from here
    first_seq: int    # the oldest record still held (last_seq + 1 when empty): a gap shows as since_seq < first_seq - 1
    more: bool        # more matching records after `last_seq` already exist (the limit cut the answer)
    counts: FlowCounts = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"records": [e.to_dict() for e in self.records], "lastSeq": self.last_seq,
                "firstSeq": self.first_seq, "more": self.more, "dropped": self.counts.dropped_dict(),
                "received": dict(sorted(self.counts.received.items()))}


class FlowLog:
    def __init__(self, capacity: int = DEFAULT_FLOW_HISTORY, sinks: Sequence[FlowSink] = (),
                 clock: Clock = utc_now) -> None:
        if capacity < 1:
            raise ValueError("flow history capacity must be at least 1")
        self.capacity = capacity
        self.sinks = tuple(sinks)
        self._clock = clock
        self._ring: deque[FlowEntry] = deque()
        self._seq = 0
        self._lock = threading.Lock()
        self._sink_lock = threading.Lock()
        self._received: dict[str, int] = {}
        self._agent_dropped: dict[str, int] = {}
        self._evicted: dict[str, int] = {}

    @property
    def last_seq(self) -> int:
        return self._seq

    def restore(self, lines: Iterable[Mapping[str, Any]]) -> int:
        """Take back records a sink wrote before a restart (`FlowEntry.line`s, oldest first), before
        any `add`: the newest `capacity` of them fill the ring and seqs go on after the highest.
        Lines that are no record are skipped; returns how many were."""
        entries: list[FlowEntry] = []
        skipped = 0
        for doc in lines:
            try:
                entries.append(FlowEntry.from_line(doc))
            except (KeyError, TypeError, ValueError, AttributeError):
                skipped += 1
        entries.sort(key=lambda e: e.seq)
        with self._lock:
            if self._seq:
                raise RuntimeError("restore() runs before the first add()")
            for e in entries[-self.capacity:]:
                if not self._ring or e.seq > self._ring[-1].seq:  # a duplicated line counts once
                    self._ring.append(e)
            self._seq = self._ring[-1].seq if self._ring else 0
        return skipped

    def add(self, host: str, records: Iterable[tuple[datetime, FlowRecord]], dropped: int = 0) -> int:
        """Append validated records (with their time) from `host`; count `dropped`; hand them to the
        sinks. Returns the last seq."""
        added: list[FlowEntry] = []
        self._lock.acquire()
        try:
            for when, record in records:
                self._seq += 1
                entry = FlowEntry.of(self._seq, when, host, record)
                added.append(entry)
                self._ring.append(entry)
                if len(self._ring) > self.capacity:
                    old = self._ring.popleft()
                    self._evicted[old.host] = self._evicted.get(old.host, 0) + 1
            self._received[host] = self._received.get(host, 0) + len(added)
            if dropped:
                self._agent_dropped[host] = self._agent_dropped.get(host, 0) + dropped
            last = self._seq
            if added and self.sinks:
                # Taken before the ring's lock is let go: sinks get batches in seq order, while
                # readers of the ring are not held up by a slow disk.
                self._sink_lock.acquire()
        finally:
            self._lock.release()
        if added and self.sinks:
            try:
                received = self._clock()
                lines = [e.line(received) for e in added]
                for sink in self.sinks:
                    try:
                        sink.write(lines)
                    except Exception:  # a sink's bug must not cost the agent its batch: the ring has it
                        log.exception("flow sink %s failed", sink.name)
            finally:
                self._sink_lock.release()
        return last

    def sink_counts(self) -> dict[str, tuple[int, int]]:
        """Per sink name: (records taken, records lost)."""
        return {s.name: s.counts() for s in self.sinks}

    def close(self) -> None:
        """Close the sinks (the OTLP exporter sends what it still holds)."""
        with self._sink_lock:
            for sink in self.sinks:
                try:
                    sink.close()
                except Exception:
                    log.exception("closing flow sink %s failed", sink.name)

    def counts(self) -> FlowCounts:
        with self._lock:
            return FlowCounts(dict(self._received), dict(self._agent_dropped), dict(self._evicted))

    def query(self, q: FlowQuery) -> FlowPage:
        with self._lock:
            ring = list(self._ring) if q.since_seq is None else self._after(q.since_seq)
            last_seq = self._seq
            first_seq = self._ring[0].seq if self._ring else self._seq + 1
            counts = FlowCounts(dict(self._received), dict(self._agent_dropped), dict(self._evicted))
        # Filtering runs outside the lock: FlowEntry is immutable and `ring` is our own list.
        more = False
        if q.since_seq is None:
            found: list[FlowEntry] = []
            for e in reversed(ring):
                if q.matches(e):
                    found.append(e)
                    if len(found) == q.limit:
                        break
            found.reverse()
        else:
            found = []
            for e in ring:
                if q.matches(e):
                    if len(found) == q.limit:
                        more = True
                        break
                    found.append(e)
            if more:
                last_seq = found[-1].seq
        return FlowPage(tuple(found), last_seq, first_seq, more, counts)

    def recent_distinct(self, limit: int = 2_000) -> list[FlowRecord]:
        """The newest record of each distinct workload-to-workload flow (ends, protocol, port),
        newest first, at most `limit`: what `diff` re-evaluates under a proposed policy."""
        with self._lock:
            ring = list(self._ring)
        seen: set[tuple[Any, ...]] = set()
        out: list[FlowRecord] = []
        for e in reversed(ring):
            record = e.record
            src, dst = record.src, record.dst
            if record.ended or not src.workload or not dst.workload:
                continue
            key = (src.workload, dst.workload, record.protocol, dst.port, record.family, record.icmp_type)
            if key in seen:
                continue
            seen.add(key)
            out.append(record)
            if len(out) >= limit:
                break
        return out

    def rule_counts(self) -> dict[tuple[str, str], int]:
        """Flows per (rule id, direction) in the history: the start records (one per connection
        attempt a rule decided or recorded; an end record is the same flow ending)."""
        with self._lock:
            ring = list(self._ring)
        out: dict[tuple[str, str], int] = {}
        for e in ring:
            if not e.record.ended:
                key = (e.record.rule, e.record.direction)
                out[key] = out.get(key, 0) + 1
        return out

    def _after(self, since_seq: int) -> list[FlowEntry]:
        """Records with seq > since_seq (the ring is sorted by seq; consecutive but where records
        read back after a restart have a gap, hence the search)."""
        if not self._ring or since_seq == self._seq:
            return []
        if since_seq > self._seq:
            since_seq = 0  # from before a restart that lost seqs: everything held now is new to the reader
        start = since_seq - self._ring[0].seq + 1
        if start <= 0:
            return list(self._ring)
        if start < len(self._ring) and self._ring[start - 1].seq == since_seq:
            return list(islice(self._ring, start, None))  # consecutive: the usual case
        return list(islice(self._ring, bisect.bisect_right(self._ring, since_seq, key=lambda e: e.seq), None))
