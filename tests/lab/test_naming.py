"""The lab's naming conventions, which the agent and the compiler rely on (pure)."""

from __future__ import annotations

import pytest

from stockade.errors import LabError
from stockade.lab import naming


def test_node_addresses_follow_the_host_number() -> None:
    assert naming.node_addresses("hv1") == ("198.18.254.1", "2001:db8:ffff::1")
    assert naming.node_addresses("hv12") == ("198.18.254.12", "2001:db8:ffff::12")


def test_netns_names_follow_the_convention() -> None:
    assert naming.fabric_netns("stk") == "stk-fab"
    assert naming.host_netns("stk", "hv2") == "stk-hv2"
    assert naming.workload_netns("stk", "hv2", "shop", "web-1") == "stk-hv2.shop.web-1"
    assert naming.workload_netns("stk", "hv2", "shop", "web-1").startswith(naming.workload_netns_prefix("stk", "hv2"))
    assert not naming.workload_netns("stk", "hv21", "shop", "w").startswith(naming.workload_netns_prefix("stk", "hv2"))


@pytest.mark.parametrize("bad", ["", "a-b", "a.b", "UPPER", "toolongprefix"])
def test_prefix_that_could_collide_with_other_labs_is_refused(bad: str) -> None:
    with pytest.raises(LabError):
        naming.check_prefix(bad)


@pytest.mark.parametrize("name", ["hv0", "hv01", "node1", "hv", "hv251"])
def test_host_index_refuses_names_that_are_not_lab_hypervisors(name: str) -> None:
    assert not naming.is_lab_host(name)
    with pytest.raises(LabError):
        naming.host_index(name)


def test_derived_mac_is_stable_unicast_and_locally_administered() -> None:
    mac = naming.derived_mac("shop/web-1")
    assert mac == naming.derived_mac("shop/web-1")
    assert mac != naming.derived_mac("shop/web-2")
    first = int(mac.split(":")[0], 16)
    assert first & 0x01 == 0 and first & 0x02 == 2
