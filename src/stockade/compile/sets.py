"""Named sets of a host program: addresses of groups, selector peers and CIDR peers. Pure.

One set per distinct peer and address family, named stably from what it stands for, so
that equal peers share a set and a membership change is an element update.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stockade.compile.addresses import family_of, interval_elements
from stockade.compile.selection import Selection, selector_key
from stockade.model.fqdn import normalise
from stockade.model.naming import object_name
from stockade.model.objects import Peer
from stockade.model.state import DesiredState
from stockade.model.validation import group_ref
from stockade.nft.ir import FQDN_SET_PREFIX, NamedSet


@dataclass
class SetBuilder:
    state: DesiredState
    sel: Selection
    sets: dict[str, NamedSet] = field(default_factory=dict)

    def add_set(self, name: str, type_: tuple[str, ...], elements: tuple, interval: bool,
                 comment: str) -> str:
        if name not in self.sets:
            self.sets[name] = NamedSet(name, type_, tuple(sorted(elements, key=str)), interval, comment[:128])
        return name

    def address_sets(self, prefix: str, identity: str, hint: str, ips: list[str], cidrs: list[str],
                      excepts: list[str], families: tuple[int, ...], comment: str) -> list[tuple[int, str]]:
        out = []
        for fam in families:
            name = object_name(prefix, identity, hint) + f"_{fam}"
            elements = interval_elements(ips, cidrs, excepts, fam)
            out.append((fam, self.add_set(name, ("ipv4_addr" if fam == 4 else "ipv6_addr",),
                                           elements, True, comment)))
        return out

    def fqdn_sets(self, pattern: str) -> list[tuple[int, str]]:
        """Empty learned-address sets for a domain name or pattern, one per family; equal patterns
        (case and trailing dot aside) share them, on this host, across policies."""
        key = normalise(pattern)
        hint = key.replace("*", "any").replace(".", "-")
        out = []
        for fam in (4, 6):
            name = object_name(FQDN_SET_PREFIX.rstrip("_"), f"fqdn:{key}", hint) + f"_{fam}"
            if name not in self.sets:
                self.sets[name] = NamedSet(name, ("ipv4_addr" if fam == 4 else "ipv6_addr",), (), False,
                                           f"fqdn {key}"[:128], fqdn=key)
            out.append((fam, name))
        return out

    def group_sets(self, gkey: tuple[str, str]) -> list[tuple[int, str]]:
        group = self.state.groups.get(gkey)
        members = self.sel.group_workloads(gkey)
        cidrs = list(group.spec.cidrs) if group else []
        excepts = list(group.spec.except_) if group else []
        return self.address_sets("grp", f"group:{gkey[0]}/{gkey[1]}", gkey[1], self.sel.ips(members),
                                  cidrs, excepts, (4, 6), f"group {gkey[0]}/{gkey[1]}")

    def peer_sets(self, policy_ns: str | None, peer: Peer) -> list[tuple[int, str]]:
        if peer.group is not None:
            return self.group_sets(group_ref(policy_ns or "", peer.group))
        if peer.fqdn is not None:
            return self.fqdn_sets(peer.fqdn)
        if peer.cidr is not None:
            fam = family_of(peer.cidr.split("/")[0])
            identity = f"cidr:{peer.cidr}-{','.join(peer.except_)}"
            return self.address_sets("net", identity, "", [], [peer.cidr], list(peer.except_), (fam,),
                                      f"cidr {peer.cidr}" + (f" except {','.join(peer.except_)}" if peer.except_ else ""))
        scope = self.sel.scope(policy_ns, peer.selector, peer.namespaceSelector)
        members = self.sel.members(scope)
        text = f"selector {selector_key(peer.selector)} ns {policy_ns or '*'} nsSelector {selector_key(peer.namespaceSelector)}"
        return self.address_sets("sel", "sel:" + scope.identity, "", self.sel.ips(members), [], [], (4, 6), text)
