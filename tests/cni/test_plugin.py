"""The plugin as a runtime runs it: its own process with the CNI environment, against a real
controller, wiring real veths in scratch network namespaces (tests/cni/conftest.py)."""

from __future__ import annotations

import secrets
import time

import pytest

from stockade.cni.identity import CONTAINER_ID
from stockade.model.naming import ATTACHED_BY
from tests.cni.conftest import HOST, PEER_V4, PEER_V6, Stack, in_netns

pytestmark = pytest.mark.kernel


def _cid() -> str:
    return secrets.token_hex(32)   # what podman and containerd use: 64 hex digits


def _netns_name(path: str) -> str:
    return path.rsplit("/", 1)[1]


def test_add_registers_the_workload_wires_the_veth_and_routes_packets(stack: Stack, container: str) -> None:
    cid = _cid()
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1;STOCKADE_LABELS=tier=web,env=prod"
    started = time.monotonic()
    add = stack.plugin("ADD", stack.netconf(labels={"site": "lab"}), cid, container, args=args)
    add_seconds = time.monotonic() - started
    assert add.rc == 0, add.stdout + add.stderr
    assert add.out is not None
    wl = stack.workload("shop", "web-1")
    assert wl is not None, "the Workload was not registered"
    ips = wl["status"]["ips"]
    assert len(ips) == 2 and ":" in ips[1] and ":" not in ips[0]
    assert wl["metadata"]["labels"] == {"site": "lab", "tier": "web", "env": "prod"}
    assert wl["metadata"]["annotations"][ATTACHED_BY] == "stockade-cni"
    assert wl["metadata"]["annotations"][CONTAINER_ID] == cid
    assert wl["spec"]["host"] == HOST
    host_if = wl["spec"]["interface"]
    assert host_if.startswith("stk") and len(host_if) <= 15
    # The result: both interfaces, the addresses as host routes, the gateways.
    assert [i["name"] for i in add.out["interfaces"]] == [host_if, "eth0"]
    assert add.out["interfaces"][1]["mac"] == wl["spec"]["mac"]
    assert add.out["interfaces"][1]["sandbox"] == container
    assert [e["address"] for e in add.out["ips"]] == [f"{ips[0]}/32", f"{ips[1]}/128"]
    assert {r["gw"] for r in add.out["routes"]} == {"169.254.1.1", "fe80::1"}
    # The kernel: the container's eth0 holds the addresses and the MAC; the host routes to it.
    inside = in_netns(_netns_name(container), "ip", "-o", "addr", "show", "dev", "eth0").stdout
    assert f"{ips[0]}/32" in inside and f"{ips[1]}/128" in inside
    assert wl["spec"]["mac"] in in_netns(_netns_name(container), "ip", "-o", "link", "show", "eth0").stdout
    routes = in_netns(stack.host_netns, "ip", "route", "show", "proto", "78").stdout
    assert f"{ips[0]} dev {host_if}" in routes
    # Real packets, both families, to the routed peer and back.
    for target in (PEER_V4, PEER_V6):
        ping = in_netns(_netns_name(container), "ping", "-c", "1", "-W", "3", target, check=False)
        assert ping.returncode == 0, f"ping {target} from the container: {ping.stdout}{ping.stderr}"

    check = stack.plugin("CHECK", stack.netconf(prevResult=add.out), cid, container, args=args)
    assert check.rc == 0, check.stdout + check.stderr

    started = time.monotonic()
    gone = stack.plugin("DEL", stack.netconf(), cid, container, args=args)
    del_seconds = time.monotonic() - started
    assert gone.rc == 0, gone.stdout + gone.stderr
    assert stack.workload("shop", "web-1") is None
    assert host_if not in stack.host_links()
    assert "eth0" not in in_netns(_netns_name(container), "ip", "-o", "link").stdout
    again = stack.plugin("DEL", stack.netconf(), cid, container, args=args)
    assert again.rc == 0, again.stdout + again.stderr
    print(f"ADD {add_seconds * 1000:.0f} ms, DEL {del_seconds * 1000:.0f} ms (whole processes)")


def test_check_fails_once_the_wiring_is_broken(stack: Stack, container: str) -> None:
    cid = _cid()
    args = f"K8S_POD_NAME=chk-{cid[:6]}"
    add = stack.plugin("ADD", stack.netconf(), cid, container, args=args)
    assert add.rc == 0, add.stdout + add.stderr
    try:
        assert stack.plugin("CHECK", stack.netconf(prevResult=add.out), cid, container, args=args).rc == 0
        in_netns(_netns_name(container), "ip", "route", "del", "default")
        broken = stack.plugin("CHECK", stack.netconf(prevResult=add.out), cid, container, args=args)
        assert broken.rc != 0
        assert broken.out is not None and broken.out["code"] == 102
        assert "no default route via 169.254.1.1" in broken.out["details"]
    finally:
        assert stack.plugin("DEL", stack.netconf(), cid, container, args=args).rc == 0
    # The Workload gone too: CHECK says so.
    after = stack.plugin("CHECK", stack.netconf(), cid, container, args=args)
    assert after.rc != 0 and after.out is not None and "is not registered" in after.out["details"]


def test_del_succeeds_when_nothing_is_there(stack: Stack) -> None:
    run = stack.plugin("DEL", stack.netconf(), _cid(), "", args="K8S_POD_NAME=never-added")
    assert run.rc == 0, run.stdout + run.stderr
    assert run.stdout == ""


def test_del_leaves_a_workload_of_another_container_of_the_same_name(stack: Stack, container: str) -> None:
    cid = _cid()
    args = f"K8S_POD_NAME=same-{cid[:6]}"
    assert stack.plugin("ADD", stack.netconf(), cid, container, args=args).rc == 0
    try:
        assert stack.plugin("DEL", stack.netconf(), _cid(), "", args=args).rc == 0
        assert stack.workload("default", f"same-{cid[:6]}") is not None
    finally:
        assert stack.plugin("DEL", stack.netconf(), cid, container, args=args).rc == 0
    assert stack.workload("default", f"same-{cid[:6]}") is None


def test_version_names_the_spec_versions(stack: Stack) -> None:
    run = stack.plugin("VERSION", '{"cniVersion": "1.0.0"}')
    assert run.rc == 0 and run.out == {"cniVersion": "1.0.0",
                                      "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]}


@pytest.mark.parametrize(("overrides", "code", "names"), [
    ({"host": None}, 7, "host"),
    ({"controller": 42}, 7, "controller"),
    ({"tokenFile": "/nonexistent/cnih.token"}, 7, "tokenFile"),
    ({"subnet": "10.0.0.0/8"}, 2, "subnet"),
    ({"ipam": {"type": "host-local"}}, 2, "ipam"),
    ({"cniVersion": "0.2.0"}, 1, "cniVersion 0.2.0"),
])
def test_bad_configuration_is_the_spec_error_naming_the_field(stack: Stack, container: str, overrides: dict[str, object],
                                                              code: int, names: str) -> None:
    run = stack.plugin("ADD", stack.netconf(**overrides), _cid(), container, args="K8S_POD_NAME=bad-conf")
    assert run.rc != 0
    assert run.out is not None and run.out["code"] == code, run.stdout
    assert names in run.out["msg"] + run.out.get("details", "")
    assert stack.workload("default", "bad-conf") is None
    assert "stk" not in stack.host_links()


def test_missing_environment_is_the_spec_error_naming_the_variable(stack: Stack) -> None:
    run = stack.plugin("ADD", stack.netconf(), _cid(), "")
    assert run.rc != 0 and run.out is not None and run.out["code"] == 4 and "CNI_NETNS" in run.out["msg"]


def test_the_host_credential_cannot_register_a_workload_on_another_host(stack: Stack, container: str) -> None:
    run = stack.plugin("ADD", stack.netconf(host="node2"), _cid(), container, args="K8S_POD_NAME=elsewhere")
    assert run.rc != 0 and run.out is not None and run.out["code"] == 100, run.stdout
    assert "node2" in run.out["details"] and "own host" in run.out["details"]
    assert stack.workload("default", "elsewhere") is None
    assert "stk" not in stack.host_links()
    assert stack.tokens[f"agent-{HOST}"] not in run.stdout + run.stderr


def test_add_into_a_missing_network_namespace_registers_nothing(stack: Stack) -> None:
    run = stack.plugin("ADD", stack.netconf(), _cid(), f"/run/netns/{stack.prefix}-gone", args="K8S_POD_NAME=no-netns")
    assert run.rc != 0 and run.out is not None and run.out["code"] == 3, run.stdout
    assert "CNI_NETNS" in run.out["details"]
    assert stack.workload("default", "no-netns") is None
