"""store.etcd_repos without a cluster: how agent reports are cut into etcd transactions.

A report carries its host's rule counters (up to the agent's cap, a few hundred KB), so a burst
of reports is saved in transactions bounded by bytes as well as by operations, each within
etcd's defaults (--max-txn-ops 128, --max-request-bytes 1.5 MiB). The KV here records the
transactions it is asked for; the real cluster's round trip is in test_contract.py."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from typing import Any

from stockade.controller.store.etcd_layout import Layout
from stockade.controller.store.etcd_repos import REPORT_BYTES_PER_TXN, REPORTS_PER_TXN, EtcdAgentReports

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
ETCD_DEFAULT_MAX_REQUEST = 1536 * 1024


class RecordingKV:
    def __init__(self) -> None:
        self.txns: list[list[dict[str, Any]]] = []

    def scan(self, start: bytes, end: bytes, revision: int) -> list[Any]:
        return []

    def txn(self, compare: list[Any], ops: list[dict[str, Any]]) -> Any:
        self.txns.append(ops)
        return None


def _report(host: int, rules: int) -> dict[str, Any]:
    return {"revision": 7, "ruleCounters": {f"ns{host}/policy/rule-{i}": {"ingress": {"packets": i, "bytes": 60 * i}}
                                            for i in range(rules)}}


def _saved(kv: RecordingKV) -> dict[str, dict[str, Any]]:
    out = {}
    for ops in kv.txns:
        for op in ops:
            value = json.loads(base64.b64decode(op["request_put"]["value"]))
            out[value["host"]] = value["report"]
    return out


def test_big_reports_are_saved_in_transactions_within_etcds_default_request_size() -> None:
    kv = RecordingKV()
    reports = EtcdAgentReports(kv, Layout(), flush_delay=60)  # type: ignore[arg-type]
    sent = {f"hv{i}": _report(i, 2_000) for i in range(12)}  # ~120 KB each
    for host, report in sent.items():
        reports.put(host, report, T0)
    reports.flush()
    reports.close()
    assert len(kv.txns) > 1
    for ops in kv.txns:
        assert len(json.dumps(ops)) < ETCD_DEFAULT_MAX_REQUEST
        assert len(ops) <= REPORTS_PER_TXN
    assert _saved(kv) == sent  # every report, whole


def test_small_reports_still_go_a_hundred_to_a_transaction() -> None:
    kv = RecordingKV()
    reports = EtcdAgentReports(kv, Layout(), flush_delay=60)  # type: ignore[arg-type]
    for i in range(150):
        reports.put(f"hv{i}", {"revision": 1}, T0)
    reports.flush()
    reports.close()
    assert [len(ops) for ops in kv.txns] == [100, 50]
    assert REPORT_BYTES_PER_TXN < ETCD_DEFAULT_MAX_REQUEST
