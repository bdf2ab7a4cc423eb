"""nft.render: the set-element delta between two Rulesets, and the program hash.

Rulesets compiled from the golden inputs (tests/golden/): a membership change on another host is
a change of set elements only, so it goes to the kernel as element commands, never as a table
rewrite; a change of the local workloads' policies changes the structure, so no delta exists.
"""

from __future__ import annotations

import json

from stockade.compile.host import compile_host
from stockade.nft import render
from tests.golden_states import HOST, load_state, relabel


# ------------------------------------------------------------------ membership is data

def _element_commands_only(delta: dict) -> None:
    assert delta["nftables"], "the delta is empty"
    for cmd in delta["nftables"]:
        ((op, body),) = cmd.items()
        assert op in ("add", "delete") and set(body) == {"element"}, cmd


def test_label_change_of_a_peer_changes_only_set_elements():
    old_state = load_state("shop")
    new_state = relabel(old_state, "shop", "web-2", {"tier": "canary", "env": "prod"})  # web-2 is on hv2
    old, new = compile_host(old_state, HOST), compile_host(new_state, HOST)
    assert old != new
    assert old.structure() == new.structure()
    delta = render.set_delta(old, new)
    assert delta is not None
    _element_commands_only(delta)
    deleted = {(c["delete"]["element"]["name"], json.dumps(e)) for c in delta["nftables"] if "delete" in c
               for e in c["delete"]["element"]["elem"]}
    web4 = next(s.name for s in new.sets if s.name.startswith("grp_web_") and s.name.endswith("_4"))
    assert (web4, json.dumps("198.18.10.12")) in deleted
    assert not any("add" in c for c in delta["nftables"])


def test_new_peer_member_is_an_element_addition():
    old_state = load_state("shop")
    new_state = relabel(old_state, "shop", "app-1", {"tier": "lb"})  # app-1 (hv2) joins lb, leaves app
    old, new = compile_host(old_state, HOST), compile_host(new_state, HOST)
    delta = render.set_delta(old, new)
    assert delta is not None
    _element_commands_only(delta)
    lb4 = next(s.name for s in new.sets if s.name.startswith("grp_lb_") and s.name.endswith("_4"))
    added = [c["add"]["element"] for c in delta["nftables"] if "add" in c]
    assert any(a["name"] == lb4 and "198.18.10.21" in a["elem"] for a in added)


def test_change_of_local_workload_policies_changes_structure():
    old_state = load_state("shop")
    new_state = relabel(old_state, "shop", "web-1", {"tier": "app", "env": "prod"})  # local: now shop/app applies
    old, new = compile_host(old_state, HOST), compile_host(new_state, HOST)
    assert old.structure() != new.structure()
    assert render.set_delta(old, new) is None
    assert "Policy shop/app ingress" in {c.comment for c in new.chains}


def test_identical_rulesets_give_an_empty_delta():
    rs = compile_host(load_state("shop"), HOST)
    assert render.set_delta(rs, rs) == {"nftables": []}


def test_program_hash_covers_structure_and_elements_and_a_known_structure_gives_the_same_hash():
    from dataclasses import replace

    from stockade.nft.render import program_hash, structure_digest

    rs = compile_host(load_state("shop"), HOST)
    moved = next(s for s in rs.sets if s.elements)
    fewer = replace(rs, sets=tuple(replace(s, elements=s.elements[1:]) if s is moved else s for s in rs.sets))
    shorter = replace(rs, chains=rs.chains[:-1])
    assert len({program_hash(rs), program_hash(fewer), program_hash(shorter)}) == 3
    assert program_hash(fewer, structure_digest(rs)) == program_hash(fewer)  # the structure is the same
    assert program_hash(compile_host(load_state("shop"), HOST)) == program_hash(rs)  # deterministic
