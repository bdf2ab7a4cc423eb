"""Learned addresses in the real kernel (issue 18): the reconciler adds them without calling it
drift, and a full replace keeps them; and what the agent does when its DNS proxy cannot listen."""

from __future__ import annotations

import logging
import socket

import pytest

from stockade.agent.fqdn_learning import Answer, LearnedNames
from stockade.agent.main import AgentSettings, start_dns_proxy
from stockade.agent.metrics import AgentMetrics
from stockade.agent.reconciler import Reconciler
from stockade.compile.dns import DnsInterception
from stockade.compile.host import CompileOptions, compile_host
from stockade.dataplane.nft_driver import NftDriver
from stockade.lab import netns as lab_netns
from stockade.model.kinds import parse_object
from stockade.model.state import DesiredState
from tests.compile.test_fqdn_rules import docs
from tests.kernel_table import Netns, driver, netns  # noqa: F401 (fixtures)

pytestmark = pytest.mark.kernel
HOST = "hv1"
API = Answer(("api.partner.example",), (("198.19.1.7", 30), ("2001:db8:e::1:7", 30)))


def state(revision: int = 1, port: int = 443) -> DesiredState:
    objects = [parse_object(d) for d in docs()]
    wanted = []
    for obj in objects:
        if obj.kind == "Policy":
            raw = obj.model_dump(by_alias=True, exclude_none=True)
            raw["spec"]["egress"][0]["ports"][0]["port"] = port
            obj = parse_object(raw)
        wanted.append(obj)
    return DesiredState.from_objects(revision, wanted)


def elements(netns: Netns, set_name: str) -> list[dict]:
    listing = netns.listing("inet", "stockade")
    body = next(i["set"] for i in listing if "set" in i and i["set"]["name"] == set_name)
    return [e["elem"] for e in body.get("elem", [])]


def api_set(reconciler: Reconciler, family: int) -> str:
    assert reconciler.applied is not None
    return next(s.name for s in reconciler.applied.sets
                if s.fqdn == "api.partner.example" and s.type == (f"ipv{family}_addr",))


def test_learned_addresses_are_not_drift_and_survive_a_full_replace(netns: Netns, driver: NftDriver) -> None:
    learned = LearnedNames(min_ttl=1)
    reconciler = Reconciler(driver, HOST, learned=learned)
    assert reconciler.reconcile(state()).kind == "full"
    v4, v6 = api_set(reconciler, 4), api_set(reconciler, 6)
    assert elements(netns, v4) == []
    assert reconciler.add_learned(learned.learn(API, reconciler.applied))
    [elem] = elements(netns, v4)
    assert elem["val"] == "198.19.1.7" and 25 <= elem["expires"] <= 30
    assert [e["val"] for e in elements(netns, v6)] == ["2001:db8:e::1:7"]
    assert reconciler.in_sync()                        # what DNS taught is not a hand edit
    assert reconciler.reconcile(state()).kind == "none"
    # A change of structure: a full replace, which puts back what is still alive.
    assert reconciler.reconcile(state(2, port=8443)).kind == "full"
    assert [e["val"] for e in elements(netns, v4)] == ["198.19.1.7"]
    assert reconciler.in_sync()


def test_a_hand_edit_elsewhere_is_still_drift(netns: Netns, driver: NftDriver) -> None:
    reconciler = Reconciler(driver, HOST, learned=LearnedNames(min_ttl=1))
    reconciler.reconcile(state())
    netns.nft("add", "element", "inet", "stockade", "workload_ifaces", "{ evil0 }")
    assert not reconciler.in_sync()


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_a_proxy_that_cannot_listen_fails_as_configured_and_says_so(netns: Netns, driver: NftDriver, mode: str,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    dns = DnsInterception(("198.19.0.53",), "127.0.0.1", 1053)
    reconciler = Reconciler(driver, HOST, CompileOptions(dns=dns), learned=LearnedNames())
    metrics = AgentMetrics(reconciler)
    settings = AgentSettings(HOST, "https://controller.invalid", "token", dns=dns, dns_fail=mode)

    def taken_then_start() -> object:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
            squatter.bind(("127.0.0.1", 1053))
            return start_dns_proxy(settings, reconciler, metrics)

    subprocess_lo_up(netns)
    with caplog.at_level(logging.ERROR):
        assert lab_netns.run_in(netns.name, taken_then_start) is None
    assert "DNS proxy cannot listen on 127.0.0.1:1053" in caplog.text and f"failing {mode}" in caplog.text
    assert metrics.registry.get_sample_value("stockade_agent_dns_proxy_up", {"fail_mode": mode}) == 0
    reconciler.reconcile(state())
    intercepted = "dns_intercept" in {c.name for c in compile_host(state(), HOST, reconciler.options).chains}
    assert intercepted is (mode == "closed")
    chains = {i["chain"]["name"] for i in netns.listing("inet", "stockade") if "chain" in i}
    assert ("dns_intercept" in chains) is (mode == "closed")


def subprocess_lo_up(netns: Netns) -> None:
    import subprocess

    subprocess.run(["ip", "-n", netns.name, "link", "set", "lo", "up"], check=True)
