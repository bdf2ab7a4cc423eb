"""NftDriver against the real kernel, each test in its own network namespace.

Root, nftables and `ip netns` are needed (marker `kernel`). Every namespace is
uniquely named and deleted in the fixture's teardown, also when the test fails.
The driver runs inside it through an injected runner (`ip netns exec NAME ...`).
The reconciler's tests (which use this driver) are in tests/agent/test_reconciler.py;
both share tests/kernel_table.py.
"""

from __future__ import annotations

import json
import pytest

from stockade.agent.reconciler import Reconciler
from stockade.compile.host import compile_host
from stockade.dataplane import nft_driver
from stockade.dataplane.nft_driver import NftDriver, counters_by_comment
from stockade.errors import DataplaneError
from stockade.lab import netns as ns_mod
from stockade.nft import render
from tests.golden_states import GOLDEN, HOST, load_state, relabel
from tests.kernel_table import driver, netns, other_table, reconciler  # noqa: F401 (fixtures)
from tests.kernel_table import KERNEL, broken_ruleset, chains_in

pytestmark = KERNEL


# ------------------------------------------------------------------ failure keeps what was applied

def test_driver_refusal_raises_dataplane_error_and_keeps_the_table(netns, driver, reconciler, other_table):
    reconciler.reconcile(load_state())
    before = netns.listing("inet", "stockade")
    with pytest.raises(DataplaneError) as e:
        driver.apply(render.full_replace(broken_ruleset()))
    assert e.value.returncode != 0 and e.value.stderr
    assert e.value.cmd[-3:] == ["-j", "-f", "-"]
    assert netns.listing("inet", "stockade") == before
    assert reconciler.in_sync()



def test_first_apply_refused_leaves_no_table(netns, driver, other_table):
    with pytest.raises(DataplaneError):
        driver.apply(render.full_replace(broken_ruleset()))
    assert driver.list_table() is None
    assert driver.fingerprint() is None



# ------------------------------------------------------------------ ownership

def test_driver_never_touches_another_table(netns, driver, reconciler, other_table):
    state = load_state(revision=1)
    reconciler.reconcile(state)
    reconciler.reconcile(relabel(state, "shop", "app-1", {"tier": "lb"}, revision=2))
    reconciler.reconcile(relabel(state, "shop", "web-1", {"tier": "app"}, revision=3))
    netns.nft("add", "rule", "inet", "stockade", "egress", "drop")
    reconciler.reconcile(state.with_changes(4))
    with pytest.raises(DataplaneError):
        driver.apply(render.full_replace(broken_ruleset()))
    driver.delete()
    assert driver.list_table() is None
    # `other_table`'s teardown checks it is unchanged; check the kernel still has only it.
    tables = json.loads(netns.nft("-j", "list", "tables").stdout)["nftables"]
    assert [(t["table"]["family"], t["table"]["name"]) for t in tables if "table" in t] == [("inet", "other")]


def test_delete_of_absent_table_is_harmless(netns, driver, other_table):
    driver.delete()
    driver.delete()
    assert driver.list_table() is None


def test_driver_table_name_is_respected(netns, other_table):
    driver = NftDriver(table="stockade_test", runner=netns.runner)
    rec = Reconciler(driver, HOST)
    assert rec.reconcile(load_state()).kind == "full"
    assert netns.nft("list", "table", "inet", "stockade", check=False).returncode != 0
    assert "egress" in chains_in(netns.listing("inet", "stockade_test"))


# ------------------------------------------------------------------ listing and counters

def test_fingerprint_ignores_handles_and_counter_values(netns, driver, reconciler, other_table):
    reconciler.reconcile(load_state())
    fp = driver.fingerprint()
    assert fp is not None
    # Same program applied again: new handles, same fingerprint.
    driver.apply(render.full_replace(compile_host(load_state(), HOST)))
    assert driver.fingerprint() == fp


def test_counters_by_comment_returns_rule_ids(netns, driver, reconciler, other_table):
    state = load_state()
    reconciler.reconcile(state)
    counters = counters_by_comment(driver.list_table())
    refs = {"shop/lb/web-from-clients", "shop/lb/to-web", "shop/web/http-from-lb", "shop/web/to-app",
            "shop/db/sql-from-app", "shop/db/backup-net", "shop/shop-common/ssh-from-bastion",
            "shop/shop-common/dns", "ops/dns/from-retail"}
    assert refs <= set(counters)
    assert {"invalid", "antispoof", "shop/default-deny/ingress", "ops/default-deny/egress"} <= set(counters)
    assert all(v == (0, 0) for v in counters.values())
    assert "tier-passed" not in counters  # no counter on the guard rule
    assert "not ours" not in counters     # only our table is listed


def test_counters_sum_over_kernel_rules_of_one_policy_rule():
    listing = {"nftables": [
        {"rule": {"comment": "a/p/r", "expr": [{"counter": {"packets": 2, "bytes": 100}}, {"accept": None}]}},
        {"rule": {"comment": "a/p/r", "expr": [{"counter": {"packets": 3, "bytes": 50}}, {"accept": None}]}},
        {"rule": {"comment": "no-counter", "expr": [{"accept": None}]}},
        {"rule": {"expr": [{"counter": {"packets": 9, "bytes": 9}}]}},
    ]}
    assert counters_by_comment(listing) == {"a/p/r": (5, 150)}


@pytest.mark.parametrize("case", ["shop", "default_deny", "allow_until_selected", "tiers", "single_family"])
def test_every_golden_program_loads_in_the_kernel(netns, driver, other_table, case):
    program = json.loads((GOLDEN / f"{case}.json").read_text())
    driver.apply(program)
    listing = netns.listing("inet", "stockade")
    ours = compile_host(load_state(case), HOST)
    assert {c.name for c in ours.chains} == chains_in(listing)
    kernel_rules = [i["rule"] for i in listing if "rule" in i]
    assert len(kernel_rules) == sum(len(c.rules) for c in ours.chains)


def test_run_command_is_the_default_runner():
    assert NftDriver().runner is nft_driver.run_command


# ------------------------------------------------- the ruleset generation (the agent's way)
# The agent's driver runs libnftables in its own thread's netns, so it can read the ruleset
# generation there; these tests run driver and reconciler the same way, in a thread inside
# the test's netns (`netns.run_in`).

def test_generation_counts_commits_not_listings(netns, other_table):
    def inside():
        driver = NftDriver()
        g0 = driver.generation()
        driver.apply(render.full_replace(compile_host(load_state(), HOST)))
        g1 = driver.generation()
        driver.list_table()
        driver.fingerprint()
        return g0, g1, driver.generation()

    g0, g1, g2 = ns_mod.run_in(netns.name, inside)
    assert g0 is not None and g1 == g0 + 1 and g2 == g1
    netns.nft("add", "table", "inet", "someone_else")
    assert ns_mod.run_in(netns.name, NftDriver().generation) == g2 + 1
    assert NftDriver(runner=netns.runner).generation() is None  # another netns's runner: unknown here
