"""Expectation files: parsing, and every bad field named."""

from __future__ import annotations

import pytest

from stockade.errors import PolicyTestFailed, ValidationError
from stockade.policytest import parse_expectations
from tests.policytest.examples import FLOWS, problems_of


def test_example_flows_file_is_an_expectation_file() -> None:
    entries = parse_expectations(FLOWS.read_text(), "flows.yaml")
    assert len(entries) == 13
    first = entries[0]
    assert (first.src, first.dst, first.protocol, first.port, first.family, first.expect) == \
        (("shop", "lb-1"), ("shop", "web-1"), "tcp", 8080, 4, "allow")
    ping = next(e for e in entries if e.protocol == "icmp")
    assert ping.port is None and ping.icmp_type is None
    assert [e.index for e in entries] == list(range(1, 14))


def test_multi_document_file_with_lists_and_single_entries() -> None:
    text = """
- {from: a/x, to: a/y, port: 80, protocol: TCP, expect: allow}
---
{name: ping6, from: a/x, to: a/y, protocol: icmp, type: 128, code: 0, family: 6, expect: reject}
"""
    one, two = parse_expectations(text, "t.yaml")
    assert one.protocol == "tcp"  # policies write TCP; either case is accepted
    assert (two.index, two.name, two.family, two.icmp_type, two.icmp_code) == (2, "ping6", 6, 128, 0)
    assert two.ref == "t.yaml entry 2 (ping6)"
    assert two.describe_flow() == "icmp type 128 code 0 IPv6"
    assert two.flow.icmp_type == 128


def test_every_bad_field_of_every_entry_is_named() -> None:
    text = """
- {from: shop/web-1, to: db-1, port: 70000, protocol: tcp, expect: maybe, colour: red}
- {name: p, from: shop/web-1, to: shop/db-1, protocol: icmpv6, expect: deny}
- {from: shop/web-1, to: shop/db-1, protocol: icmp, port: 3, code: 1, expect: deny, family: true}
- {from: shop/web-1, protocol: udp, expect: deny, type: 3}
- 7
"""
    with pytest.raises(ValidationError) as exc:
        parse_expectations(text, "t.yaml")
    assert problems_of(exc) == {
        ("t.yaml entry 1", "colour"), ("t.yaml entry 1", "to"), ("t.yaml entry 1", "expect"),
        ("t.yaml entry 1", "port"),
        ("t.yaml entry 2 (p)", "protocol"),
        ("t.yaml entry 3", "family"), ("t.yaml entry 3", "port"), ("t.yaml entry 3", "code"),
        ("t.yaml entry 4", "to"), ("t.yaml entry 4", "port"), ("t.yaml entry 4", "type"),
        ("t.yaml entry 5", ""),
    }
    assert "family: 6" in str(exc.value)  # the ICMPv6 hint


@pytest.mark.parametrize("text", ["", "# nothing\n", "[]\n"])
def test_a_file_without_expectations_is_refused(text: str) -> None:
    with pytest.raises(ValidationError, match="contains no expectations"):
        parse_expectations(text, "t.yaml")


def test_a_file_that_is_not_yaml_is_refused() -> None:
    with pytest.raises(ValidationError, match="t.yaml: not valid YAML"):
        parse_expectations("- {from: [", "t.yaml")



def test_policy_test_failed_has_its_own_exit_code() -> None:
    assert PolicyTestFailed(11, 2).exit_code == 12
    assert PolicyTestFailed(11, 2).message == "2 of 13 expectations failed"

