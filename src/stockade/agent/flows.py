"""Flow records: logged packets → records naming workloads, verdict and rule → the controller.

    kernel rule (log group G, prefix `stk <verdict> <rule id> `)
      └─► NflogReader (a thread)  ─► FlowRecorder.offer: decode, resolve, bounded queue
            └─► FlowShipper (a task of the agent loop): a batch every ~0.2 s (records show in `flows --follow` well within a second)
                  └─► client.send_flows(host, records, dropped)
    conntrack DESTROY (NFNLGRP_CONNTRACK_DESTROY, with accounting)
      └─► ConntrackReader (a thread) ─► FlowRecorder.offer_end: match an allowed start, queue an end record

A record is a `model.reports.FlowRecord` (the type the controller stores and `stockade
flows` shows; its `to_dict` is the wire form): time (ISO 8601 UTC), host, direction,
verdict (a flow verdict of model.verdicts), rule id, protocol, family, both ends
(address, port, workload and namespace when one is known), ICMP type, event (start or
end) and, on end records, the counts.

Start and end: every record from a logged packet is a `start`. A start with
verdict `allow` is remembered (at most RECENT_KEYS, least recently used first
out) under its original-direction 5-tuple (protocol, src ip/port, dst ip/port,
and the ICMP type); when conntrack reports that connection destroyed, the same
record comes again as an `end`, timed at the end, with `packets`/`bytes` of both
directions summed and the reply direction's alone as `replyPackets`/`replyBytes`
(null when the entry had no counters). One end per remembered start: a
connection between two workloads of this host was recorded once per direction
(egress and ingress), so it ends once per direction. Connections that were not
recorded as allowed end without a record. Conntrack keeps a closed TCP entry
through TIME_WAIT, so an end is timed when conntrack forgot it (up to ~2 min
after the FIN), not at the FIN.

Direction and full rule id come from the applied Ruleset (`log_index`): the
chain holding a logging rule ends in `_eg` or `_in`, and its comment is the
untruncated rule id (rule ids are unique within a policy across directions, so
a prefix names one direction). Workloads come from the DesiredState the
program was compiled from. Both are swapped in whole by the loop (`update`),
so the reader thread only ever reads an immutable snapshot.

Nothing is lost silently: a full queue drops the new record and counts it
(`queue`); records the kernel could not deliver are counted from NFLOG
sequence gaps and conntrack ENOBUFS (`kernel`, one per overrun: at least one event each); packets decided above the logging rate limit are
counted by the kernel's `flowlog_suppressed` counter (`ratelimit`). The sum is
shipped as `dropped` with the next batch.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Protocol

from stockade.clock import unix_time
from stockade.dataplane.conntrack import ConntrackEnd
from stockade.dataplane.nflog import LoggedPacket
from stockade.model.reports import FlowEnd, FlowRecord
from stockade.model.state import DesiredState
from stockade.model.verdicts import VERDICTS
from stockade.nft.ir import Ruleset

log = logging.getLogger(__name__)

DROP_REASONS = ("queue", "kernel", "ratelimit")
Record = FlowRecord


@dataclass(frozen=True)
class LogSite:
    verdict: str
    direction: str | None
    rule: str


def log_index(ruleset: Ruleset | None) -> dict[str, LogSite]:
    """Log prefix → what logged it, from the program the kernel runs."""
    out: dict[str, LogSite] = {}
    if ruleset is None:
        return out
    for chain in ruleset.chains:
        direction = "egress" if chain.name.endswith("_eg") else "ingress" if chain.name.endswith("_in") else None
        for rule in chain.rules:
            if rule.log is None:
                continue
            site = parse_prefix(rule.log.prefix)
            if site is None:
                continue
            out[rule.log.prefix] = LogSite(site.verdict, direction or site.direction, rule.comment or site.rule)
    return out


def parse_prefix(prefix: str) -> LogSite | None:
    """`stk <verdict> <rule id> ` → LogSite; direction only where the id says it (namespace defaults)."""
    parts = prefix.split()
    if len(parts) != 3 or parts[0] != "stk":
        return None
    verdict, rule = parts[1], parts[2]
    direction = next((d for d in ("egress", "ingress") if rule.endswith(f"/{d}")
                      and ("/default-deny/" in rule or "/default-allow/" in rule)), None)
    return LogSite(verdict, direction, rule)


@dataclass(frozen=True)
class Resolver:
    """Addresses → workloads, from one DesiredState."""

    by_ip: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def from_state(cls, state: DesiredState) -> "Resolver":
        by_ip: dict[str, tuple[str, str]] = {}
        for key in sorted(state.workloads):
            for ip in state.workload_ips(state.workloads[key]):
                by_ip.setdefault(_canon(ip), key)
        return cls(by_ip)

    def endpoint(self, ip: str, port: int | None, names_of: Callable[[str], list[str]] | None = None) -> FlowEnd:
        key = self.by_ip.get(_canon(ip))
        if key is None and names_of is not None:
            return FlowEnd(ip, port, names=tuple(names_of(_canon(ip))))
        return FlowEnd(ip, port, f"{key[0]}/{key[1]}" if key else None, key[0] if key else None)


def _canon(ip: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def to_record(pkt: LoggedPacket, host: str, index: Mapping[str, LogSite], resolver: Resolver,
              now: float, names_of: Callable[[str], list[str]] | None = None) -> Record | None:
    """One logged packet as a flow record (None when the prefix is not one of ours)."""
    site = index.get(pkt.prefix) or parse_prefix(pkt.prefix)
    if site is None or site.direction is None or site.verdict not in VERDICTS:
        return None
    return FlowRecord(
        time=_iso(pkt.timestamp if pkt.timestamp is not None else now),
        host=host,
        direction=site.direction,
        verdict=site.verdict,
        rule=site.rule,
        protocol=pkt.protocol,
        family=pkt.family,
        src=resolver.endpoint(pkt.src, pkt.sport),
        dst=resolver.endpoint(pkt.dst, pkt.dport, names_of),
        icmp_type=pkt.icmp_type,
        event="start",
    )


# Verdicts whose connections get an end record: the deciding allow (audit and log rules
# only record, and a later deciding rule logs the same connection again).
TRACKED_VERDICTS = frozenset({"allow"})
ConnKey = tuple[Any, ...]   # (protocol, src ip, src port, dst ip, dst port, icmp type)


def conn_key(protocol: str, src: str, sport: int | None, dst: str, dport: int | None,
             icmp_type: int | None) -> ConnKey:
    """A connection's original-direction 5-tuple (and ICMP type: pings have no ports)."""
    return (protocol, _canon(src), sport, _canon(dst), dport, icmp_type)


def record_key(record: Record) -> ConnKey:
    src, dst = record.src, record.dst
    return conn_key(record.protocol, src.ip, src.port, dst.ip, dst.port, record.icmp_type)


def end_key(end: ConntrackEnd) -> ConnKey:
    return conn_key(end.protocol, end.src, end.sport, end.dst, end.dport, end.icmp_type)


def _sum(a: int | None, b: int | None) -> int | None:
    return None if a is None and b is None else (a or 0) + (b or 0)


def to_end_record(start: Record, end: ConntrackEnd, now: float) -> Record:
    """The start record again, as the connection's end: its time and its counters."""
    return replace(start, time=_iso(end.timestamp if end.timestamp is not None else now), event="end",
                   packets=_sum(end.packets, end.reply_packets), bytes=_sum(end.bytes, end.reply_bytes),
                   reply_packets=end.reply_packets, reply_bytes=end.reply_bytes)


class FlowMetrics(Protocol):
    def flow_recorded(self, verdict: str) -> None: ...
    def flow_dropped(self, reason: str, count: int) -> None: ...


# A connection attempt repeated within this many seconds is the same connection.
REPEAT_WINDOW = 30.0
RECENT_KEYS = 16_384


class FlowRecorder:
    """Thread-safe: `offer` runs in the reader thread, `take` in the loop, `update` in the
    reconcile step's worker thread (only `offer` reads and builds the lookups that `update`
    hands over)."""

    def __init__(self, host: str, capacity: int = 10_000, metrics: FlowMetrics | None = None,
                 clock: Callable[[], float] | None = None,
                 names_of: Callable[[str], list[str]] | None = None) -> None:
        self.host = host
        self.names_of = names_of  # an outside address -> the names learned for it (agent.fqdn_learning)
        self.capacity = capacity
        self.metrics = metrics
        self.clock = clock or unix_time  # wall time: records are stamped with it (stockade.clock)
        self._lock = threading.Lock()
        self._queue: collections.deque[Record] = collections.deque()
        self._index: Mapping[str, LogSite] = {}
        self._resolver = Resolver()
        self._pending: tuple[DesiredState, Ruleset | None] | None = None  # see update()
        self.unknown = 0                       # packets whose prefix is not ours
        self.dropped = dict.fromkeys(DROP_REASONS, 0)   # not yet shipped, by reason
        self._carried = 0                      # dropped counts of a batch that failed to send
        self._recent: collections.OrderedDict[tuple[Any, ...], float] = collections.OrderedDict()
        self.repeats = 0                       # retransmissions folded into an earlier record
        # allowed starts awaiting their end: 5-tuple → {direction: record}; LRU, at most RECENT_KEYS
        self._open: collections.OrderedDict[ConnKey, dict[str, Record]] = collections.OrderedDict()
        self.unmatched_ends = 0                # conntrack ends of connections not recorded as allowed

    def update(self, state: DesiredState, ruleset: Ruleset | None) -> None:
        # The lookups are built when the next logged packet needs them, in the reader's thread,
        # not on every change: they are a pass over every workload's addresses and every rule,
        # and a burst of changes (or a large fleet) would pay it each time (docs/performance.md).
        self._pending = (state, ruleset)

    def _lookups(self) -> tuple[Mapping[str, LogSite], "Resolver"]:
        pending = self._pending
        if pending is not None:
            state, ruleset = pending
            self._index, self._resolver = log_index(ruleset), Resolver.from_state(state)
            if self._pending is pending:  # a newer update stays pending for the next packet
                self._pending = None
        return self._index, self._resolver

    def _seen_recently(self, record: Record, now: float) -> bool:
        """A retransmission of a connection attempt we already recorded (a dropped SYN is
        retried with the same 5-tuple and never gets a conntrack entry): one record per
        connection, not per packet. Bounded: the oldest keys are forgotten first."""
        src, dst = record.src, record.dst
        key = (record.direction, record.rule, record.verdict, record.protocol,
               src.ip, src.port, dst.ip, dst.port, record.icmp_type)
        recent = self._recent
        seen = recent.get(key)
        recent[key] = now
        recent.move_to_end(key)
        while len(recent) > RECENT_KEYS:
            recent.popitem(last=False)
        return seen is not None and now - seen < REPEAT_WINDOW

    def offer(self, pkt: LoggedPacket) -> None:
        now = self.clock()
        index, resolver = self._lookups()
        record = to_record(pkt, self.host, index, resolver, now, self.names_of)
        if record is None:
            self.unknown += 1
            return
        if self._seen_recently(record, now):
            self.repeats += 1
            return
        if record.verdict in TRACKED_VERDICTS:
            self._remember(record)
        self._enqueue(record)

    def _remember(self, record: Record) -> None:
        key = record_key(record)
        with self._lock:
            opened = self._open.get(key)
            if opened is None:
                opened = self._open[key] = {}
            opened[record.direction] = record
            self._open.move_to_end(key)
            while len(self._open) > RECENT_KEYS:
                self._open.popitem(last=False)

    def offer_end(self, end: ConntrackEnd) -> None:
        """A connection conntrack destroyed: an end record per allowed start of it (none if unknown)."""
        with self._lock:
            opened = self._open.pop(end_key(end), None)
        if opened is None:
            with self._lock:
                self.unmatched_ends += 1
            return
        now = self.clock()
        for direction in sorted(opened):
            self._enqueue(to_end_record(opened[direction], end, now))

    def open_connections(self) -> int:
        return len(self._open)

    def _enqueue(self, record: Record) -> None:
        with self._lock:
            full = len(self._queue) >= self.capacity
            if full:
                self.dropped["queue"] += 1
            else:
                self._queue.append(record)
        if self.metrics is not None:
            if full:
                self.metrics.flow_dropped("queue", 1)
            else:
                self.metrics.flow_recorded(record.verdict)

    def count_dropped(self, reason: str, count: int) -> None:
        if count <= 0:
            return
        with self._lock:
            self.dropped[reason] += count
        if self.metrics is not None:
            self.metrics.flow_dropped(reason, count)

    def take(self, limit: int) -> tuple[list[Record], int]:
        """Up to `limit` records and the number dropped since the last take (then reset)."""
        with self._lock:
            batch = [self._queue.popleft() for _ in range(min(limit, len(self._queue)))]
            dropped = sum(self.dropped.values()) + self._carried
            self.dropped = dict.fromkeys(DROP_REASONS, 0)
            self._carried = 0
        return batch, dropped

    def give_back(self, batch: list[Record], dropped: int) -> None:
        """A batch that could not be sent goes back in front (what no longer fits is counted)."""
        with self._lock:
            room = max(0, self.capacity - len(self._queue))
            keep = batch[:room]
            self._queue.extendleft(reversed(keep))
            self.dropped["queue"] += len(batch) - len(keep)
            self._carried += dropped            # already in the metrics, by reason
        if self.metrics is not None and len(batch) > len(keep):
            self.metrics.flow_dropped("queue", len(batch) - len(keep))

    def __len__(self) -> int:
        return len(self._queue)


class FlowSink(Protocol):
    def send_flows(self, host: str, records: list[Record], dropped: int) -> Any: ...


class FlowShipper:
    """Sends what the recorder holds every `interval` seconds, in batches of at most `batch`."""

    def __init__(self, recorder: FlowRecorder, client: FlowSink, host: str, interval: float = 0.2,
                 batch: int = 2_000, poll_dropped: Callable[[], dict[str, int]] | None = None,
                 poll_interval: float = 1.0, clock: Callable[[], float] | None = None) -> None:
        self.recorder = recorder
        self.client = client
        self.host = host
        self.interval = interval
        self.batch = batch
        self.poll_dropped = poll_dropped  # counts from the kernel side, since the last call
        # Drop counts are read at most this often: reading them is a hop to a worker thread,
        # which at every 0.2 s round was most of an idle agent's CPU.
        self.poll_interval = poll_interval
        self.clock = clock or _monotonic
        self._polled_at: float | None = None
        self.sent = 0

    async def ship_once(self) -> int:
        """One round: collect kernel-side drop counts (when due), send until the queue is empty;
        records sent."""
        now = self.clock()
        if self.poll_dropped is not None and (self._polled_at is None or now - self._polled_at >= self.poll_interval):
            self._polled_at = now
            try:
                counts = await asyncio.to_thread(self.poll_dropped)
            except Exception as e:  # noqa: BLE001 - a failed read must not stop shipping
                log.debug("reading flow drop counters failed: %r", e)
                counts = {}
            for reason, n in counts.items():
                self.recorder.count_dropped(reason, n)
        sent = 0
        while True:
            records, dropped = self.recorder.take(self.batch)
            if not records and not dropped:
                return sent
            try:
                await asyncio.to_thread(self.client.send_flows, self.host, records, dropped)
            except Exception as e:  # noqa: BLE001 - the controller may be down: keep, retry later
                log.debug("sending %d flow records failed: %r", len(records), e)
                self.recorder.give_back(records, dropped)
                return sent
            sent += len(records)
            self.sent += len(records)
            if len(records) < self.batch:
                return sent

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.interval)  # a plain sleep: no task per round, as wait_for makes
            await self.ship_once()  # also once after `stop`: what was recorded is still sent


def _monotonic() -> float:
    import time

    return time.monotonic()


class CounterDelta:
    """Growth of a kernel counter between calls; a counter that went down was recreated
    (the table was replaced), so its whole value is new."""

    def __init__(self, read: Callable[[], int | None], min_interval: float = 0.0,
                 clock: Callable[[], float] | None = None) -> None:
        self.read = read
        self.last = 0
        # Reading the kernel costs a netlink dump; the shipper asks five times a second, but a
        # drop count a few seconds late is as good. 0: read on every call.
        self.min_interval = min_interval
        self._clock = clock or _monotonic
        self._read_at: float | None = None

    def __call__(self) -> int:
        now = self._clock()
        if self._read_at is not None and now - self._read_at < self.min_interval:
            return 0
        self._read_at = now
        value = self.read()
        if value is None:
            return 0
        delta = value - self.last if value >= self.last else value
        self.last = value
        return delta


class FlowPipeline:
    """The agent's flow machinery: an NFLOG reader thread, a conntrack DESTROY reader thread
    (optional), the recorder, the shipper task.

    `run` never raises: when a reader cannot be opened (another reader holds the group, no
    privileges) it logs and retries, each reader on its own, and the agent goes on enforcing
    regardless.
    """

    def __init__(self, reader_factory: Callable[[], Any], recorder: FlowRecorder, shipper: FlowShipper,
                 retry_interval: float = 5.0, conntrack_factory: Callable[[], Any] | None = None) -> None:
        self.reader_factory = reader_factory
        self.conntrack_factory = conntrack_factory
        self.recorder = recorder
        self.shipper = shipper
        self.retry_interval = retry_interval
        self._reader: Any = None
        self._conntrack: Any = None
        self._kernel_seen = 0
        self._conntrack_seen = 0

    def update(self, state: DesiredState, ruleset: Ruleset | None) -> None:
        self.recorder.update(state, ruleset)

    def kernel_lost(self) -> int:
        """Records the kernel could not deliver since the last call: NFLOG sequence gaps, and
        conntrack socket overruns (ENOBUFS, one each)."""
        lost = 0
        reader = self._reader
        if reader is not None:
            lost += max(0, reader.lost - self._kernel_seen)
            self._kernel_seen = reader.lost
        ct = self._conntrack
        if ct is not None:
            lost += max(0, ct.lost - self._conntrack_seen)
            self._conntrack_seen = ct.lost
        return lost

    async def _open(self, factory: Callable[[], Any], what: str, stop: asyncio.Event) -> Any:
        """The opened reader, retrying until it opens; None when stopped first."""
        while not stop.is_set():
            try:
                return await asyncio.to_thread(lambda: factory().open())
            except Exception as e:  # noqa: BLE001 - flows are best effort; enforcement is not
                log.error("cannot read %s: %r; retrying in %.0f s", what, e, self.retry_interval)
                try:
                    await asyncio.wait_for(stop.wait(), self.retry_interval)
                except asyncio.TimeoutError:
                    pass
        return None

    async def run(self, stop: asyncio.Event) -> None:
        thread_stop = threading.Event()
        threads: list[threading.Thread] = []
        shipper = asyncio.create_task(self.shipper.run(stop))

        async def start(factory: Callable[[], Any], what: str, attr: str, sink: Callable[[Any], None],
                        name: str) -> None:
            reader = await self._open(factory, what, stop)
            if reader is None:
                return
            setattr(self, attr, reader)
            thread = threading.Thread(target=reader.run, args=(thread_stop, sink), name=name, daemon=True)
            threads.append(thread)
            thread.start()

        openers = [asyncio.create_task(start(self.reader_factory, "flow logs", "_reader", self.recorder.offer,
                                             "nflog-reader"))]
        if self.conntrack_factory is not None:
            openers.append(asyncio.create_task(start(self.conntrack_factory, "conntrack events", "_conntrack",
                                                     self.recorder.offer_end, "conntrack-reader")))
        try:
            await stop.wait()
        finally:
            thread_stop.set()
            for task in openers:
                task.cancel()
            await asyncio.gather(*openers, return_exceptions=True)
            # Together: each notices `thread_stop` within its read's poll (1 s).
            await asyncio.gather(*(asyncio.to_thread(thread.join, 2.0) for thread in threads))
            for reader in (self._reader, self._conntrack):
                if reader is not None:
                    reader.close()
            shipper.cancel()
            await asyncio.gather(shipper, return_exceptions=True)
