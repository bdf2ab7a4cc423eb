"""parse_selector: Kubernetes LabelSelector semantics, errors that name the field, canonical form."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stockade.model.selectors import MATCH_ALL, SelectorSyntaxError, parse_selector

WEB_PROD = {"tier": "web", "env": "prod"}


def expr(key: str, operator: str, values: list[str] | None = None) -> dict:
    out: dict = {"key": key, "operator": operator}
    if values is not None:
        out["values"] = values
    return out


def sel(*exprs: dict, **match_labels: str):
    raw: dict = {}
    if match_labels:
        raw["matchLabels"] = match_labels
    if exprs:
        raw["matchExpressions"] = list(exprs)
    return parse_selector(raw)


# ------------------------------------------------------------- matching

def test_match_labels_requires_every_pair():
    s = sel(tier="web", env="prod")
    assert s.matches(WEB_PROD)
    assert s.matches({**WEB_PROD, "extra": "x"})
    assert not s.matches({"tier": "web"})
    assert not s.matches({"tier": "web", "env": "dev"})


def test_in_matches_listed_values_only():
    s = sel(expr("env", "In", ["prod", "staging"]))
    assert s.matches({"env": "prod"})
    assert s.matches({"env": "staging"})
    assert not s.matches({"env": "dev"})
    assert not s.matches({})


def test_notin_rejects_listed_values_and_matches_absent_key():
    s = sel(expr("env", "NotIn", ["prod"]))
    assert not s.matches({"env": "prod"})
    assert s.matches({"env": "dev"})
    assert s.matches({}), "Kubernetes: NotIn matches when the key is absent"


def test_exists_needs_the_key_whatever_its_value():
    s = sel(expr("tier", "Exists"))
    assert s.matches({"tier": "web"})
    assert s.matches({"tier": ""})
    assert not s.matches({"env": "prod"})


def test_does_not_exist_needs_the_key_absent():
    s = sel(expr("tier", "DoesNotExist"))
    assert s.matches({"env": "prod"})
    assert not s.matches({"tier": "web"})


def test_requirements_are_anded():
    s = sel(expr("env", "In", ["prod"]), expr("legacy", "DoesNotExist"), tier="web")
    assert s.matches(WEB_PROD)
    assert not s.matches({**WEB_PROD, "legacy": "yes"})
    assert not s.matches({"tier": "app", "env": "prod"})


@pytest.mark.parametrize("raw", [None, {}, {"matchLabels": {}}, {"matchLabels": {}, "matchExpressions": []}])
def test_empty_selector_matches_every_label_set(raw):
    s = parse_selector(raw)
    assert s.is_empty
    assert s == MATCH_ALL
    assert s.matches({})
    assert s.matches(WEB_PROD)


def test_prefixed_label_key_is_accepted():
    s = sel(**{"example.com/team": "ops"})
    assert s.matches({"example.com/team": "ops"})
    assert not s.matches({"team": "ops"})


# ------------------------------------------------------------- canonical form

def test_equal_selectors_compare_and_hash_equal_whatever_their_order():
    a = parse_selector({
        "matchLabels": {"tier": "web", "env": "prod"},
        "matchExpressions": [expr("zone", "In", ["b", "a"]), expr("legacy", "DoesNotExist")],
    })
    b = parse_selector({
        "matchExpressions": [expr("legacy", "DoesNotExist"), expr("zone", "In", ["a", "b"])],
        "matchLabels": {"env": "prod", "tier": "web"},
    })
    assert a == b
    assert hash(a) == hash(b)
    assert a.describe() == b.describe()


def test_different_selectors_compare_unequal():
    assert sel(tier="web") != sel(tier="app")
    assert sel(expr("tier", "In", ["web"])) != sel(expr("tier", "NotIn", ["web"]))


def test_describe_is_kubectl_like():
    s = sel(expr("env", "In", ["staging", "prod"]), expr("legacy", "DoesNotExist"), expr("zone", "Exists"),
            tier="web")
    assert s.describe() == "env in (prod,staging),!legacy,tier=web,zone"
    assert MATCH_ALL.describe() == "<all>"


# ------------------------------------------------------------- errors name the field

@pytest.mark.parametrize("raw, field, words", [
    ({"matchExpressions": [expr("env", "Equals", ["x"])]}, "matchExpressions[0].operator", ["Equals"]),
    ({"matchExpressions": [expr("a", "In", ["x"]), expr("env", "Exists", ["prod"])]},
     "matchExpressions[1].values", ["empty", "Exists"]),
    ({"matchExpressions": [expr("env", "DoesNotExist", ["prod"])]}, "matchExpressions[0].values",
     ["empty", "DoesNotExist"]),
    ({"matchExpressions": [expr("env", "In", [])]}, "matchExpressions[0].values", ["empty", "In"]),
    ({"matchExpressions": [expr("env", "NotIn")]}, "matchExpressions[0].values", ["empty", "NotIn"]),
    ({"matchExpressions": [{"operator": "Exists"}]}, "matchExpressions[0].key", ["required"]),
    ({"matchExpressions": [expr("bad key", "Exists")]}, "matchExpressions[0].key", ["bad key"]),
    ({"matchExpressions": [expr("env", "In", ["ok", "not ok"])]}, "matchExpressions[0].values[1]", ["not ok"]),
    ({"matchExpressions": [{**expr("env", "Exists"), "value": "x"}]}, "matchExpressions[0].value", ["unknown"]),
    ({"matchExpressions": "env=prod"}, "matchExpressions", ["list"]),
    ({"matchLabels": {"bad key": "x"}}, "matchLabels.bad key", ["bad key"]),
    ({"matchLabels": {"-web": "x"}}, "matchLabels.-web", ["-web"]),
    ({"matchLabels": {"/web": "x"}}, "matchLabels./web", ["prefix"]),
    ({"matchLabels": {"Not_A.Domain/web": "x"}}, "matchLabels.Not_A.Domain/web", ["prefix"]),
    ({"matchLabels": {"k" * 64: "x"}}, "matchLabels." + "k" * 64, ["63"]),
    ({"matchLabels": {"tier": "web app"}}, "matchLabels.tier", ["web app"]),
    ({"matchLabels": {"tier": "v" * 64}}, "matchLabels.tier", ["63"]),
    ({"matchLabels": {"tier": 3}}, "matchLabels.tier", ["string"]),
    ({"matchLabels": ["tier=web"]}, "matchLabels", ["mapping"]),
    ({"matchlabels": {"tier": "web"}}, "matchlabels", ["unknown"]),
])
def test_selector_error_names_the_field(raw, field, words):
    with pytest.raises(SelectorSyntaxError) as e:
        parse_selector(raw)
    assert e.value.field == field
    for w in words:
        assert w.lower() in e.value.problem.lower()
    assert str(e.value).startswith(field + ": ")


def test_selector_that_is_not_a_mapping_is_refused():
    with pytest.raises(SelectorSyntaxError):
        parse_selector(["tier=web"])  # type: ignore[arg-type]


def test_empty_label_value_is_valid():
    assert sel(tier="").matches({"tier": ""})
    assert not sel(tier="").matches({"tier": "web"})


# ------------------------------------------------------------- property

_KEYS = st.one_of(
    st.sampled_from(["tier", "env", "app", "example.com/team", "a.b_c-d"]),
    st.from_regex(r"[a-z0-9]([a-z0-9._-]{0,8}[a-z0-9])?", fullmatch=True),
)
_VALUES = st.one_of(
    st.sampled_from(["", "web", "prod", "v1.2", "A_b-c"]),
    st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,8}[A-Za-z0-9])?", fullmatch=True),
)
_LABELS = st.dictionaries(_KEYS, _VALUES, max_size=6)


@given(labels=_LABELS, match_labels=_LABELS, data=st.data())
def test_match_labels_matches_iff_subset_of_labels(labels, match_labels, data):
    # Half the time make matchLabels a real subset (possibly with one value changed),
    # so that both outcomes are explored and not only the rare random subset.
    if labels and data.draw(st.booleans()):
        keys = data.draw(st.lists(st.sampled_from(sorted(labels)), unique=True))
        match_labels = {k: labels[k] for k in keys}
        if keys and data.draw(st.booleans()):
            k = keys[0]
            match_labels[k] = data.draw(_VALUES)
    s = parse_selector({"matchLabels": match_labels})
    assert s.matches(labels) == (match_labels.items() <= labels.items())
