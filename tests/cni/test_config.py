"""The network configuration and CNI environment, checked with the spec's error codes (pure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stockade.cni.config import parse_cni_args, parse_environment, parse_netconf, read_token
from stockade.cni.spec import CniError

GOOD = {"cniVersion": "1.0.0", "name": "stockade", "type": "stockade-cni", "controller": "https://c:7470",
        "tokenFile": "/etc/stockade/agent.token", "host": "node1"}


def _error(fn: object, *args: object) -> CniError:
    with pytest.raises(CniError) as e:
        fn(*args)  # type: ignore[operator]
    return e.value


def test_a_plugin_entry_as_a_runtime_sends_it_parses() -> None:
    conf = parse_netconf(json.dumps({**GOOD, "ca": "/ca.pem", "runtimeConfig": {"mac": "02:00:00:00:00:01"},
                                     "args": {"cni": {"labels": [{"key": "app", "value": "web"}]}},
                                     "prevResult": {}, "labels": {"site": "a"}}))
    assert (conf.host, conf.namespace, str(conf.ca)) == ("node1", "default", "/ca.pem")
    assert conf.labels == {"site": "a", "app": "web"}


@pytest.mark.parametrize(("doc", "code", "named"), [
    ("not json", 6, "not JSON"),
    ({**GOOD, "cniVersion": "2.0.0"}, 1, "cniVersion 2.0.0"),
    ({k: v for k, v in GOOD.items() if k != "controller"}, 7, "controller"),
    ({**GOOD, "host": ""}, 7, "host"),
    ({**GOOD, "labels": ["a"]}, 7, "labels"),
    ({**GOOD, "args": {"cni": {"labels": [{"key": "a"}]}}}, 7, "args.cni.labels[0]"),
    ({**GOOD, "bridge": "br0"}, 2, "bridge"),
])
def test_bad_configuration_names_the_field(doc: object, code: int, named: str) -> None:
    e = _error(parse_netconf, doc if isinstance(doc, str) else json.dumps(doc))
    assert e.code == code and named in e.msg
    assert json.loads(e.to_json("1.0.0"))["code"] == code


def test_environment_by_command() -> None:
    assert parse_environment({"CNI_COMMAND": "VERSION"}).command == "VERSION"
    deleting = parse_environment({"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c", "CNI_IFNAME": "eth0"})
    assert deleting.netns == ""   # DEL may come after the namespace is gone
    assert "CNI_NETNS" in _error(parse_environment, {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c",
                                                     "CNI_IFNAME": "eth0"}).msg
    assert _error(parse_environment, {"CNI_COMMAND": "GET"}).code == 4


def test_cni_args_values_may_hold_equals_signs() -> None:
    assert parse_cni_args("A=1;STOCKADE_LABELS=a=b,c=d;") == {"A": "1", "STOCKADE_LABELS": "a=b,c=d"}
    assert _error(parse_cni_args, "A").code == 4


def test_the_token_file_is_named_when_unreadable_or_empty(tmp_path: Path) -> None:
    conf = parse_netconf(json.dumps({**GOOD, "tokenFile": str(tmp_path / "none")}))
    assert "tokenFile" in _error(read_token, conf).msg
    (tmp_path / "empty").write_text("\n")
    conf = parse_netconf(json.dumps({**GOOD, "tokenFile": str(tmp_path / "empty")}))
    assert "is empty" in _error(read_token, conf).details
