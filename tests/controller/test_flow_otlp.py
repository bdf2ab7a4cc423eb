"""The OTLP logs exporter of flow records, against a real HTTP receiver this test starts (a small
http.server that decodes ExportLogsServiceRequest with opentelemetry-proto): the attributes,
severity and resource of real records, and ingestion that goes on while the collector hangs."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from dataclasses import replace
from typing import Any, Iterator

import httpx
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (ExportLogsServiceRequest,
                                                                     ExportLogsServiceResponse)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from stockade.client import ControllerClient
from stockade.controller.config import ControllerConfig
from stockade.controller.flow_otlp import OtlpFlowSink
from stockade.controller.main import RunningController
from tests.controller.test_flows import metrics, record
from tests.waiting import wait_until


def value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


class Receiver:
    """An OTLP/HTTP logs endpoint: keeps every decoded LogRecord with its resource's attributes."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        received = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportLogsServiceRequest.FromString(body)
                with received.lock:
                    for rl in request.resource_logs:
                        resource = {a.key: value(a.value) for a in rl.resource.attributes}
                        for sl in rl.scope_logs:
                            for lr in sl.log_records:
                                received.records.append({
                                    "path": self.path, "content_type": self.headers["Content-Type"],
                                    "resource": resource, "scope": sl.scope.name,
                                    "time": lr.time_unix_nano, "severity": lr.severity_text,
                                    "severity_number": lr.severity_number, "body": value(lr.body),
                                    "attributes": {a.key: value(a.value) for a in lr.attributes}})
                answer = ExportLogsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/logs"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def got(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.records)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
def hanging() -> Iterator[str]:
    """A collector that accepts connections and never answers (down in the worst way)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1/logs"
    finally:
        sock.close()


class TestAgainstAReceiver:
    @pytest.fixture
    def config(self, config: ControllerConfig, receiver: Receiver) -> ControllerConfig:
        return replace(config, otlp_endpoint=receiver.url)

    def test_each_record_is_one_log_record_with_its_fields_as_attributes(
            self, agent: ControllerClient, receiver: Receiver, controller: RunningController,
            admin: ControllerClient) -> None:
        agent.send_flows("hv1", [record("allow", event="end", packets=12, bytes=10500, replyPackets=5,
                                        replyBytes=9000),
                                 record("would-deny", dst=None, port=443, time_="2026-11-24T10:00:01Z")])
        got = wait_until(lambda: receiver.got() if len(receiver.got()) >= 2 else None,
                         "2 log records at the receiver", timeout=20, describe=receiver.got)
        allow, denied = got
        assert allow["path"] == "/v1/logs" and allow["content_type"] == "application/x-protobuf"
        assert allow["resource"]["service.name"] == "stockade-controller"
        cluster_id = httpx.get(f"{controller.url}/healthz").json()["clusterId"]
        assert cluster_id and allow["resource"]["stockade.cluster_id"] == cluster_id
        assert allow["scope"] == "stockade.flows"
        assert allow["time"] == 1795514400 * 10**9  # 2026-11-24T10:00:00Z, the record's own time
        assert (allow["severity"], denied["severity"]) == ("INFO", "WARN")
        assert allow["body"] == ("allow tcp shop/web-1 198.18.10.11:40000 -> shop/db-1 198.18.10.12:5432 "
                                 "by shop/web-egress/to-db")
        a = allow["attributes"]
        assert {k: a[k] for k in ("stockade.seq", "stockade.host", "stockade.verdict", "stockade.rule",
                                  "stockade.direction", "stockade.event", "network.transport", "network.type",
                                  "source.address", "source.port", "destination.address", "destination.port",
                                  "stockade.source.workload", "stockade.destination.namespace",
                                  "stockade.packets", "stockade.bytes", "stockade.reply.packets",
                                  "stockade.reply.bytes")} == {
            "stockade.seq": 1, "stockade.host": "hv1", "stockade.verdict": "allow",
            "stockade.rule": "shop/web-egress/to-db", "stockade.direction": "egress", "stockade.event": "end",
            "network.transport": "tcp", "network.type": "ipv4", "source.address": "198.18.10.11",
            "source.port": 40000, "destination.address": "198.18.10.12", "destination.port": 5432,
            "stockade.source.workload": "shop/web-1", "stockade.destination.namespace": "shop",
            "stockade.packets": 12, "stockade.bytes": 10500, "stockade.reply.packets": 5,
            "stockade.reply.bytes": 9000}
        d = denied["attributes"]
        assert d["stockade.verdict"] == "would-deny" and "stockade.destination.workload" not in d
        assert d["destination.port"] == 443 and d["stockade.seq"] == 2
        wait_until(lambda: metrics(controller).get("stockade_controller_flow_sink_records_total[('sink', 'otlp')]") == 2,
                   "the otlp sink counted 2 delivered", timeout=10, describe=lambda: metrics(controller))


class TestAgainstACollectorThatHangs:
    @pytest.fixture
    def config(self, config: ControllerConfig, hanging: str) -> ControllerConfig:
        return replace(config, otlp_endpoint=hanging)

    def test_ingestion_goes_on_at_full_speed_and_the_loss_is_counted(
            self, agent: ControllerClient, admin: ControllerClient, controller: RunningController) -> None:
        took = []
        for i in range(20):
            start = time.monotonic()
            agent.send_flows("hv1", [record("deny", port=1000 + i)] * 50)
            took.append(time.monotonic() - start)
        # The exporter waits up to 5 s on the collector; ingestion must never wait for it.
        assert max(took) < 1.0, took
        assert admin.flows(limit=1)["lastSeq"] == 1000
        # The exporter gives up on the batch it was sending (its 5 s timeout): counted as dropped.
        wait_until(lambda: metrics(controller).get("stockade_controller_flow_sink_dropped_total[('sink', 'otlp')]", 0) >= 1,
                   "otlp records counted as dropped", timeout=30, describe=lambda: metrics(controller))


def test_a_full_queue_refuses_and_counts_instead_of_waiting(hanging: str) -> None:
    sink = OtlpFlowSink(hanging, "cluster-x", queue=4, batch=4, delay_ms=60_000, timeout=1.0)
    try:
        line = {"seq": 1, "time": "2026-11-24T10:00:00+00:00", "verdict": "deny", "protocol": "tcp",
                "family": 4, "src": {"ip": "198.18.0.1"}, "dst": {"ip": "198.18.0.2", "port": 22},
                "rule": "a/b/c", "received": "2026-11-24T10:00:00+00:00"}
        start = time.monotonic()
        sink.write([line] * 10)
        assert time.monotonic() - start < 0.5
        assert sink.counts() == (0, 6)  # 4 on their way to a collector that hangs; 6 refused at once
        wait_until(lambda: sink.counts() == (0, 10), "the hanging batch counted as dropped", timeout=20,
                   describe=sink.counts)
    finally:
        sink.close()


def test_an_endpoint_that_is_no_url_is_refused() -> None:
    with pytest.raises(ValueError, match="--otlp-endpoint 'collector:4318'"):
        OtlpFlowSink("collector:4318", "c")
