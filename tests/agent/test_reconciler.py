"""The reconciler: how it makes the kernel equal to the program of the desired state.

Two halves. Against a fake table (tests/agent/fakes.py, no root): its decisions, none, delta
or full, and drift seen through the ruleset generation or the table's fingerprint. Against the
real kernel (marker `kernel`, each test in its own network namespace, deleted in the fixture's
teardown): that what it decides reaches the kernel, byte for byte as a full replace would, and
that a hand edit is repaired. The real-kernel half shares tests/kernel_table.py with the
driver's tests (tests/dataplane/test_nft_driver.py).
"""

from __future__ import annotations

import pytest
import yaml

from stockade.agent.reconciler import Reconciler
from stockade.compile.host import HostProgram, compile_host
from stockade.dataplane.nft_driver import NftDriver
from stockade.errors import DataplaneError
from stockade.lab import netns as ns_mod
from stockade.model.kinds import parse_object
from stockade.model.state import DesiredState
from stockade.nft import render
from tests.agent.fakes import FakeTable
from tests.golden_states import HOST, load_state, relabel
from tests.kernel_table import driver, netns, other_table, reconciler  # noqa: F401 (fixtures)
from tests.kernel_table import broken_ruleset, chains_in, kernel, set_elements, set_named


# ================================================================== decisions, against a fake table

class ManualClock:
    """The reconciler's clock, moved by the test (in the kernel tests, the kernel parts stay real)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _fake(generations: bool = True, quiet: float = 2.0) -> tuple[FakeTable, Reconciler, ManualClock]:
    table, clock = FakeTable(generations), ManualClock()
    return table, Reconciler(table, HOST, fingerprint_quiet=quiet, clock=clock), clock


def test_decides_full_on_the_first_pass_and_none_when_the_kernel_already_holds_the_program() -> None:
    table, reconciler, _ = _fake()
    first = reconciler.reconcile(load_state(revision=1))
    assert (first.kind, first.drift_repaired) == ("full", False) and table.kinds == ["full"]
    again = reconciler.reconcile(load_state(revision=2))
    assert (again.kind, again.objects_sent, again.revision) == ("none", 0, 2)
    assert again.program_hash == first.program_hash
    assert table.kinds == ["full"]  # nothing sent


def test_decides_delta_when_only_set_elements_changed() -> None:
    table, reconciler, _ = _fake()
    state = load_state(revision=1)
    reconciler.reconcile(state)
    # app-1 (on hv2) joins group lb: the same chains on hv1, other set elements.
    changed = relabel(state, "shop", "app-1", {"tier": "lb", "env": "prod"}, revision=2)
    outcome = reconciler.reconcile(changed)
    assert outcome.kind == "delta" and not outcome.drift_repaired
    assert table.kinds == ["full", "delta"]
    assert table.programs[-1] == render.set_delta(compile_host(state, HOST), compile_host(changed, HOST))
    assert outcome.objects_sent == render.count_objects(table.programs[-1]) > 0
    assert reconciler.reconcile(changed.with_changes(3)).kind == "none"


def test_decides_full_when_chains_changed() -> None:
    table, reconciler, _ = _fake()
    state = load_state(revision=1)
    reconciler.reconcile(state)
    changed = relabel(state, "shop", "web-1", {"tier": "app", "env": "prod"}, revision=2)  # local: shop/app applies
    outcome = reconciler.reconcile(changed)
    assert outcome.kind == "full" and not outcome.drift_repaired
    assert table.programs[-1] == render.full_replace(compile_host(changed, HOST))


@pytest.mark.parametrize("generations", [True, False], ids=["generation", "fingerprint"])
@pytest.mark.parametrize("edit", ["hand-edit", "table-deleted"])
def test_decides_full_after_drift_even_when_only_set_elements_changed(generations: bool, edit: str) -> None:
    table, reconciler, clock = _fake(generations)
    state = load_state(revision=1)
    reconciler.reconcile(state)
    clock.now += 2.0
    assert reconciler.in_sync()
    table.hand_edit() if edit == "hand-edit" else table.delete_by_hand()
    assert not reconciler.in_sync()
    changed = relabel(state, "shop", "app-1", {"tier": "lb", "env": "prod"}, revision=2)  # a delta, were it not for the drift
    outcome = reconciler.reconcile(changed)
    assert (outcome.kind, outcome.drift_repaired) == ("full", True)
    assert table.programs[-1] == render.full_replace(compile_host(changed, HOST))
    assert reconciler.in_sync()
    assert reconciler.reconcile(changed.with_changes(3)).kind == "none"


def test_another_programs_commit_is_drift_only_until_our_tables_fingerprint_is_known() -> None:
    table, reconciler, clock = _fake()
    reconciler.reconcile(load_state(revision=1))
    assert reconciler.in_sync() and table.listings == 0  # not quiet yet: the fingerprint is not taken
    table.another_program_commits()
    assert not reconciler.in_sync()  # unknown whose commit: repaired, to be safe
    assert reconciler.reconcile(load_state(revision=2)).drift_repaired
    clock.now += 2.0
    assert reconciler.in_sync() and table.listings == 1  # quiet: takes our table's fingerprint, once
    table.another_program_commits()
    assert reconciler.in_sync()  # our table is unchanged
    assert reconciler.reconcile(load_state(revision=3)).kind == "none"


def test_a_refused_transaction_keeps_what_the_kernel_holds_and_the_next_pass_retries() -> None:
    table, reconciler, _ = _fake()
    state = load_state(revision=1)
    reconciler.reconcile(state)
    changed = relabel(state, "shop", "web-1", {"tier": "app", "env": "prod"}, revision=2)
    table.refuse = True
    with pytest.raises(DataplaneError):
        reconciler.reconcile(changed)
    assert reconciler.in_sync() and table.kinds == ["full"]
    assert reconciler.reconcile(state.with_changes(3)).kind == "none"  # it still knows what the kernel holds
    table.refuse = False
    assert reconciler.reconcile(changed.with_changes(4)).kind == "full"


# ================================================================== in the real kernel

# ------------------------------------------------------------------ reconcile

@kernel
def test_first_reconcile_is_a_full_transaction_with_our_chains(netns, reconciler, other_table):
    state = load_state()
    outcome = reconciler.reconcile(state)
    assert outcome.kind == "full" and outcome.revision == 1 and not outcome.drift_repaired
    assert outcome.objects_sent > 0
    listing = netns.listing("inet", "stockade")
    expected = {c.name for c in compile_host(state, HOST).chains}
    assert expected <= chains_in(listing)
    assert {"egress", "ingress", "input", "from_workloads"} <= chains_in(listing)
    assert reconciler.in_sync()


@kernel
def test_second_reconcile_of_same_state_does_nothing(netns, reconciler, other_table):
    reconciler.reconcile(load_state(revision=1))
    before = netns.listing("inet", "stockade")
    outcome = reconciler.reconcile(load_state(revision=2))
    assert outcome.kind == "none" and outcome.objects_sent == 0 and outcome.revision == 2
    assert netns.listing("inet", "stockade") == before


@kernel
def test_membership_change_is_a_delta_that_reaches_the_kernel_set(netns, driver, reconciler, other_table):
    state = load_state(revision=1)
    reconciler.reconcile(state)
    # app-1 (on hv2) joins group lb: only set elements on hv1 change.
    changed = relabel(state, "shop", "app-1", {"tier": "lb", "env": "prod"}, revision=2)
    outcome = reconciler.reconcile(changed)
    assert outcome.kind == "delta"
    rs = compile_host(changed, HOST)
    lb4, app4 = set_named(rs, "grp_lb_", 4), set_named(rs, "grp_app_", 4)
    listing = netns.listing("inet", "stockade")
    assert "198.18.10.21" in set_elements(listing, lb4)
    assert set_elements(listing, app4) == set()
    assert reconciler.in_sync()
    # What the delta built equals what a full replace of the new program builds.
    driver.apply(render.full_replace(rs))
    assert netns.listing("inet", "stockade") == listing


@kernel
def test_delta_that_merges_prefixes_equals_full_replace(netns, driver, reconciler, other_table):
    state = load_state(revision=1)
    reconciler.reconcile(state)
    # lb-1 is 198.18.10.2; a new remote lb at .3 collapses the set element into 198.18.10.2/31.
    new_lb = parse_object(yaml.safe_load("""
        apiVersion: stockade.io/v1
        kind: Workload
        metadata: {name: lb-2, namespace: shop, labels: {tier: lb}}
        spec: {host: hv2, ips: [198.18.10.3]}
    """))
    changed = state.with_changes(2, put=[new_lb])
    assert reconciler.reconcile(changed).kind == "delta"
    rs = compile_host(changed, HOST)
    listing = netns.listing("inet", "stockade")
    assert set_elements(listing, set_named(rs, "grp_lb_", 4)) == {"198.18.10.2/31"}
    driver.apply(render.full_replace(rs))
    assert netns.listing("inet", "stockade") == listing
    # ...and back: the /31 splits again.
    assert reconciler.reconcile(state.with_changes(3)).kind == "delta"
    assert set_elements(netns.listing("inet", "stockade"), set_named(rs, "grp_lb_", 4)) == {"198.18.10.2"}


@kernel
def test_structure_change_is_a_full_transaction(netns, reconciler, other_table):
    state = load_state(revision=1)
    reconciler.reconcile(state)
    changed = relabel(state, "shop", "web-1", {"tier": "app", "env": "prod"}, revision=2)  # local: shop/app applies
    outcome = reconciler.reconcile(changed)
    assert outcome.kind == "full" and not outcome.drift_repaired
    comments = {c.comment: c.name for c in compile_host(changed, HOST).chains}
    assert comments["Policy shop/app ingress"] in chains_in(netns.listing("inet", "stockade"))


# ------------------------------------------------------------------ drift

def _pol_chain(state: DesiredState) -> str:
    return next(c.name for c in compile_host(state, HOST).chains if c.comment == "Policy shop/web ingress")


DRIFTS = {
    "add-rule": lambda ns, state: ns.nft("add", "rule", "inet", "stockade", "egress", "drop"),
    "flush-chain": lambda ns, state: ns.nft("flush", "chain", "inet", "stockade", _pol_chain(state)),
    "delete-element": lambda ns, state: ns.nft(
        "delete", "element", "inet", "stockade", set_named(compile_host(state, HOST), "grp_lb_", 4),
        "{ 198.18.10.2 }"),
    "delete-table": lambda ns, state: ns.nft("delete", "table", "inet", "stockade"),
    "add-chain": lambda ns, state: ns.nft("add", "chain", "inet", "stockade", "intruder"),
}


@kernel
@pytest.mark.parametrize("edit", sorted(DRIFTS))
def test_hand_edit_is_drift_and_next_reconcile_repairs_it(netns, reconciler, other_table, edit):
    state = load_state(revision=1)
    reconciler.reconcile(state)
    assert reconciler.in_sync()
    before = netns.listing("inet", "stockade")
    DRIFTS[edit](netns, state)
    assert not reconciler.in_sync()
    outcome = reconciler.reconcile(load_state(revision=2))
    assert outcome.kind == "full" and outcome.drift_repaired
    assert netns.listing("inet", "stockade") == before
    assert reconciler.in_sync()
    assert reconciler.reconcile(load_state(revision=3)).kind == "none"


@kernel
def test_drift_during_membership_change_is_repaired_with_full_replace(netns, reconciler, other_table):
    state = load_state(revision=1)
    reconciler.reconcile(state)
    netns.nft("add", "rule", "inet", "stockade", "ingress", "accept")
    changed = relabel(state, "shop", "app-1", {"tier": "lb"}, revision=2)
    outcome = reconciler.reconcile(changed)
    assert outcome.kind == "full" and outcome.drift_repaired
    listing = netns.listing("inet", "stockade")
    rules_in_ingress = [i["rule"] for i in listing if "rule" in i and i["rule"]["chain"] == "ingress"]
    assert len(rules_in_ingress) == len(compile_host(changed, HOST).chain("ingress").rules)


@kernel
def test_in_sync_is_false_before_first_apply(reconciler):
    assert not reconciler.in_sync()


# ------------------------------------------------------------------ failure keeps what was applied

@kernel
def test_reconcile_of_a_program_the_kernel_refuses_keeps_the_previous_one(
        netns, reconciler, other_table, monkeypatch):
    good = load_state(revision=1)
    reconciler.reconcile(good)
    before = netns.listing("inet", "stockade")
    monkeypatch.setattr("stockade.agent.reconciler.compile_host_program",
                        lambda state, host, options: HostProgram(broken_ruleset()))
    with pytest.raises(DataplaneError):
        reconciler.reconcile(load_state(revision=2))
    assert netns.listing("inet", "stockade") == before
    assert reconciler.in_sync()
    monkeypatch.undo()
    # The reconciler still knows what the kernel holds: the good state needs nothing.
    assert reconciler.reconcile(load_state(revision=3)).kind == "none"


# ------------------------------------------------- the ruleset generation (the agent's way)
# The agent's driver runs libnftables in its own thread's netns, so it can read the ruleset
# generation there; these tests run driver and reconciler the same way, in a thread inside
# the test's netns (`netns.run_in`).

class CountingDriver(NftDriver):
    """The real driver (default runner, in this thread's netns), counting its table listings."""

    listings: int = 0

    def list_table(self):
        self.listings += 1
        return super().list_table()


@kernel
def test_changes_are_applied_without_listing_the_table_and_the_drift_check_lists_it_once_quiet(
        netns, other_table):
    clock = ManualClock()

    def inside():
        driver = CountingDriver()
        reconciler = Reconciler(driver, HOST, fingerprint_quiet=2.0, clock=clock)
        state = load_state(revision=1)
        kinds = [reconciler.reconcile(state).kind]
        for revision, tier in ((2, "lb"), (3, "app"), (4, "lb")):
            clock.now += 0.5
            state = relabel(state, "shop", "app-1", {"tier": tier, "env": "prod"}, revision)
            kinds.append(reconciler.reconcile(state).kind)
        during_changes = driver.listings
        clock.now += 1.0
        churning = [reconciler.in_sync() for _ in range(3)]  # 1 s after the last change
        while_churning = driver.listings
        clock.now += 1.0
        quiet = [reconciler.in_sync() for _ in range(3)]
        return kinds, during_changes, churning, while_churning, quiet, driver.listings

    kinds, during_changes, churning, while_churning, quiet, after_quiet = ns_mod.run_in(netns.name, inside)
    assert kinds == ["full", "delta", "delta", "delta"]
    assert during_changes == 0
    assert churning == [True, True, True] and while_churning == 0  # no listing while policy churns
    assert quiet == [True, True, True] and after_quiet == 1  # the fingerprint, taken once, when quiet


@kernel
def test_another_tables_commit_before_our_fingerprint_is_taken_counts_as_drift(netns, other_table):
    clock = ManualClock()
    reconciler = Reconciler(NftDriver(), HOST, fingerprint_quiet=2.0, clock=clock)
    ns_mod.run_in(netns.name, lambda: reconciler.reconcile(load_state(revision=1)))
    before = netns.listing("inet", "stockade")
    assert ns_mod.run_in(netns.name, reconciler.in_sync)  # not quiet yet: no fingerprint
    netns.nft("add", "table", "inet", "someone_else")
    assert not ns_mod.run_in(netns.name, reconciler.in_sync)  # unknown whose: repaired, to be safe
    outcome = ns_mod.run_in(netns.name, lambda: reconciler.reconcile(load_state(revision=2)))
    assert outcome.kind == "full" and outcome.drift_repaired
    assert netns.listing("inet", "stockade") == before


@kernel
def test_with_generation_another_tables_commit_is_not_drift_but_a_hand_edit_of_ours_is(netns, other_table):
    clock = ManualClock()
    reconciler = Reconciler(NftDriver(), HOST, fingerprint_quiet=2.0, clock=clock)
    ns_mod.run_in(netns.name, lambda: reconciler.reconcile(load_state(revision=1)))
    clock.now += 2.0
    assert ns_mod.run_in(netns.name, reconciler.in_sync)  # quiet: takes our table's fingerprint
    netns.nft("add", "table", "inet", "someone_else")  # a transaction of another program
    assert ns_mod.run_in(netns.name, reconciler.in_sync)
    assert ns_mod.run_in(netns.name, lambda: reconciler.reconcile(load_state(revision=2))).kind == "none"
    before = netns.listing("inet", "stockade")
    netns.nft("add", "rule", "inet", "stockade", "ingress", "accept")
    assert not ns_mod.run_in(netns.name, reconciler.in_sync)
    outcome = ns_mod.run_in(netns.name, lambda: reconciler.reconcile(load_state(revision=3)))
    assert outcome.kind == "full" and outcome.drift_repaired
    assert netns.listing("inet", "stockade") == before


@kernel
def test_with_generation_a_hand_edit_before_the_fingerprint_was_taken_is_repaired(netns, other_table):
    reconciler = Reconciler(NftDriver(), HOST)
    state = load_state(revision=1)
    ns_mod.run_in(netns.name, lambda: reconciler.reconcile(state))
    before = netns.listing("inet", "stockade")
    netns.nft("add", "chain", "inet", "stockade", "intruder")
    changed = relabel(state, "shop", "app-1", {"tier": "lb", "env": "prod"}, revision=2)
    outcome = ns_mod.run_in(netns.name, lambda: reconciler.reconcile(changed))
    assert outcome.kind == "full" and outcome.drift_repaired
    assert "intruder" not in chains_in(netns.listing("inet", "stockade"))
    assert before != netns.listing("inet", "stockade")  # the change itself is there too
    assert ns_mod.run_in(netns.name, reconciler.in_sync)
