"""Domain names as egress peers (issue 18): validation and upstream's wildcard meaning. Pure."""

from __future__ import annotations

import pytest

from stockade.errors import ValidationError
from stockade.model.fqdn import check_pattern, matches, normalise
from stockade.model.kinds import parse_object


@pytest.mark.parametrize("pattern,name,expected", [
    ("api.partner.example", "api.partner.example", True),
    ("api.partner.example", "API.Partner.Example.", True),          # case and the root dot
    ("API.partner.example.", "api.partner.example", True),
    ("partner.example", "www.partner.example", False),              # exact is exact
    ("partner.example", "my-partner.example", False),
    ("blog.partner.example", "partner.example", False),
    ("*.cdn.example", "a.cdn.example", True),                        # one label
    ("*.cdn.example", "a.b.cdn.example", True),                      # or more
    ("*.cdn.example", "cdn.example", False),                         # never the parent itself
    ("*.cdn.example", "xcdn.example", False),                        # whole labels only
    ("*.cdn.example", "a.cdn.example.evil.example", False),
    ("*.CDN.example.", "A.cdn.EXAMPLE", True),
])
def test_names_match_as_upstream_domain_names_say(pattern: str, name: str, expected: bool) -> None:
    assert matches(pattern, name) is expected


@pytest.mark.parametrize("text,words", [
    ("example", "at least two labels"),
    ("*.example", "at least two labels"),
    ("api.*.example", "wildcard may only be the first label"),
    ("*api.example", "wildcard may only be the first label"),
    ("-api.example", "not a valid label"),
    ("api..example", "not a valid label"),
    ("api.exa mple", "not a valid label"),
    ("a" * 64 + ".example", "not a valid label"),
    (".".join(["a" * 60] * 5), "longer than 253"),
])
def test_a_malformed_name_is_refused_saying_why(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        check_pattern(text)


def test_valid_names_are_kept_as_written_and_compared_normalised() -> None:
    assert check_pattern("API.Partner.Example.") == "API.Partner.Example."
    assert check_pattern("s_rv.cdn-1.example") == "s_rv.cdn-1.example"
    assert normalise("API.Partner.Example.") == "api.partner.example"


def policy(egress: list, ingress: list | None = None) -> dict:
    return {"apiVersion": "stockade.io/v1", "kind": "Policy", "metadata": {"name": "p", "namespace": "x"},
            "spec": {"appliesTo": {"selector": {}}, "egress": egress, "ingress": ingress or []}}


def test_an_fqdn_peer_takes_ports_like_any_peer() -> None:
    obj = parse_object(policy([{"action": "allow", "to": [{"fqdn": "api.partner.example"}],
                                "ports": [{"protocol": "TCP", "port": 443}]}]))
    assert obj.spec.egress[0].to[0].fqdn == "api.partner.example"


@pytest.mark.parametrize("doc,field,words", [
    (policy([{"action": "allow", "to": [{"fqdn": "bad..name"}]}]), "spec.egress[0].to[0].fqdn", "not a valid label"),
    (policy([{"action": "allow", "to": [{"fqdn": "a.example", "cidr": "198.19.0.0/16"}]}]), "spec.egress[0].to[0]",
     "cidr and fqdn"),
    (policy([], [{"action": "allow", "from": [{"fqdn": "a.example"}]}]), "spec", "egress peer only"),
])
def test_a_bad_fqdn_peer_is_refused_naming_object_and_field(doc: dict, field: str, words: str) -> None:
    with pytest.raises(ValidationError) as refused:
        parse_object(doc)
    assert "Policy x/p" in str(refused.value) and field in str(refused.value) and words in str(refused.value)
