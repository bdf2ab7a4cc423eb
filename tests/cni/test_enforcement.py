"""A container the plugin attached is enforced by the host's real agent with nothing more: the
agent (its own process, in the scratch host netns, with the same host credential) filters the
interface the Workload names, and plumbs its host side as it does every attached interface."""

from __future__ import annotations

import secrets
import subprocess
from typing import Any

import pytest

from tests.cni.conftest import PEER_V4, PEER_V6, Stack, in_netns, wait_enforced
from tests.waiting import wait_until

pytestmark = pytest.mark.kernel


def _pings(netns: str, target: str) -> bool:
    return in_netns(netns, "ping", "-c", "1", "-W", "1", target, check=False).returncode == 0


def test_the_agent_enforces_policy_on_a_container_the_plugin_attached(stack: Stack, container: str,
                                                                     agent: subprocess.Popen[bytes]) -> None:
    cid, name = secrets.token_hex(32), f"guarded-{secrets.token_hex(2)}"
    args = f"K8S_POD_NAME={name};STOCKADE_LABELS=app={name}"
    netns = container.rsplit("/", 1)[1]
    add = stack.plugin("ADD", stack.netconf(), cid, container, args=args)
    assert add.rc == 0, add.stdout + add.stderr
    policy: dict[str, Any] = {
        "apiVersion": "stockade.io/v1", "kind": "Policy", "metadata": {"name": name, "namespace": "default"},
        "spec": {"appliesTo": {"selector": {"matchLabels": {"app": name}}},
                 "egress": [{"action": "allow", "to": [{"cidr": "198.18.200.0/24"}, {"cidr": "2001:db8:200::/64"}]}]}}
    try:
        wait_enforced(stack, agent)
        # Namespace `default` denies by default: the container reaches nothing.
        assert not _pings(netns, PEER_V4) and not _pings(netns, PEER_V6)
        stack.admin.apply([policy])
        wait_enforced(stack, agent)
        assert _pings(netns, PEER_V4) and _pings(netns, PEER_V6)
        # The agent took over the host routes (its protocol 77, the plugin's are 78) and CHECK still holds.
        ip = stack.workload("default", name)["status"]["ips"][0]  # type: ignore[index]
        wait_until(lambda: f"{ip} dev " in in_netns(stack.host_netns, "ip", "route", "show", "proto", "77").stdout,
                   f"the agent's route to {ip}")
        check = stack.plugin("CHECK", stack.netconf(prevResult=add.out), cid, container, args=args)
        assert check.rc == 0, check.stdout
    finally:
        stack.admin.delete([("Policy", "default", name)])
        assert stack.plugin("DEL", stack.netconf(), cid, container, args=args).rc == 0
    assert stack.workload("default", name) is None
