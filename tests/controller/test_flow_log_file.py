"""The flow log's pure parts: the JSON-lines file (rotation, reading back, a torn last line, a disk
that fails), the ring's restore (seqs go on), and filter matching (`FlowQuery`, `EndFilter`)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from stockade.controller.flow_file import FlowFile, read_newest, rotated
from stockade.controller.flows import EndFilter, FlowLog, FlowQuery, parse_protocol, parse_verdicts
from stockade.errors import ValidationError
from stockade.model.reports import FlowRecord
from tests.controller.test_flows import record

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)


def line(seq: int, **extra: Any) -> dict[str, Any]:
    doc = record(**extra)
    doc["time"] = "2026-11-24T10:00:00.000000+00:00"
    return {"seq": seq, **FlowRecord.from_dict(doc).to_dict(counts=True), "received": T0.isoformat()}


def written(path: Path) -> list[int]:
    return [json.loads(x)["seq"] for x in path.read_text().splitlines()]


# ------------------------------------------------------------------ the file


def test_rotation_keeps_n_files_each_under_the_limit_and_drops_the_oldest(tmp_path: Path) -> None:
    path = tmp_path / "flows.jsonl"
    size = len(json.dumps(line(10), separators=(",", ":")).encode()) + 1  # seqs 10-54: lines of one size
    sink = FlowFile(path, max_bytes=size * 10, keep=2)
    for seq in range(10, 55):  # 4.5 files' worth
        sink.write([line(seq)])
    sink.close()
    assert written(path) == list(range(50, 55))
    assert written(rotated(path, 1)) == list(range(40, 50))
    assert written(rotated(path, 2)) == list(range(30, 40))
    assert not rotated(path, 3).exists()  # the oldest (10-29) are gone: the disk stays bounded
    for i in range(3):
        assert rotated(path, i).stat().st_size <= size * 10
    assert sink.counts() == (45, 0)
    back = read_newest(path, keep=2, limit=1000)
    assert [d["seq"] for d in back.lines] == list(range(30, 55)) and back.skipped == 0
    assert [d["seq"] for d in read_newest(path, keep=2, limit=12).lines] == list(range(43, 55))


def test_a_batch_bigger_than_a_file_rotates_between_lines(tmp_path: Path) -> None:
    path = tmp_path / "flows.jsonl"
    size = len(json.dumps(line(10), separators=(",", ":")).encode()) + 1
    sink = FlowFile(path, max_bytes=size * 4, keep=3)
    sink.write([line(seq) for seq in range(10, 20)])
    assert written(path) == [18, 19] and written(rotated(path, 1)) == [14, 15, 16, 17]
    assert written(rotated(path, 2)) == [10, 11, 12, 13]


def test_a_torn_last_line_is_skipped_on_reading_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "flows.jsonl"
    sink = FlowFile(path, keep=1)
    sink.write([line(1), line(2), line(3)])
    sink.close()
    whole = path.read_bytes()
    path.write_bytes(whole + whole.splitlines()[0][:37])  # a crash in the middle of writing seq 4
    back = read_newest(path, keep=1, limit=100)
    assert [d["seq"] for d in back.lines] == [1, 2, 3] and back.skipped == 1
    # The controller that starts again appends after the torn bytes: it ends that line first, so
    # the torn one is the only one lost.
    sink = FlowFile(path, keep=1)
    sink.write([line(4), line(5)])
    back = read_newest(path, keep=1, limit=100)
    assert [d["seq"] for d in back.lines] == [1, 2, 3, 4, 5] and back.skipped == 1


def test_a_disk_that_fails_counts_the_loss_and_writing_resumes(tmp_path: Path, caplog: Any) -> None:
    path = tmp_path / "sub" / "flows.jsonl"
    sink = FlowFile(path)
    sink.write([line(1)])
    sink.close()
    path.unlink()
    path.parent.rmdir()
    path.parent.write_text("a file where the directory was")  # every open now fails (ENOTDIR)
    sink.write([line(2), line(3)])
    sink.write([line(4)])
    assert sink.counts() == (1, 3)
    assert sum("cannot write" in r.getMessage() for r in caplog.records) == 1  # logged once, not per batch
    path.parent.unlink()
    sink.write([line(5)])
    assert sink.counts() == (2, 3) and written(path) == [5]


def test_bad_sizes_are_refused_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="flows.jsonl: max_bytes"):
        FlowFile(tmp_path / "flows.jsonl", max_bytes=10)
    with pytest.raises(ValueError, match="keep must not be negative"):
        FlowFile(tmp_path / "flows.jsonl", keep=-1)


# ------------------------------------------------------------------ the ring


def test_restore_fills_the_ring_with_the_newest_and_seqs_go_on(tmp_path: Path) -> None:
    path = tmp_path / "flows.jsonl"
    first = FlowLog(capacity=5, sinks=[FlowFile(path)], clock=lambda: T0)
    first.add("hv1", [(T0, FlowRecord.from_dict(record(port=p))) for p in range(1, 9)])
    first.close()
    assert written(path) == list(range(1, 9))
    again = FlowLog(capacity=5, sinks=[FlowFile(path)])
    assert again.restore(read_newest(path, 0, 5).lines) == 0
    assert again.last_seq == 8
    page = again.query(FlowQuery())
    assert [e.seq for e in page.records] == [4, 5, 6, 7, 8] and page.first_seq == 4
    assert [e.record.dst.port for e in page.records] == [4, 5, 6, 7, 8]
    assert [e.seq for e in again.query(FlowQuery(since_seq=6)).records] == [7, 8]
    assert again.add("hv1", [(T0, FlowRecord.from_dict(record()))]) == 9
    assert written(path)[-2:] == [8, 9]


def test_since_seq_works_across_a_gap_in_restored_seqs() -> None:
    log = FlowLog(capacity=10)
    log.restore([line(s) for s in (1, 2, 5, 6, 9)] + [{"seq": 7, "time": "not a record"}])
    assert [e.seq for e in log.query(FlowQuery(since_seq=2)).records] == [5, 6, 9]
    assert [e.seq for e in log.query(FlowQuery(since_seq=3)).records] == [5, 6, 9]
    assert [e.seq for e in log.query(FlowQuery(since_seq=6)).records] == [9]
    assert log.query(FlowQuery(since_seq=9)).records == ()


def test_a_failing_sink_never_costs_the_ring_its_records() -> None:
    class Broken:
        name = "broken"

        def write(self, lines: Any) -> None:
            raise RuntimeError("bug")

        def counts(self) -> tuple[int, int]:
            return 0, 0

        def close(self) -> None:
            pass

    log = FlowLog(capacity=10, sinks=[Broken()])
    assert log.add("hv1", [(T0, FlowRecord.from_dict(record()))]) == 1
    assert [e.seq for e in log.query(FlowQuery()).records] == [1]


# ------------------------------------------------------------------ filters


def entries(*docs: dict[str, Any]) -> FlowLog:
    log = FlowLog(capacity=100)
    log.add("hv1", [(T0, FlowRecord.from_dict(d)) for d in docs])
    return log


def seqs(log: FlowLog, **q: Any) -> list[int]:
    return [e.seq for e in log.query(FlowQuery(**q)).records]


def test_filters_by_end_verdict_port_protocol_and_rule() -> None:
    log = entries(record("allow"),                                                          # 1
                  record("deny", src="bank/app", dst="shop/db-1", port=22),                 # 2
                  record("would-deny", src="shop/web-1", dst=None, port=443),               # 3
                  record("reject", protocol="udp", port=53, rule="shop/dns/out"))           # 4
    assert seqs(log, src=EndFilter.parse("from", "bank/app")) == [2]
    assert seqs(log, src=EndFilter.parse("from", "app")) == [2]                 # a bare name: any namespace
    assert seqs(log, dst=EndFilter.parse("to", "db-1")) == [1, 2, 4]
    assert seqs(log, dst=EndFilter.parse("to", "198.18.10.12")) == [1, 2, 3, 4]
    assert seqs(log, src=EndFilter.parse("from", "198.18.10.12")) == []         # that is the dst address
    assert seqs(log, verdicts=parse_verdicts(["deny", "reject"])) == [2, 4]
    assert seqs(log, verdicts=parse_verdicts(["denied"])) == [2, 3, 4]
    assert seqs(log, port=40000) == [1, 2, 3, 4]                                # either end: the source port
    assert seqs(log, port=443) == [3]
    assert seqs(log, protocol=parse_protocol("UDP")) == [4]
    assert seqs(log, rule="shop/dns/out") == [4]
    assert seqs(log, port=22, verdicts=parse_verdicts(["allow"])) == []         # AND


def test_name_filters_match_only_the_view_a_tenant_has() -> None:
    log = entries(record("deny", src="shop/web-1", dst="bank/secret-db", rule="bank/their-policy/their-rule"))
    shop_only = lambda ns: ns == "shop"  # noqa: E731
    assert seqs(log, rule="bank/their-policy/their-rule") == [1]               # an operator sees it
    assert seqs(log, rule="bank/their-policy/their-rule", visible=shop_only) == []
    assert seqs(log, dst=EndFilter.parse("to", "bank/secret-db"), visible=shop_only) == []
    assert seqs(log, dst=EndFilter.parse("to", "secret-db"), visible=shop_only) == []
    # What it is shown, it may filter on.
    assert seqs(log, rule="bank/(hidden)", visible=shop_only) == [1]
    assert seqs(log, dst=EndFilter.parse("to", "198.18.10.12"), visible=shop_only) == [1]
    assert seqs(log, src=EndFilter.parse("from", "shop/web-1"), visible=shop_only) == [1]


@pytest.mark.parametrize("field,value,call", [
    ("query.verdict", "dney", lambda v: parse_verdicts([v])),
    ("query.protocol", "t c p", parse_protocol),
    ("query.from", "a/b/c", lambda v: EndFilter.parse("from", v)),
    ("query.to", "", lambda v: EndFilter.parse("to", v)),
])
def test_bad_filter_values_name_the_field(field: str, value: str, call: Any) -> None:
    with pytest.raises(ValidationError) as e:
        call(value)
    assert field in str(e.value.to_dict())


# ------------------------------------------------------------------ the options


def test_the_flow_log_is_on_beside_a_sqlite_store_and_off_on_request() -> None:
    from stockade.controller.main import flow_config, store_config

    sqlite = store_config("/var/lib/stockade/s.db", None)
    assert flow_config(sqlite, None, None, None, None) == {"flow_log": Path("/var/lib/stockade/s.db.flows.jsonl")}
    assert flow_config(sqlite, "off", None, None, None) == {"flow_log": None}
    assert flow_config(sqlite, "/logs/f.jsonl", 2048, 2, "http://c:4318/v1/logs") == {
        "flow_log": Path("/logs/f.jsonl"), "flow_log_max_bytes": 2048, "flow_log_keep": 2,
        "otlp_endpoint": "http://c:4318/v1/logs"}
    assert flow_config(store_config(None, "etcd://e1:2379"), None, None, None, None) == {}  # replicas: memory


def test_bad_flow_options_name_the_option(tmp_path: Path) -> None:
    from stockade.controller.config import ControllerConfig

    with pytest.raises(ValueError, match="flow_log_max_bytes"):
        ControllerConfig(db_path=tmp_path / "s.db", flow_log_max_bytes=5)
    with pytest.raises(ValueError, match="otlp_endpoint 'collector:4318'"):
        ControllerConfig(db_path=tmp_path / "s.db", otlp_endpoint="collector:4318")
