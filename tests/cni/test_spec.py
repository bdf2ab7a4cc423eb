"""The ADD result and the error JSON in each spec version (pure)."""

from __future__ import annotations

import json

from stockade.cni.spec import Attached, CniError, result_document

ATTACHED = Attached("stkabc", "aa:bb:cc:dd:ee:ff", "eth0", "02:00:00:00:00:01", "/run/netns/x",
                    ("198.18.64.1", "2001:db8:64::1"), "169.254.1.1", "fe80::1")


def test_result_1_0_has_both_interfaces_host_addresses_and_default_routes() -> None:
    doc = result_document(ATTACHED, "1.0.0")
    assert doc["interfaces"][1] == {"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/run/netns/x"}
    assert doc["ips"] == [{"address": "198.18.64.1/32", "interface": 1, "gateway": "169.254.1.1"},
                          {"address": "2001:db8:64::1/128", "interface": 1, "gateway": "fe80::1"}]
    assert doc["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}, {"dst": "::/0", "gw": "fe80::1"}]


def test_result_before_1_0_names_each_address_family() -> None:
    assert [ip["version"] for ip in result_document(ATTACHED, "0.4.0")["ips"]] == ["4", "6"]


def test_error_json_has_code_msg_and_details() -> None:
    assert json.loads(CniError(7, "invalid network configuration: host", "host is required").to_json("0.4.0")) == {
        "cniVersion": "0.4.0", "code": 7, "msg": "invalid network configuration: host", "details": "host is required"}
