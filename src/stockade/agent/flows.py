"""Flow records: logged packets → records naming workloads, verdict and rule → the controller.

    kernel rule (log group G, prefix `stk <verdict> <rule id> `)
      └─► NflogReader (a thread)  ─► FlowRecorder.offer: decode, resolve, bounded queue
            └─► FlowShipper (a task of the agent loop): a batch every ~0.5 s
                  └─► client.send_flows(host, records, dropped)

A record (the schema the controller stores and `stockade flows` shows):

    {"time": ISO 8601 UTC, "host", "direction": "egress"|"ingress",
     "verdict": allow|deny|reject|would-allow|would-deny|would-reject|log,
     "rule": "ns/policy/rule-id", "protocol": tcp|udp|sctp|icmp|ipv6-icmp, "family": 4|6,
     "src": {"ip", "port", "workload": "ns/name"|null, "namespace"|null}, "dst": {...},
     "icmpType": int|null}

Direction and full rule id come from the applied Ruleset (`log_index`): the
chain holding a logging rule ends in `_eg` or `_in`, and its comment is the
untruncated rule id (rule ids are unique within a policy across directions, so
a prefix names one direction). Workloads come from the DesiredState the
program was compiled from. Both are swapped in whole by the loop (`update`),
so the reader thread only ever reads an immutable snapshot.

Nothing is lost silently: a full queue drops the new record and counts it
(`queue`); records the kernel could not deliver are counted from NFLOG
sequence gaps (`kernel`); packets decided above the logging rate limit are
counted by the kernel's `flowlog_suppressed` counter (`ratelimit`). The sum is
shipped as `dropped` with the next batch.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

from stockade.dataplane.nflog import LoggedPacket
from stockade.model.state import DesiredState
from stockade.nft.ir import Ruleset

log = logging.getLogger(__name__)

VERDICTS = ("allow", "deny", "reject", "would-allow", "would-deny", "would-reject", "log")
DROP_REASONS = ("queue", "kernel", "ratelimit")
Record = dict[str, Any]


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

    def endpoint(self, ip: str, port: int | None) -> dict[str, Any]:
        key = self.by_ip.get(_canon(ip))
        return {"ip": ip, "port": port, "workload": f"{key[0]}/{key[1]}" if key else None,
                "namespace": key[0] if key else None}


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
              now: float) -> Record | None:
    """One logged packet as a flow record (None when the prefix is not one of ours)."""
    site = index.get(pkt.prefix) or parse_prefix(pkt.prefix)
    if site is None or site.direction is None or site.verdict not in VERDICTS:
        return None
    return {
        "time": _iso(pkt.timestamp if pkt.timestamp is not None else now),
        "host": host,
        "direction": site.direction,
        "verdict": site.verdict,
        "rule": site.rule,
        "protocol": pkt.protocol,
        "family": pkt.family,
        "src": resolver.endpoint(pkt.src, pkt.sport),
        "dst": resolver.endpoint(pkt.dst, pkt.dport),
        "icmpType": pkt.icmp_type,
    }


class FlowMetrics(Protocol):
    def flow_recorded(self, verdict: str) -> None: ...
    def flow_dropped(self, reason: str, count: int) -> None: ...


# A connection attempt repeated within this many seconds is the same connection.
REPEAT_WINDOW = 30.0
RECENT_KEYS = 16_384


class FlowRecorder:
    """Thread-safe: `offer` runs in the reader thread, `take`/`update` in the loop."""

    def __init__(self, host: str, capacity: int = 10_000, metrics: FlowMetrics | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        import time

        self.host = host
        self.capacity = capacity
        self.metrics = metrics
        self.clock = clock or time.time
        self._lock = threading.Lock()
        self._queue: collections.deque[Record] = collections.deque()
        self._index: Mapping[str, LogSite] = {}
        self._resolver = Resolver()
        self.unknown = 0                       # packets whose prefix is not ours
        self.dropped = dict.fromkeys(DROP_REASONS, 0)   # not yet shipped, by reason
        self._carried = 0                      # dropped counts of a batch that failed to send
        self._recent: collections.OrderedDict[tuple[Any, ...], float] = collections.OrderedDict()
        self.repeats = 0                       # retransmissions folded into an earlier record

    def update(self, state: DesiredState, ruleset: Ruleset | None) -> None:
        index, resolver = log_index(ruleset), Resolver.from_state(state)
        self._index, self._resolver = index, resolver   # each a whole, immutable swap

    def _seen_recently(self, record: Record, now: float) -> bool:
        """A retransmission of a connection attempt we already recorded (a dropped SYN is
        retried with the same 5-tuple and never gets a conntrack entry): one record per
        connection, not per packet. Bounded: the oldest keys are forgotten first."""
        src, dst = record["src"], record["dst"]
        key = (record["direction"], record["rule"], record["verdict"], record["protocol"],
               src["ip"], src["port"], dst["ip"], dst["port"], record.get("icmpType"))
        recent = self._recent
        seen = recent.get(key)
        recent[key] = now
        recent.move_to_end(key)
        while len(recent) > RECENT_KEYS:
            recent.popitem(last=False)
        return seen is not None and now - seen < REPEAT_WINDOW

    def offer(self, pkt: LoggedPacket) -> None:
        now = self.clock()
        record = to_record(pkt, self.host, self._index, self._resolver, now)
        if record is None:
            self.unknown += 1
            return
        if self._seen_recently(record, now):
            self.repeats += 1
            return
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
                self.metrics.flow_recorded(record["verdict"])

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

    def __init__(self, recorder: FlowRecorder, client: FlowSink, host: str, interval: float = 0.5,
                 batch: int = 2_000, poll_dropped: Callable[[], dict[str, int]] | None = None) -> None:
        self.recorder = recorder
        self.client = client
        self.host = host
        self.interval = interval
        self.batch = batch
        self.poll_dropped = poll_dropped  # counts from the kernel side, since the last call
        self.sent = 0

    async def ship_once(self) -> int:
        """One round: collect kernel-side drop counts, send until the queue is empty; records sent."""
        if self.poll_dropped is not None:
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
            try:
                await asyncio.wait_for(stop.wait(), self.interval)
            except asyncio.TimeoutError:
                pass
            await self.ship_once()


class CounterDelta:
    """Growth of a kernel counter between calls; a counter that went down was recreated
    (the table was replaced), so its whole value is new."""

    def __init__(self, read: Callable[[], int | None]) -> None:
        self.read = read
        self.last = 0

    def __call__(self) -> int:
        value = self.read()
        if value is None:
            return 0
        delta = value - self.last if value >= self.last else value
        self.last = value
        return delta


class FlowPipeline:
    """The agent's flow machinery: an NFLOG reader thread, the recorder, the shipper task.

    `run` never raises: when the group cannot be bound (another reader holds it, no
    privileges) it logs and retries, and the agent goes on enforcing regardless.
    """

    def __init__(self, reader_factory: Callable[[], Any], recorder: FlowRecorder, shipper: FlowShipper,
                 retry_interval: float = 5.0) -> None:
        self.reader_factory = reader_factory
        self.recorder = recorder
        self.shipper = shipper
        self.retry_interval = retry_interval
        self._reader: Any = None
        self._kernel_seen = 0

    def update(self, state: DesiredState, ruleset: Ruleset | None) -> None:
        self.recorder.update(state, ruleset)

    def kernel_lost(self) -> int:
        """Records the kernel could not deliver since the last call (NFLOG sequence gaps)."""
        reader = self._reader
        if reader is None:
            return 0
        lost, self._kernel_seen = reader.lost - self._kernel_seen, reader.lost
        return max(0, lost)

    async def run(self, stop: asyncio.Event) -> None:
        thread_stop = threading.Event()
        thread: threading.Thread | None = None
        shipper = asyncio.create_task(self.shipper.run(stop))
        try:
            while not stop.is_set() and thread is None:
                try:
                    self._reader = await asyncio.to_thread(lambda: self.reader_factory().open())
                except Exception as e:  # noqa: BLE001 - flows are best effort; enforcement is not
                    log.error("cannot read flow logs: %r; retrying in %.0f s", e, self.retry_interval)
                    try:
                        await asyncio.wait_for(stop.wait(), self.retry_interval)
                    except asyncio.TimeoutError:
                        pass
                    continue
                thread = threading.Thread(target=self._reader.run, args=(thread_stop, self.recorder.offer),
                                          name="nflog-reader", daemon=True)
                thread.start()
            await stop.wait()
        finally:
            thread_stop.set()
            if thread is not None:
                await asyncio.to_thread(thread.join, 2.0)
            if self._reader is not None:
                self._reader.close()
            shipper.cancel()
            await asyncio.gather(shipper, return_exceptions=True)
