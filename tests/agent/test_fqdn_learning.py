"""The learner of DNS answers (issue 18): which fqdn sets an answer opens, for how long, and what a
full replace puts back. Pure (a fake clock)."""

from __future__ import annotations

import pytest

from stockade.agent.fqdn_learning import Answer, LearnedNames
from stockade.nft.ir import NamedSet, Ruleset


def program(*patterns: str) -> Ruleset:
    sets = []
    for i, p in enumerate(patterns):
        sets += [NamedSet(f"fqdn_{i}_4", ("ipv4_addr",), fqdn=p), NamedSet(f"fqdn_{i}_6", ("ipv6_addr",), fqdn=p)]
    sets.append(NamedSet("grp_x_4", ("ipv4_addr",), ("198.18.0.1",)))
    return Ruleset("stockade", "inet", tuple(sets), (), ())


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


API = Answer(("api.partner.example",), (("198.19.1.7", 30), ("2001:db8:e::1:7", 30)))


def test_an_answer_opens_the_sets_whose_pattern_its_names_fall_under_each_family_its_own() -> None:
    learner = LearnedNames(min_ttl=5, max_ttl=3600)
    got = learner.learn(API, program("api.partner.example", "*.partner.example", "other.example"))
    assert got == [("fqdn_0_4", "198.19.1.7", 30), ("fqdn_0_6", "2001:db8:e::1:7", 30),
                   ("fqdn_1_4", "198.19.1.7", 30), ("fqdn_1_6", "2001:db8:e::1:7", 30)]


def test_a_cname_chain_opens_a_rule_on_any_of_its_names() -> None:
    chain = Answer(("api.partner.example", "lb.hosting.example"), (("198.19.1.9", 60),))
    assert [e[0] for e in LearnedNames().learn(chain, program("lb.hosting.example"))] == ["fqdn_0_4"]


def test_an_answer_no_rule_wants_is_not_kept() -> None:
    learner = LearnedNames()
    assert learner.learn(API, program("other.example")) == []
    assert learner.counts() == (0, 0)
    assert learner.elements_for(program("api.partner.example")) == {}


@pytest.mark.parametrize("ttl,timeout", [(1, 5), (30, 30), (10**6, 3600)])
def test_timeouts_are_the_ttl_within_the_bounds(ttl: int, timeout: int) -> None:
    learner = LearnedNames(min_ttl=5, max_ttl=3600)
    answer = Answer(("a.example",), (("198.19.1.1", ttl),))
    assert learner.learn(answer, program("a.example")) == [("fqdn_0_4", "198.19.1.1", timeout)]


def test_a_full_replace_gets_what_is_still_alive_with_the_time_left_and_a_new_pattern_gets_old_names() -> None:
    clock = Clock()
    learner = LearnedNames(min_ttl=5, max_ttl=3600, clock=clock)
    learner.learn(API, program("api.partner.example"))
    learner.learn(Answer(("short.partner.example",), (("198.19.1.8", 10),)), program("*.partner.example"))
    clock.now += 20
    # A new program with a wildcard the names fall under: both learned names are there, the short one gone.
    assert learner.elements_for(program("*.partner.example")) == {
        "fqdn_0_4": [("198.19.1.7", 10)], "fqdn_0_6": [("2001:db8:e::1:7", 10)]}
    assert learner.names_of("198.19.1.7") == ["api.partner.example"]
    assert learner.counts() == (1, 2)
    clock.now += 10
    assert learner.elements_for(program("*.partner.example")) == {} and learner.names_of("198.19.1.7") == []


def test_what_the_kernel_still_held_at_start_is_taken_back_into_the_same_set() -> None:
    clock = Clock()
    learner = LearnedNames(clock=clock)
    learner.remember("fqdn_0_4", [("198.19.2.1", 40)])   # the set's name is its pattern's (compile.sets)
    assert learner.elements_for(program("*.cdn.example")) == {"fqdn_0_4": [("198.19.2.1", 40)]}
    clock.now += 41
    assert learner.elements_for(program("*.cdn.example")) == {}


def test_bounds_must_make_sense() -> None:
    with pytest.raises(ValueError, match="TTL bounds"):
        LearnedNames(min_ttl=100, max_ttl=10)
