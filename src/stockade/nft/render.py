"""Render the Ruleset IR as libnftables JSON (`nft -j -f -`). Pure, deterministic.

Two kinds of transaction come out of here:
- `full_replace`: add-delete-add of our one table and everything in it, one
  atomic transaction (no packet ever sees a half-built table);
- `set_delta`: only element additions and removals, for membership changes,
  when the structure (chains, rules, maps) is unchanged.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from typing import Any, Mapping, Sequence

from stockade.nft.ir import (
    Accept,
    Cmp,
    Continue,
    CtState,
    Dispatch,
    Dnat,
    Drop,
    FieldRef,
    Goto,
    InAnon,
    InRange,
    InSet,
    Jump,
    MarkHas,
    MarkSet,
    Match,
    NamedSet,
    Reject,
    Return,
    Rule,
    Ruleset,
    SetElement,
    Verdict,
)

Json = dict[str, Any]


def _field(f: FieldRef) -> Json:
    source, key = f
    if source == "meta":
        return {"meta": {"key": key}}
    return {"payload": {"protocol": source, "field": key}}


def _match(m: Match) -> Json:
    if isinstance(m, Cmp):
        return {"match": {"op": "!=" if m.negate else "==", "left": _field(m.field), "right": m.value}}
    if isinstance(m, InRange):
        return {"match": {"op": "==", "left": _field(m.field), "right": {"range": [m.low, m.high]}}}
    if isinstance(m, InSet):
        left = _field(m.fields[0]) if len(m.fields) == 1 else {"concat": [_field(f) for f in m.fields]}
        return {"match": {"op": "!=" if m.negate else "==", "left": left, "right": f"@{m.set_name}"}}
    if isinstance(m, InAnon):
        return {"match": {"op": "!=" if m.negate else "==", "left": _field(m.field),
                          "right": {"set": list(m.values)}}}
    if isinstance(m, CtState):
        return {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": list(m.states)}}
    if isinstance(m, MarkHas):
        masked = {"&": [{"meta": {"key": "mark"}}, m.bit]}
        if m.any_bit:
            return {"match": {"op": "==" if m.negate else "!=", "left": masked, "right": 0}}
        return {"match": {"op": "==", "left": masked, "right": 0 if m.negate else m.bit}}
    raise TypeError(f"unknown match {m!r}")


def _verdict(v: Verdict) -> Json | None:
    if isinstance(v, Accept):
        return {"accept": None}
    if isinstance(v, Drop):
        return {"drop": None}
    if isinstance(v, Return):
        return {"return": None}
    if isinstance(v, Jump):
        return {"jump": {"target": v.target}}
    if isinstance(v, Goto):
        return {"goto": {"target": v.target}}
    if isinstance(v, Reject):
        if v.kind == "tcp-reset":
            return {"reject": {"type": "tcp reset"}}
        return {"reject": {"type": "icmpx", "expr": "port-unreachable"}}
    if isinstance(v, Dispatch):
        key = _field(v.field) if v.mask is None else {"&": [_field(v.field), v.mask]}
        return {"vmap": {"key": key, "data": f"@{v.map_name}"}}
    if isinstance(v, Continue):
        return None
    if isinstance(v, Dnat):
        return {"dnat": {"family": "ip", "addr": v.address, "port": v.port}}
    raise TypeError(f"unknown verdict {v!r}")


def _mark(m: MarkSet) -> Json:
    mark = {"meta": {"key": "mark"}}
    value = {"&": [mark, 0xFFFFFFFF & ~m.bits]} if m.clear else {"|": [mark, m.bits]}
    return {"mangle": {"key": mark, "value": value}}


def _rule_exprs(rule: Rule) -> list[Json]:
    exprs = [_match(m) for m in rule.matches]
    if rule.limit is not None:
        exprs.append({"limit": rule.limit})
    if rule.counter:
        exprs.append({"counter": {"packets": 0, "bytes": 0}})
    if rule.count_into is not None:
        exprs.append({"counter": rule.count_into})
    if rule.mark is not None:
        exprs.append(_mark(rule.mark))
    if rule.log is not None:
        log: Json = {"prefix": rule.log.prefix}
        if rule.log.group is not None:
            log["group"] = rule.log.group
        exprs.append({"log": log})
    verdict = _verdict(rule.verdict)
    if verdict is not None:
        exprs.append(verdict)
    return exprs


def _element(e: SetElement, interval: bool) -> Any:
    if isinstance(e, tuple):
        return {"concat": list(e)}
    if interval and "/" in e:
        net = ipaddress.ip_network(e)
        if net.prefixlen == net.max_prefixlen:
            return str(net.network_address)
        return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}
    return e


def _set_type(s: NamedSet) -> Any:
    return s.type[0] if len(s.type) == 1 else list(s.type)


def _set_decl(rs: Ruleset, s: NamedSet) -> Json:
    decl: Json = {"family": rs.family, "table": rs.table, "name": s.name, "type": _set_type(s)}
    if s.interval:
        decl["flags"] = ["interval"]
    if s.fqdn is not None:
        decl["flags"] = ["timeout"]  # learned addresses expire with their DNS record
    if s.comment:
        decl["comment"] = s.comment
    return decl


def table_ref(rs: Ruleset) -> Json:
    return {"family": rs.family, "name": rs.table}


# Addresses learned from DNS for an fqdn set: (address, seconds left to live).
Learned = Mapping[str, Sequence[tuple[str, int]]]


def full_replace(rs: Ruleset, learned: Learned | None = None) -> Json:
    """One transaction that replaces our table (and only ours) with `rs`, and its bridge-family
    companion (`rs.ports`) with it when it has one: both change in the same atomic commit.
    `learned`: per fqdn set name, the addresses to put back with their time left, so that a
    replacement keeps what DNS taught (the program itself never holds them)."""
    cmds = _replace_commands(rs, learned or {})
    if rs.ports is not None:
        cmds.extend(_replace_commands(rs.ports))
    return {"nftables": cmds}


def _replace_commands(rs: Ruleset, learned: Learned | None = None) -> list[Json]:
    cmds: list[Json] = [
        {"add": {"table": table_ref(rs)}},      # so that the delete below cannot fail
        {"delete": {"table": table_ref(rs)}},
        {"add": {"table": table_ref(rs)}},
    ]
    for s in rs.sets:
        cmds.append({"add": {"set": _set_decl(rs, s)}})
        if s.elements:
            cmds.append({"add": {"element": {"family": rs.family, "table": rs.table, "name": s.name,
                                             "elem": [_element(e, s.interval) for e in s.elements]}}})
        if s.fqdn is not None and learned and learned.get(s.name):
            cmds.append(learned_elements(rs, s.name, learned[s.name]))
    # Stateful objects before the rules that name them.
    for lim in rs.limits:
        cmds.append({"add": {"limit": {"family": rs.family, "table": rs.table, "name": lim.name,
                                       "rate": lim.rate, "per": lim.per, "burst": lim.burst,
                                       "unit": "packets", "inv": lim.over}}})
    for ctr in rs.counters:
        cmds.append({"add": {"counter": {"family": rs.family, "table": rs.table, "name": ctr.name}}})
    # Chains before maps and rules: vmap elements and jumps must find their targets.
    for c in rs.chains:
        chain: Json = {"family": rs.family, "table": rs.table, "name": c.name}
        if c.base is not None:
            chain.update(type=c.base.type, hook=c.base.hook, prio=c.base.priority, policy=c.base.policy)
        if c.comment:
            chain["comment"] = c.comment
        cmds.append({"add": {"chain": chain}})
    for m in rs.maps:
        decl: Json = {"family": rs.family, "table": rs.table, "name": m.name, "type": m.key_type,
                      "map": "verdict"}
        cmds.append({"add": {"map": decl}})
        if m.elements:
            cmds.append({"add": {"element": {"family": rs.family, "table": rs.table, "name": m.name,
                                             "elem": [[k, _verdict(v)] for k, v in m.elements]}}})
    for c in rs.chains:
        for r in c.rules:
            rule: Json = {"family": rs.family, "table": rs.table, "chain": c.name, "expr": _rule_exprs(r)}
            if r.comment:
                rule["comment"] = r.comment
            cmds.append({"add": {"rule": rule}})
    return cmds


def learned_elements(rs: Ruleset, set_name: str, addresses: Sequence[tuple[str, int]]) -> Json:
    """`add element` of learned addresses, each with its own timeout (at least a second)."""
    return {"add": {"element": {"family": rs.family, "table": rs.table, "name": set_name,
                                "elem": [{"elem": {"val": ip, "timeout": max(1, int(ttl))}}
                                         for ip, ttl in sorted(addresses)]}}}


def set_delta(old: Ruleset, new: Ruleset) -> Json | None:
    """Element changes turning `old` into `new`, or None when more than membership differs."""
    if old.structure() != new.structure() or old.ports != new.ports:
        return None  # (the bridge table's elements are structure: it changes whole)
    cmds: list[Json] = []
    old_sets = {s.name: s for s in old.sets}
    for s in new.sets:
        before = set(old_sets[s.name].elements)
        after = set(s.elements)
        gone = sorted(before - after, key=str)
        added = sorted(after - before, key=str)
        ref = {"family": new.family, "table": new.table, "name": s.name}
        if gone:
            cmds.append({"delete": {"element": {**ref, "elem": [_element(e, s.interval) for e in gone]}}})
        if added:
            cmds.append({"add": {"element": {**ref, "elem": [_element(e, s.interval) for e in added]}}})
    return {"nftables": cmds}


def delete_table(table: str, family: str = "inet") -> Json:
    ref = {"family": family, "name": table}
    return {"nftables": [{"add": {"table": ref}}, {"delete": {"table": ref}}]}


def to_json(program: Json) -> str:
    return json.dumps(program, sort_keys=True, separators=(",", ":"))


def structure_digest(rs: Ruleset) -> str:
    """Hash of the program without its set elements (see `Ruleset.structure`)."""
    return hashlib.sha256(to_json(full_replace(rs.structure())).encode()).hexdigest()


def program_hash(rs: Ruleset, structure: str | None = None) -> str:
    """Hash of the full program, what `status` reports: its structure and every set's elements.

    `structure` is `structure_digest(rs)` when the caller knows it: a membership change keeps
    the structure, and then only the elements are hashed again instead of the JSON of the
    whole program (which, for a large policy, costs more than compiling it).
    """
    digest = hashlib.sha256((structure or structure_digest(rs)).encode())
    for s in rs.sets:
        digest.update(f"\0{s.name}\0".encode())
        digest.update("\n".join(map(str, s.elements)).encode())
    for s in rs.ports.sets if rs.ports is not None else ():
        digest.update(f"\0bridge {s.name}\0".encode())
        digest.update("\n".join(map(str, s.elements)).encode())
    return digest.hexdigest()[:16]


def count_objects(program: Json) -> int:
    """Commands plus set elements in a transaction: a size that does not depend on formatting."""
    total = 0
    for cmd in program["nftables"]:
        total += 1
        for body in cmd.values():
            if isinstance(body, dict) and "element" in body:
                total += len(body["element"].get("elem", [])) - 1
    return total
