"""model.reports: the flow record and the agent report are one type each, and `to_dict` is the wire
JSON byte for byte (the agent sends it, the API validates and serves it, the CLI prints it)."""

from __future__ import annotations

import json
from dataclasses import replace

from stockade.controller.schemas import AgentStatusRequest, FlowRecord as FlowRecordSchema
from stockade.model.reports import AgentReport, Endpoint, FlowEnd, FlowRecord, NotProgrammed, RuleCount

START = FlowRecord(time="2030-01-01T00:00:00.250Z", host="hv1", direction="ingress", verdict="would-deny",
                   rule="shop/db/from-web", protocol="tcp", family=4,
                   src=FlowEnd("198.18.1.10", 40000, "shop/web-1", "shop"), dst=FlowEnd("198.18.2.20", 5432))
END = replace(START, verdict="allow", time="2030-01-01T00:00:09.000Z", event="end", packets=12, bytes=10500,
              reply_packets=5, reply_bytes=9000)


def test_a_start_record_is_the_json_an_agent_has_always_sent() -> None:
    assert json.dumps(START.to_dict(), separators=(",", ":")) == (
        '{"time":"2030-01-01T00:00:00.250Z","host":"hv1","direction":"ingress","verdict":"would-deny",'
        '"rule":"shop/db/from-web","protocol":"tcp","family":4,'
        '"src":{"ip":"198.18.1.10","port":40000,"workload":"shop/web-1","namespace":"shop"},'
        '"dst":{"ip":"198.18.2.20","port":5432,"workload":null,"namespace":null},"icmpType":null,"event":"start"}')


def test_an_end_record_adds_its_counts_after_the_start_keys() -> None:
    wire = END.to_dict()
    assert list(wire)[-5:] == ["event", "packets", "bytes", "replyPackets", "replyBytes"]
    assert (wire["packets"], wire["bytes"], wire["replyPackets"], wire["replyBytes"]) == (12, 10500, 5, 9000)


def test_flow_records_round_trip_through_their_wire_form() -> None:
    for record in (START, END, replace(START, protocol="icmp", icmp_type=8, src=FlowEnd("2001:db8::1"),
                                       dst=FlowEnd("2001:db8::2"), family=6)):
        assert FlowRecord.from_dict(record.to_dict()) == record
        assert FlowRecord.from_dict(record.to_dict(counts=True)) == record


def test_an_older_agents_record_without_event_or_counts_reads_as_a_start() -> None:
    wire = START.to_dict()
    del wire["event"]
    assert FlowRecord.from_dict(wire) == START


def test_what_the_api_serves_is_the_validated_record_whole() -> None:
    # The controller keeps FlowRecords and serves `to_dict(counts=True)`: the same keys, order and
    # values as the schema's dump of what the agent sent (null counts on a start).
    for record in (START, END):
        validated = FlowRecordSchema.model_validate(record.to_dict()).model_dump()
        stored = FlowRecord.from_dict(validated)
        assert json.dumps(stored.to_dict(counts=True)) == json.dumps(validated)


def test_an_agent_report_round_trips_and_passes_the_api_schema() -> None:
    report = AgentReport(revision=7, program_hash="abc", applied_at="2030-01-01T00:00:00.000+00:00", in_sync=True,
                         endpoints={"shop/web-1": Endpoint("stk-w1", "tap1", "02:00:00:00:00:01"),
                                    "shop/db-1": Endpoint(interface="tap2")},
                         drift_repairs=2, last_drift_at="2030-01-01T00:00:01.000+00:00",
                         not_programmed=(NotProgrammed("shop/odd", "interface tap1 is taken"),),
                         rule_counters={"shop/web/https": {"ingress": RuleCount(3, 180), "egress": RuleCount(1, 60)},
                                        "shop/default-deny/egress": {"egress": RuleCount(2, 120)}},
                         rule_counters_omitted=5)
    wire = report.to_dict()
    assert AgentReport.from_dict(wire) == report
    assert list(wire["endpoints"]) == ["shop/db-1", "shop/web-1"]           # sorted
    assert wire["endpoints"]["shop/db-1"] == {"interface": "tap2"}         # no nulls for what is unknown
    assert wire["notProgrammed"] == [{"object": "shop/odd", "reason": "interface tap1 is taken"}]
    assert wire["ruleCounters"]["shop/web/https"] == {"egress": {"packets": 1, "bytes": 60},
                                                      "ingress": {"packets": 3, "bytes": 180}}
    assert wire["ruleCountersOmitted"] == 5
    assert AgentReport.from_dict(AgentStatusRequest.model_validate(wire).model_dump()) == report
