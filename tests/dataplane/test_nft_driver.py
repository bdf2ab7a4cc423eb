"""NftDriver and Reconciler against the real kernel, each test in its own network namespace.

Root, nftables and `ip netns` are needed (marker `kernel`). Every namespace is
uniquely named and deleted in the fixture's teardown, also when the test fails.
The driver runs inside it through an injected runner (`ip netns exec NAME ...`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from stockade.agent.reconciler import Reconciler
from stockade.compile.host import HostProgram, compile_host
from stockade.dataplane import nft_driver
from stockade.dataplane.nft_driver import NftDriver, counters_by_comment, run_command
from stockade.errors import DataplaneError
from stockade.lab import netns as ns_mod
from stockade.model.kinds import parse_object
from stockade.model.state import DesiredState
from stockade.nft import render
from stockade.nft.ir import Accept, Chain, Jump, Rule, Ruleset

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ip"),
                       reason="needs root, nft and ip"),
]

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
HOST = "hv1"
OTHER_TABLE = """
table inet other {
    set keep { type ipv4_addr; elements = { 192.0.2.1 } }
    chain keep_chain {
        type filter hook forward priority 5; policy accept;
        ip saddr @keep counter accept comment "not ours"
    }
}
"""


def load_state(case: str = "shop", revision: int = 1) -> DesiredState:
    docs = [d for d in yaml.safe_load_all((GOLDEN / f"{case}.yaml").read_text()) if d]
    return DesiredState.from_objects(revision, [parse_object(d) for d in docs])


def relabel(state: DesiredState, ns: str, name: str, labels: dict[str, str], revision: int) -> DesiredState:
    wl = state.workloads[(ns, name)]
    changed = wl.model_copy(update={"metadata": wl.metadata.model_copy(update={"labels": labels})})
    return state.with_changes(revision, put=[changed])


class Netns:
    def __init__(self, name: str) -> None:
        self.name = name

    def runner(self, cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_command(["ip", "netns", "exec", self.name, *cmd], stdin)

    def nft(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = self.runner(["nft", *args], stdin)
        if check:
            assert res.returncode == 0, f"nft {' '.join(args)}: {res.stderr}"
        return res

    def listing(self, family: str, table: str) -> list[dict]:
        """The table's JSON listing without handles and metainfo (comparable across applies)."""
        out = json.loads(self.nft("-j", "list", "table", family, table).stdout)
        return _strip(out)["nftables"]


def _strip(node):
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k not in ("handle",)}
    if isinstance(node, list):
        return [_strip(x) for x in node if not (isinstance(x, dict) and "metainfo" in x)]
    return node


@pytest.fixture
def netns():
    name = f"stkt-{uuid.uuid4().hex[:10]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        yield Netns(name)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


@pytest.fixture
def other_table(netns):
    """Another program's table, which must survive everything we do."""
    netns.nft("-f", "-", stdin=OTHER_TABLE)
    before = netns.listing("inet", "other")
    yield before
    assert netns.listing("inet", "other") == before, "the driver touched a table that is not its own"


@pytest.fixture
def driver(netns):
    return NftDriver(runner=netns.runner)


@pytest.fixture
def reconciler(driver):
    return Reconciler(driver, HOST)


def chains_in(listing: list[dict]) -> set[str]:
    return {item["chain"]["name"] for item in listing if "chain" in item}


def set_elements(listing: list[dict], set_name: str) -> set[str]:
    """Elements of one set in a listing, as `addr` or `addr/len` strings."""
    for item in listing:
        s = item.get("set")
        if s and s["name"] == set_name:
            out = set()
            for e in s.get("elem", []):
                if isinstance(e, dict) and "prefix" in e:
                    out.add(f"{e['prefix']['addr']}/{e['prefix']['len']}")
                elif isinstance(e, dict) and "range" in e:
                    out.add("-".join(e["range"]))
                else:
                    out.add(json.dumps(e) if not isinstance(e, str) else e)
            return out
    raise AssertionError(f"no set {set_name} in the listing")


def ir_elements(rs: Ruleset, set_name: str) -> set[str]:
    return {e[:-3] if e.endswith("/32") else e[:-4] if e.endswith("/128") else e for e in rs.set(set_name).elements}


def set_named(rs: Ruleset, prefix: str, family: int) -> str:
    (name,) = [s.name for s in rs.sets if s.name.startswith(prefix) and s.name.endswith(f"_{family}")]
    return name


# ------------------------------------------------------------------ reconcile

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


def test_second_reconcile_of_same_state_does_nothing(netns, reconciler, other_table):
    reconciler.reconcile(load_state(revision=1))
    before = netns.listing("inet", "stockade")
    outcome = reconciler.reconcile(load_state(revision=2))
    assert outcome.kind == "none" and outcome.objects_sent == 0 and outcome.revision == 2
    assert netns.listing("inet", "stockade") == before


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


def test_in_sync_is_false_before_first_apply(reconciler):
    assert not reconciler.in_sync()


# ------------------------------------------------------------------ failure keeps what was applied

def _broken_ruleset(table: str = "stockade") -> Ruleset:
    """Valid IR, refused by the kernel: a jump to a chain that does not exist."""
    return Ruleset(table, chains=(Chain("egress", (Rule((), Jump("no_such_chain")),)),
                                  Chain("ok", (Rule((), Accept(), "fine"),))))


def test_driver_refusal_raises_dataplane_error_and_keeps_the_table(netns, driver, reconciler, other_table):
    reconciler.reconcile(load_state())
    before = netns.listing("inet", "stockade")
    with pytest.raises(DataplaneError) as e:
        driver.apply(render.full_replace(_broken_ruleset()))
    assert e.value.returncode != 0 and e.value.stderr
    assert e.value.cmd[-3:] == ["-j", "-f", "-"]
    assert netns.listing("inet", "stockade") == before
    assert reconciler.in_sync()


def test_reconcile_of_a_program_the_kernel_refuses_keeps_the_previous_one(
        netns, reconciler, other_table, monkeypatch):
    good = load_state(revision=1)
    reconciler.reconcile(good)
    before = netns.listing("inet", "stockade")
    monkeypatch.setattr("stockade.agent.reconciler.compile_host_program",
                        lambda state, host, options: HostProgram(_broken_ruleset()))
    with pytest.raises(DataplaneError):
        reconciler.reconcile(load_state(revision=2))
    assert netns.listing("inet", "stockade") == before
    assert reconciler.in_sync()
    monkeypatch.undo()
    # The reconciler still knows what the kernel holds: the good state needs nothing.
    assert reconciler.reconcile(load_state(revision=3)).kind == "none"


def test_first_apply_refused_leaves_no_table(netns, driver, other_table):
    with pytest.raises(DataplaneError):
        driver.apply(render.full_replace(_broken_ruleset()))
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
        driver.apply(render.full_replace(_broken_ruleset()))
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

class CountingDriver(NftDriver):
    """The real driver (default runner, in this thread's netns), counting its table listings."""

    listings: int = 0

    def list_table(self):
        self.listings += 1
        return super().list_table()


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


class ManualClock:
    """The reconciler's clock, moved by the test (the kernel parts stay real)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


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
