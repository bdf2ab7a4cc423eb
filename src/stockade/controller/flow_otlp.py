"""Flow records as OpenTelemetry logs: each accepted record becomes one OTLP LogRecord, sent in
batches over HTTP/protobuf to a collector (`--otlp-endpoint http://collector:4318/v1/logs`).
Schema (attribute names, severities): docs/flows.md.

The OpenTelemetry SDK does the batching and the sending (`BatchLogRecordProcessor` in its own
thread, `OTLPLogExporter`). In front of it sits `_Bounded`, which holds the number of records
emitted but not yet exported below the SDK's queue size, so that a record that does not fit is
refused here and counted instead of being pushed off the SDK's queue silently.

Invariants:
- `write` never blocks on the network and never raises for it: it only appends to a bounded
  queue. A collector that is down or slow costs records (counted in `dropped`: refused for a
  full queue, or in a batch the exporter gave up on), never ingestion time.
- Attributes are the record's fields under stable names (OpenTelemetry semantic conventions
  where one exists: `source.address`, `destination.port`, `network.transport`, ...; the
  rest under `stockade.`), never anything but what the record carries (no secrets).
- The SDK's global providers are left alone: this logger provider is private to the sink.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any, Mapping, Sequence

from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import (BatchLogRecordProcessor, LogRecordExporter,
                                            LogRecordExportResult)
from opentelemetry.sdk.resources import Resource

from stockade.model.verdicts import is_denied

SERVICE_NAME = "stockade-controller"
SCOPE = "stockade.flows"
DEFAULT_QUEUE = 8192
DEFAULT_BATCH = 512
DEFAULT_DELAY_MS = 1000
DEFAULT_TIMEOUT_S = 5.0


def attributes(line: Mapping[str, Any]) -> dict[str, Any]:
    """A flow line's fields, flat, under the names docs/flows.md lists. None values are left out
    (OTLP has no null attribute)."""
    src, dst = line.get("src") or {}, line.get("dst") or {}
    flat: dict[str, Any] = {
        "stockade.seq": line.get("seq"),
        "stockade.host": line.get("host"),
        "stockade.direction": line.get("direction"),
        "stockade.verdict": line.get("verdict"),
        "stockade.rule": line.get("rule"),
        "stockade.event": line.get("event"),
        "stockade.received": line.get("received"),
        "network.transport": line.get("protocol"),
        "network.type": f"ipv{line['family']}" if line.get("family") in (4, 6) else None,
        "source.address": src.get("ip"),
        "source.port": src.get("port"),
        "stockade.source.workload": src.get("workload"),
        "stockade.source.namespace": src.get("namespace"),
        "destination.address": dst.get("ip"),
        "destination.port": dst.get("port"),
        "stockade.destination.workload": dst.get("workload"),
        "stockade.destination.namespace": dst.get("namespace"),
        "stockade.icmp.type": line.get("icmpType"),
        "stockade.packets": line.get("packets"),
        "stockade.bytes": line.get("bytes"),
        "stockade.reply.packets": line.get("replyPackets"),
        "stockade.reply.bytes": line.get("replyBytes"),
    }
    if src.get("names"):
        flat["stockade.source.names"] = list(src["names"])
    if dst.get("names"):
        flat["stockade.destination.names"] = list(dst["names"])
    return {k: v for k, v in flat.items() if v is not None}


def severity(verdict: str) -> tuple[SeverityNumber, str]:
    """Denied (deny, reject, would-deny, would-reject): WARN; everything else: INFO."""
    return (SeverityNumber.WARN, "WARN") if is_denied(verdict) else (SeverityNumber.INFO, "INFO")


def body(line: Mapping[str, Any]) -> str:
    """One short line a person reads in the SIEM: `deny tcp shop/web-1 198.18.0.2:40000 -> ...`."""
    def end(e: Mapping[str, Any]) -> str:
        where = f"{e.get('ip')}:{e['port']}" if e.get("port") is not None else str(e.get("ip"))
        return f"{e['workload']} {where}" if e.get("workload") else where
    return (f"{line.get('verdict')} {line.get('protocol')} {end(line.get('src') or {})} -> "
            f"{end(line.get('dst') or {})} by {line.get('rule')}")


def _nanos(iso: str | None) -> int | None:
    if not iso:
        return None
    try:
        return int(datetime.fromisoformat(iso).timestamp() * 1_000_000_000)
    except ValueError:
        return None


class _Counting(LogRecordExporter):
    """The OTLP exporter, counting what it delivered and what it gave up on, and telling the
    bound how many records left the pipeline."""

    def __init__(self, inner: LogRecordExporter, sink: "OtlpFlowSink") -> None:
        self._inner = inner
        self._sink = sink

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        try:
            result = self._inner.export(batch)
        except Exception:  # the exporter's own bug: count the batch as lost, keep the thread alive
            result = LogRecordExportResult.FAILURE
        self._sink._done(len(batch), ok=result == LogRecordExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class _Bounded(LogRecordProcessor):
    """Forwards a record to the batch processor only while fewer than `limit` are on their way."""

    def __init__(self, inner: LogRecordProcessor, sink: "OtlpFlowSink") -> None:
        self._inner = inner
        self._sink = sink

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        if self._sink._admit():
            self._inner.on_emit(log_record)

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class OtlpFlowSink:
    """A `FlowSink` (controller.flows) sending each record as an OTLP log to `endpoint`."""

    name = "otlp"

    def __init__(self, endpoint: str, cluster_id: str, *, queue: int = DEFAULT_QUEUE, batch: int = DEFAULT_BATCH,
                 delay_ms: int = DEFAULT_DELAY_MS, timeout: float = DEFAULT_TIMEOUT_S,
                 exporter: LogRecordExporter | None = None) -> None:
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"--otlp-endpoint {endpoint!r}: expected an http:// or https:// URL "
                             "(e.g. http://collector:4318/v1/logs)")
        self.endpoint = endpoint
        self._limit = queue
        self._lock = threading.Lock()
        self._in_flight = 0
        self._sent = 0
        self._dropped = 0
        self._provider = LoggerProvider(resource=Resource.create(
            {"service.name": SERVICE_NAME, "stockade.cluster_id": cluster_id}))
        inner = exporter if exporter is not None else OTLPLogExporter(endpoint=endpoint, timeout=timeout)
        # The SDK's queue is one larger than ours: the bound refuses before the SDK would drop.
        batcher = BatchLogRecordProcessor(_Counting(inner, self), schedule_delay_millis=delay_ms,
                                          max_export_batch_size=min(batch, queue), max_queue_size=queue + 1)
        self._provider.add_log_record_processor(_Bounded(batcher, self))
        self._logger = self._provider.get_logger(SCOPE)

    def write(self, lines: Sequence[dict[str, Any]]) -> None:
        for line in lines:
            number, text = severity(str(line.get("verdict")))
            self._logger.emit(timestamp=_nanos(line.get("time")), observed_timestamp=_nanos(line.get("received")),
                              severity_number=number, severity_text=text, body=body(line),
                              attributes=attributes(line), event_name="stockade.flow")

    def counts(self) -> tuple[int, int]:
        """(records the collector accepted, records dropped: queue full or export given up)."""
        with self._lock:
            return self._sent, self._dropped

    def flush(self, timeout_millis: int = 10_000) -> bool:
        return self._provider.force_flush(timeout_millis)

    def close(self) -> None:
        self._provider.shutdown()

    def _admit(self) -> bool:
        with self._lock:
            if self._in_flight >= self._limit:
                self._dropped += 1
                return False
            self._in_flight += 1
            return True

    def _done(self, n: int, ok: bool) -> None:
        with self._lock:
            self._in_flight = max(0, self._in_flight - n)
            if ok:
                self._sent += n
            else:
                self._dropped += n
