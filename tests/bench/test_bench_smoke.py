"""Smoke runs of every benchmark at tiny sizes: the figures have the right shape and sane values,
and nothing is left behind. The real sizes run in `make bench`, never in `make test`."""

from __future__ import annotations

import json
import math
import re
import subprocess

import pytest

from bench import compile as compile_bench
from bench import fqdn, memory, migration, packets, replicated, rollout, synthetic, txsize
from bench.common import Figure, percentile
from bench.run import FIGURES

FIELDS = {"name", "title", "values", "ratio", "target", "met", "notes"}


def bench_netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if re.match(r"^b[0-9a-f]{4}-", line)}


def check_shape(fig: Figure, name: str) -> dict:
    d = json.loads(json.dumps(fig.to_dict()))  # what results.json holds
    assert set(d) == FIELDS and d["name"] == name
    assert isinstance(d["met"], bool) and d["target"]
    assert d["ratio"] is not None and math.isfinite(d["ratio"]) and d["ratio"] > 0
    return d["values"]


@pytest.fixture
def no_leftovers():
    before = bench_netns()
    yield
    assert bench_netns() <= before, "a benchmark left network namespaces behind"


def test_every_figure_of_the_issue_is_in_the_suite():
    assert set(FIGURES) == {"packets", "compile", "rollout", "txsize", "memory", "replicated", "migration", "fqdn"}


def test_synthetic_state_is_deterministic_and_has_the_bench_pair():
    a, b = synthetic.documents(300, 60), synthetic.documents(300, 60)
    assert a == b and a != synthetic.documents(300, 60, seed=9)
    state = synthetic.state(300, 60)
    assert len([k for k in state.workloads if k[0] != synthetic.BENCH_NS]) == 300
    assert synthetic.BENCH_CLIENT in state.workloads and synthetic.BENCH_SERVER in state.workloads
    assert len(state.policies) == 60 + synthetic.GLOBAL_POLICIES + 2  # synthetic, global, the bench pair's


def test_percentile_nearest_rank():
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
    assert percentile([1.0, 9.0], 99) == 9.0


def test_compile_figure_at_tiny_size():
    values = check_shape(compile_bench.run(100, 20, 10, repeats=1), "compile")
    assert 0 < values["base_s"] < 5 and 0 < values["scaled_s"] < 30
    assert values["scaled_program_bytes"] > 0


def test_naive_baseline_is_a_linear_chain_with_the_pair_in_it():
    program, loaded, total = packets.naive_program(synthetic.state(100, 20), cap=300)
    rules = [c["add"]["rule"] for c in program["nftables"] if "rule" in c.get("add", {})]
    assert loaded == len(rules) == 300 + 3  # ct accept, the pair, the final drop
    assert total >= 300


def test_wrk_output_is_read():
    out = ("  Latency Distribution\n     50%  250.00us\n     75%  1.00ms\n     90%  2.00ms\n     99%    1.50s\n"
           "  1000 requests in 1.00s, 100.00KB read\nRequests/sec:   9876.54\n")
    assert packets.parse_wrk(out) == {"conn_per_s": 9876.54, "p50_ms": 0.25, "p99_ms": 1500.0, "errors": 0.0}


@pytest.mark.kernel
def test_packets_figure_at_tiny_size(no_leftovers):
    values = check_shape(packets.run(large=(200, 40), rounds=1, seconds=1, naive_cap=500), "packets")
    for config in packets.CONFIGS:
        assert values[f"{config}_conn_per_s"] > 100, config
        assert 0 < values[f"{config}_p50_ms"] <= values[f"{config}_p99_ms"]
    assert values["socket_errors"] == {c: 0 for c in packets.CONFIGS}
    assert values["naive_rules_loaded"] == 503


@pytest.mark.kernel
def test_txsize_figure_at_tiny_size(no_leftovers):
    fig = txsize.run((50, 10), (500, 100))
    values = check_shape(fig, "txsize")
    assert values["small_delta_objects"] == values["large_delta_objects"] == 2  # one element per family
    assert fig.ratio == 1.0 and fig.met


@pytest.mark.kernel
def test_rollout_figure_at_tiny_size(no_leftovers):
    fig = rollout.run(hosts=2, applies=2, relabels=2, small_hosts=0)
    values = check_shape(fig, "rollout")
    assert values["label_delta_transactions"] == 2 * 2 and values["label_full_transactions"] == 0
    assert 0 <= values["apply_p50_ms"] <= values["apply_p99_ms"] < 30_000
    # Enforced (the agents' appliedAt) comes before the controller's status shows it.
    assert values["apply_p50_ms"] <= values["apply_observed_p50_ms"] < 30_000


@pytest.mark.kernel
def test_replicated_figure_at_tiny_size(no_leftovers):
    values = check_shape(replicated.run(hosts=2, applies=2, relabels=2), "replicated")
    assert 0 <= values["etcd_apply_p50_ms"] <= values["etcd_apply_p99_ms"] < 30_000
    assert 0 <= values["sqlite_apply_p50_ms"] <= values["sqlite_apply_p99_ms"] < 30_000
    assert 0 < values["failover_s"] < 60 and values["failover_attempts"] >= 1


@pytest.mark.kernel
def test_migration_figure_at_tiny_size(no_leftovers):
    values = check_shape(migration.run(moves=1, applies=2), "migration")
    assert 0 < values["downtime_p50_ms"] <= values["downtime_p99_ms"] < 30_000
    assert values["connections_carried"][0] >= 1 and values["rollout_apply_p50_ms"] > 0


@pytest.mark.kernel
def test_fqdn_figure_at_tiny_size(no_leftovers):
    values = check_shape(fqdn.run(names=20, queries=10, round_trips=100), "fqdn")
    assert 0 < values["lookup_direct_p50_ms"] and 0 < values["lookup_proxy_p50_ms"] <= values["lookup_proxy_p99_ms"]
    assert values["learned_elements"] == 20  # every name learned through the proxy, one address each
    assert 0 < values["rtt_1_name_p50_ms"] < 1000 and 0 < values["rtt_all_names_p50_ms"] < 1000


@pytest.mark.kernel
def test_memory_figure_at_tiny_size(no_leftovers):
    values = check_shape(memory.run(200, 40), "memory")
    assert 20 < values["agent_rss_mib"] <= values["agent_peak_rss_mib"] < 2000
    assert values["controller_rss_mib"] > 20 and values["revision"] >= 1
