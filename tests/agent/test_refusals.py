"""isolate_refused: the smallest set of workloads to leave out, found by halving (pure)."""

from __future__ import annotations

import itertools

import pytest

from stockade.agent.refusals import isolate_refused


def kernel_refusing(culprits: set[int], log: list[frozenset[int]]):
    def accepted(left_out: frozenset[int]) -> bool:
        log.append(left_out)
        return culprits <= left_out
    return accepted


@pytest.mark.parametrize("n, culprits", [
    (1, {0}), (8, {3}), (8, {0, 7}), (100, {17, 18, 63}), (5, set()), (64, set(range(64))),
])
def test_finds_exactly_the_refused_workloads(n: int, culprits: set[int]) -> None:
    log: list[frozenset[int]] = []
    assert sorted(isolate_refused(list(range(n)), kernel_refusing(culprits, log)) or []) == sorted(culprits)


def test_a_refusal_that_is_no_workload_s_keeps_nothing_out() -> None:
    assert isolate_refused([1, 2, 3], lambda left_out: False) is None


def test_one_culprit_among_a_thousand_takes_few_checks() -> None:
    log: list[frozenset[int]] = []
    assert isolate_refused(list(range(1000)), kernel_refusing({612}, log)) == [612]
    assert len(log) <= 2 * 10 + 2  # about 2·log2(n), not n


def test_workloads_refused_only_together_are_not_all_left_out() -> None:
    # The kernel refuses when both 2 and 5 are in (say, a shared limit): leaving out one is enough.
    def accepted(left_out: frozenset[int]) -> bool:
        return bool({2, 5} & left_out)
    found = isolate_refused(list(range(8)), accepted)
    assert found is not None and len(found) == 1 and set(found) <= {2, 5}


def test_whatever_it_answers_the_rest_is_accepted() -> None:
    for culprits in itertools.combinations(range(6), 2):
        found = isolate_refused(list(range(6)), kernel_refusing(set(culprits), []))
        assert found is not None and set(found) == set(culprits)
