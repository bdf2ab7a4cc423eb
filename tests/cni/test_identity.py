"""Who a container is to Stockade: name, namespace, labels, interface, MAC (pure)."""

from __future__ import annotations

import re

import pytest

from stockade.cni.config import Environment, NetConf, parse_cni_args
from stockade.cni.identity import derived_mac, host_interface, identify, workload_name
from stockade.cni.spec import CniError
from stockade.model.validation import DEFAULT_INTERFACE_PATTERN

CID = "0123456789abcdef" * 4


def _conf(**kw: object) -> NetConf:
    base: dict[str, object] = dict(cni_version="1.0.0", network="stockade", controller="unix:///x",
                                   token_file="/t", host="node1")
    base.update(kw)
    return NetConf(**base)  # type: ignore[arg-type]


def _env(args: str = "", ifname: str = "eth0") -> Environment:
    return Environment("ADD", CID, "/run/netns/x", ifname, parse_cni_args(args))


def test_kubernetes_args_name_the_workload_and_its_namespace() -> None:
    who = identify(_env("IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1"), _conf(namespace="other"))
    assert (who.namespace, who.name) == ("shop", "web-1")


def test_without_a_pod_namespace_the_configured_one_is_used() -> None:
    assert identify(_env("K8S_POD_NAME=web"), _conf(namespace="podmen")).namespace == "podmen"
    assert identify(_env("K8S_POD_NAME=web;STOCKADE_NAMESPACE=ops"), _conf()).namespace == "ops"


def test_without_a_name_the_container_id_names_the_workload() -> None:
    assert identify(_env(), _conf()).name == "c-0123456789ab"


@pytest.mark.parametrize("runtime_name", ["Web_1", "my.app", "x" * 80, "__"])
def test_a_runtime_name_that_is_no_dns_label_becomes_one_and_stays_distinct(runtime_name: str) -> None:
    name = workload_name(runtime_name, CID)
    assert re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", name), name
    assert name != workload_name(runtime_name.upper() + "z", CID)


def test_labels_come_from_the_config_then_the_runtime_args() -> None:
    who = identify(_env("STOCKADE_LABELS=tier=web,env=prod"), _conf(labels={"tier": "any", "site": "a"}))
    assert who.labels == {"tier": "web", "site": "a", "env": "prod"}
    with pytest.raises(CniError) as e:
        identify(_env("STOCKADE_LABELS=novalue"), _conf())
    assert e.value.code == 4 and "STOCKADE_LABELS" in e.value.msg


def test_the_host_interface_is_stable_short_and_in_the_agents_naming_scheme() -> None:
    name = host_interface(CID, "eth0")
    assert name == host_interface(CID, "eth0") != host_interface(CID, "eth1")
    assert len(name) == 15 and re.fullmatch(DEFAULT_INTERFACE_PATTERN, name)


def test_the_mac_is_given_or_derived_unicast_and_local() -> None:
    assert identify(_env("MAC=02:AA:bb:cc:dd:ee"), _conf()).mac == "02:aa:bb:cc:dd:ee"
    assert identify(_env(), _conf(runtime_config={"mac": "02:00:00:00:00:07"})).mac == "02:00:00:00:00:07"
    mac = derived_mac(CID, "eth0")
    assert int(mac[:2], 16) & 0b11 == 0b10   # locally administered, unicast
    with pytest.raises(CniError):
        identify(_env("MAC=01:00:5e:00:00:01"), _conf())   # multicast


def test_the_workload_document_has_no_addresses_and_is_marked() -> None:
    doc = identify(_env("K8S_POD_NAME=web"), _conf()).workload("node1")
    assert doc["spec"] == {"host": "node1", "interface": host_interface(CID, "eth0"), "mac": derived_mac(CID, "eth0")}
    assert doc["metadata"]["annotations"]["stockade.io/attached-by"] == "stockade-cni"  # type: ignore[index]
