"""The controller's flow history: a bounded, in-memory ring of the flow records agents send.

Why memory and not the SQLite store: flow records are high-volume telemetry, not
desired state. Writing them into the store's file would put thousands of small
writes per second behind the same single SQLite writer that commits revisions,
and grow the file that `apply` must keep fast. The controller keeps a recent,
queryable window (a live tail for `stockade flows --follow` and "what was just
denied?"); the durable history belongs in the SIEM that reads the JSON lines.
A controller restart therefore empties the window and sequence numbers restart
from 1; a reader asking for records after a seq the log has not reached (one
from before the restart) gets everything held, so a follower just goes on.

Invariants:
- Sequence numbers are consecutive from 1 in arrival order; `last_seq` is the
  newest; the ring holds at most `capacity` records, the newest ones.
- Nothing is lost silently: every record evicted from the ring is counted (per
  host, in `evicted`), as is every record an agent reports it dropped or
  sampled away (`agent_dropped`). Counters are monotonic for the process's life.
- Thread-safe: `add` runs in the API's worker threads, `query` anywhere.
  Never does I/O and never touches the kernel.
"""

from __future__ import annotations

import threading
from itertools import islice
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Mapping

from stockade.model.reports import FlowRecord
from stockade.model.verdicts import DENIED, is_denied

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


@dataclass(frozen=True)
class FlowQuery:
    """Which records a reader wants.

    With `since_seq`: the oldest `limit` matching records after it (paging and
    following: resume from the answer's `last_seq`). Without: the newest
    `limit` matching records (a tail). Filters combine with AND; `namespace`
    and `workload` match either end of the flow.
    """

    since_seq: int | None = None
    since: datetime | None = None
    namespace: str | None = None
    workload: str | None = None
    denied: bool = False
    limit: int = DEFAULT_QUERY_LIMIT

    def matches(self, e: FlowEntry) -> bool:
        return ((self.since is None or e.time >= self.since)
                and (self.namespace is None or self.namespace in e.namespaces)
                and (self.workload is None or self.workload in e.workloads)
                and (not self.denied or e.denied))


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
    def __init__(self, capacity: int = DEFAULT_FLOW_HISTORY) -> None:
        if capacity < 1:
            raise ValueError("flow history capacity must be at least 1")
        self.capacity = capacity
        self._ring: deque[FlowEntry] = deque()
        self._seq = 0
        self._lock = threading.Lock()
        self._received: dict[str, int] = {}
        self._agent_dropped: dict[str, int] = {}
        self._evicted: dict[str, int] = {}

    @property
    def last_seq(self) -> int:
        return self._seq

    def add(self, host: str, records: Iterable[tuple[datetime, FlowRecord]], dropped: int = 0) -> int:
        """Append validated records (with their time) from `host`; count `dropped`. Returns the last seq."""
        with self._lock:
            n = 0
            for when, record in records:
                self._seq += 1
                n += 1
                self._ring.append(FlowEntry.of(self._seq, when, host, record))
                if len(self._ring) > self.capacity:
                    old = self._ring.popleft()
                    self._evicted[old.host] = self._evicted.get(old.host, 0) + 1
            self._received[host] = self._received.get(host, 0) + n
            if dropped:
                self._agent_dropped[host] = self._agent_dropped.get(host, 0) + dropped
            return self._seq

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
        """Records with seq > since_seq (the ring is sorted by seq and consecutive)."""
        if not self._ring or since_seq == self._seq:
            return []
        if since_seq > self._seq:
            since_seq = 0  # from before a controller restart: everything held now is new to the reader
        start = max(0, since_seq - self._ring[0].seq + 1)
        return list(islice(self._ring, start, None))
