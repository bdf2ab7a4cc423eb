"""Cross-object validation of a whole desired state (pure).

Per-object shape is checked by pydantic in `model.objects`; here we check what
needs the other objects: namespaces exist, referenced groups exist, addresses
are in the allowed ranges and not taken twice, hosts are known.

Two rules keep one tenant from acting on another's workloads or host:
- a namespaced Policy applies only to workloads of its own namespace: its
  `appliesTo` may name a group of that namespace only (peers in `from`/`to`
  may name any namespace's group); only a GlobalPolicy selects across
  namespaces (the compiler confines selection the same way, see
  `compile.selection`);
- a Workload's effective interface (`spec.interface`, or the one derived from
  its name, `model.naming.workload_interface`) is unique on its host, is never
  one the host owns (`ValidationSettings.reserved_interfaces`: loopback, the lab
  uplink), and a given name fits the deployment's scheme of workload ports
  (`ValidationSettings.interface_pattern`). Two workloads on one interface make
  the host's whole nftables transaction fail ("File exists"), for everyone.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

from stockade.errors import FieldProblem
from stockade.model.kinds import ObjectKey, key_of
from stockade.model.naming import workload_interface
from stockade.model.objects import GlobalPolicy, Group, Policy, PolicySpec, Workload
from stockade.model.state import DesiredState

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The names a workload port may have when `spec.interface` is given: the names Stockade
# derives itself (`stk<hash>`), a VM's tap (`tap*`, libvirt's `vnet*`, `macvtap*`) and a
# container's host-side veth (`veth*`). Anything else on a host (`eth0`, `ens3`, a bridge,
# `docker0`) is the host's own, and a workload naming it would put the host's traffic under
# that workload's policy. A deployment with other names widens this (`--interface-pattern`).
WORKLOAD_INTERFACE_PREFIXES = ("stk", "tap", "vnet", "macvtap", "veth")
DEFAULT_INTERFACE_PATTERN = f"({'|'.join(WORKLOAD_INTERFACE_PREFIXES)})" + r"[A-Za-z0-9_.-]*"
# Never a workload port, whatever the pattern: the loopback and the lab hypervisors' uplink
# (`stockade.lab.naming.FABRIC_IFACE`; a test keeps the two equal, the model may not import the lab).
DEFAULT_RESERVED_INTERFACES = frozenset({"lo", "fab0"})


@dataclass(frozen=True)
class ValidationSettings:
    """What the deployment allows: where workload addresses may come from, which hosts exist,
    which interface names a workload may give (a full match of `interface_pattern`, never one
    of `reserved_interfaces`). The network and broadcast addresses of every workload range and
    every pool are never a workload's address."""

    workload_ranges: tuple[IPNetwork, ...] = field(default_factory=lambda: (
        ipaddress.ip_network("198.18.0.0/17"), ipaddress.ip_network("2001:db8::/33")))
    known_hosts: frozenset[str] | None = None  # None: any host name is accepted
    pools: tuple[IPNetwork, ...] = ()          # IPAM pools: their network/broadcast addresses are refused too
    interface_pattern: str = DEFAULT_INTERFACE_PATTERN
    reserved_interfaces: frozenset[str] = DEFAULT_RESERVED_INTERFACES

    def __post_init__(self) -> None:
        try:
            re.compile(self.interface_pattern)
        except re.error as e:
            raise ValueError(f"interface pattern {self.interface_pattern!r} is not a regular expression: {e}") \
                from None


def group_ref(policy_ns: str, ref: str) -> tuple[str, str]:
    """Resolve a group reference: `name` in the policy's namespace, or `namespace/name`."""
    if "/" in ref:
        ns, name = ref.split("/", 1)
        return ns, name
    return policy_ns, ref


def _policy_group_refs(spec: PolicySpec) -> Iterable[tuple[str, str]]:
    if spec.appliesTo.group is not None:
        yield "spec.appliesTo.group", spec.appliesTo.group
    for direction, rules in (("ingress", spec.ingress), ("egress", spec.egress)):
        for i, rule in enumerate(rules):
            peers = rule.from_ if direction == "ingress" else rule.to
            peer_field = "from" if direction == "ingress" else "to"
            for j, peer in enumerate(peers or []):
                if peer.group is not None:
                    yield f"spec.{direction}[{i}].{peer_field}[{j}].group", peer.group


Visible = Callable[[str], bool]


def _owner(key: tuple[str, str], visible: Visible | None) -> str:
    """How a problem names the workload that holds an address or an interface: by name only to a
    caller who may read its namespace; a tenant learns that it is taken, not by whom."""
    if visible is None or visible(key[0]):
        return f"Workload {key[0]}/{key[1]}"
    return "a workload of another namespace"


def validate_state(state: DesiredState, settings: ValidationSettings,
                   only: set[ObjectKey] | None = None, visible: Visible | None = None) -> list[FieldProblem]:
    """Problems of the objects in `only` (all when None) against the rest of `state`.

    `visible` (namespace → may the caller read it; None: everything) decides whether a problem
    may name another workload that stands in the way.
    """
    problems: list[FieldProblem] = []
    # Who uses each address and each (host, interface), built once: checking each workload
    # against every other made validating a batch of workloads quadratic in the size of the fleet.
    owners: dict[str, list[tuple[str, str]]] = {}
    iface_owners: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for wkey, other in state.workloads.items():
        for ip in state.workload_ips(other):
            owners.setdefault(ip, []).append(wkey)
        iface_owners.setdefault((other.spec.host, workload_interface(other)), []).append(wkey)

    def wanted(key: ObjectKey) -> bool:
        return only is None or key in only

    for obj in state.objects():
        key = key_of(obj)
        if not wanted(key):
            continue
        ref = str(key)
        ns = obj.metadata.namespace
        if ns and ns not in state.namespaces:
            problems.append(FieldProblem(ref, "metadata.namespace", f"namespace {ns!r} does not exist"))
        if isinstance(obj, Workload):
            problems += _workload_problems(obj, state, settings, ref, owners, visible)
            problems += _interface_problems(obj, settings, ref, iface_owners, visible)
        elif isinstance(obj, (Policy, GlobalPolicy)):
            problems += _policy_shape_problems(obj, ref)
            problems += _policy_scope_problems(obj, ref)
            if obj.spec.tier not in state.tier_order():
                problems.append(FieldProblem(ref, "spec.tier", f"tier {obj.spec.tier!r} does not exist "
                                             f"(tiers: {', '.join(state.tier_order())})"))
            for where, target in _policy_group_refs(obj.spec):
                if isinstance(obj, GlobalPolicy) and "/" not in target:
                    problems.append(FieldProblem(ref, where, f"a GlobalPolicy names groups as namespace/name, "
                                                 f"got {target!r}"))
                    continue
                gkey = group_ref(ns or "", target)
                if _foreign_peer(ns, gkey):
                    continue  # see foreign peers in referrers_of_group: existence is not checked
                if gkey not in state.groups:
                    problems.append(FieldProblem(ref, where, f"group {gkey[0]}/{gkey[1]} does not exist"))
        elif isinstance(obj, Group):
            for i, cidr in enumerate(obj.spec.except_):
                net = ipaddress.ip_network(cidr)
                if not any(net.version == ipaddress.ip_network(c).version
                           and net.subnet_of(ipaddress.ip_network(c))  # type: ignore[arg-type]
                           for c in obj.spec.cidrs):
                    problems.append(FieldProblem(ref, f"spec.except[{i}]", f"{cidr} is not inside any of spec.cidrs"))
    return problems


def _policy_shape_problems(policy: Policy | GlobalPolicy, ref: str) -> list[FieldProblem]:
    """What a policy cannot mean: rules it would silently ignore, ids that collide."""
    problems: list[FieldProblem] = []
    spec = policy.spec
    if isinstance(policy, Policy) and spec.appliesTo.namespaceSelector is not None:
        problems.append(FieldProblem(ref, "spec.appliesTo.namespaceSelector",
                                     "only a GlobalPolicy selects across namespaces; a Policy applies "
                                     "to workloads of its own namespace"))
    if spec.types is not None:
        for direction, rules in (("Ingress", spec.ingress), ("Egress", spec.egress)):
            if rules and direction not in spec.types:
                problems.append(FieldProblem(ref, f"spec.{direction.lower()}",
                                             f"has rules, but spec.types does not list {direction}; "
                                             "they would never run"))
    seen: dict[str, str] = {}
    for direction, rules in (("ingress", spec.ingress), ("egress", spec.egress)):
        for i, rule in enumerate(rules):
            rid = rule.id or f"{direction}-{i}"
            where = f"spec.{direction}[{i}]"
            if rid in seen:
                problems.append(FieldProblem(ref, f"{where}.id", f"rule id {rid!r} is also the id of "
                                             f"{seen[rid]}; ids must be unique within a policy"))
            seen.setdefault(rid, where)
    return problems


def _policy_scope_problems(policy: Policy | GlobalPolicy, ref: str) -> list[FieldProblem]:
    """A namespaced Policy applies to its own namespace's workloads only (Kubernetes' rule): a
    group of another namespace in `appliesTo` would let one tenant open another's workloads.
    As a peer (`from`/`to`) such a group only names whom the policy's own workloads talk to."""
    target = policy.spec.appliesTo.group
    ns = policy.metadata.namespace
    if not isinstance(policy, Policy) or target is None or not ns:
        return []
    group_ns, group_name = group_ref(ns, target)
    if group_ns == ns:
        return []
    return [FieldProblem(ref, "spec.appliesTo.group",
                         f"group {group_ns}/{group_name} is in namespace {group_ns!r}, but a Policy "
                         f"applies only to workloads of its own namespace {ns!r}; name a group of "
                         f"{ns!r} here (another namespace's group may be a peer in from/to), or use a "
                         "GlobalPolicy")]


def _interface_problems(wl: Workload, settings: ValidationSettings, ref: str,
                        iface_owners: dict[tuple[str, str], list[tuple[str, str]]],
                        visible: Visible | None = None) -> list[FieldProblem]:
    """The workload's effective interface is its own on its host, and a workload port's name."""
    iface = workload_interface(wl)
    given = wl.spec.interface is not None
    what = f"interface {iface!r}" + ("" if given else " (derived from the workload's name)")
    problems: list[FieldProblem] = []
    if iface in settings.reserved_interfaces:
        problems.append(FieldProblem(ref, "spec.interface", f"{what} belongs to the host {wl.spec.host!r}, "
                                     "not to a workload (reserved: "
                                     f"{', '.join(sorted(settings.reserved_interfaces))})"))
    elif given and not re.fullmatch(settings.interface_pattern, iface):
        problems.append(FieldProblem(ref, "spec.interface", f"{what} is not a workload interface name: "
                                     f"it must match {settings.interface_pattern!r} (other interfaces "
                                     "belong to the host)"))
    mine = (wl.metadata.namespace or "", wl.metadata.name)
    for other in iface_owners.get((wl.spec.host, iface), []):
        if other != mine:
            problems.append(FieldProblem(ref, "spec.interface", f"{what} is already used on host "
                                         f"{wl.spec.host!r} by {_owner(other, visible)}"))
    return problems


def _workload_problems(wl: Workload, state: DesiredState, settings: ValidationSettings,
                       ref: str, owners: dict[str, list[tuple[str, str]]],
                       visible: Visible | None = None) -> list[FieldProblem]:
    problems: list[FieldProblem] = []
    if settings.known_hosts is not None and wl.spec.host not in settings.known_hosts:
        known = ", ".join(sorted(settings.known_hosts)) or "none"
        problems.append(FieldProblem(ref, "spec.host", f"unknown host {wl.spec.host!r} (known hosts: {known})"))
    mine = (wl.metadata.namespace or "", wl.metadata.name)
    for i, ip in enumerate(state.workload_ips(wl)):
        addr = ipaddress.ip_address(ip)
        if not any(addr in net for net in settings.workload_ranges):
            ranges = ", ".join(str(n) for n in settings.workload_ranges)
            problems.append(FieldProblem(ref, f"spec.ips[{i}]", f"{ip} is outside the allowed workload ranges ({ranges})"))
        special = _network_or_broadcast(addr, (*settings.workload_ranges, *settings.pools))
        if special:
            problems.append(FieldProblem(ref, f"spec.ips[{i}]", f"{ip} is {special}, not a host address"))
        for other_key in owners.get(ip, []):
            if other_key != mine:
                problems.append(FieldProblem(ref, f"spec.ips[{i}]",
                                             f"{ip} is already used by {_owner(other_key, visible)}"))
    return problems


def _network_or_broadcast(addr: ipaddress.IPv4Address | ipaddress.IPv6Address,
                          nets: Iterable[IPNetwork]) -> str | None:
    """What `addr` is when it is the network or (IPv4) broadcast address of one of `nets`.

    A packet to a network's broadcast address goes to every host on it, and a workload holding
    it (or the network address, IPv6's subnet-router anycast) would receive what is meant for
    its neighbours. /31 and /32 (/127, /128) have no such addresses (RFC 3021).
    """
    for net in nets:
        if net.version != addr.version or addr not in net or net.prefixlen >= net.max_prefixlen - 1:
            continue
        if addr == net.network_address:
            return f"the network address of {net}"
        if net.version == 4 and addr == net.broadcast_address:
            return f"the broadcast address of {net}"
    return None


def _foreign_peer(policy_ns: str | None, group: tuple[str, str]) -> bool:
    """Is `group` a peer that a namespaced policy names in another namespace?

    Such a reference is the other tenant's business only as far as that tenant decides: it need
    not exist (until it does, it matches no one), and it never stops its owner from deleting the
    group. Were it checked, a tenant could learn which groups another namespace has (an error
    for a missing one, none for an existing one) and pin another tenant's groups in place by
    naming them. A namespaced policy's appliesTo cannot name another namespace at all
    (`_policy_scope_problems`); GlobalPolicies are the platform's, and theirs are checked."""
    return bool(policy_ns) and group[0] != policy_ns


def referrers_of_group(state: DesiredState, group: tuple[str, str],
                       visible: Visible | None = None) -> list[str]:
    """Policies that name this group: a group in use cannot be deleted. Those of a namespace the
    caller may not read (`visible`) are counted, not named. Other namespaces' policies naming
    it as a peer do not count (`_foreign_peer`)."""
    out = []
    hidden = 0
    for (ns, name), pol in sorted(state.policies.items()):
        for _, target in _policy_group_refs(pol.spec):
            if group_ref(ns, target) == group and not _foreign_peer(ns, group):
                if visible is None or (ns and visible(ns)):
                    out.append(f"{pol.kind} {ns + '/' if ns else ''}{name}")
                else:
                    hidden += 1
                break
    if hidden:
        out.append(f"{hidden} {'policy' if hidden == 1 else 'policies'} of other namespaces or global")
    return out


def referrers_of_tier(state: DesiredState, tier: str) -> list[str]:
    """Policies in this tier: a tier in use cannot be deleted."""
    return [f"{p.kind} {ns + '/' if ns else ''}{name}" for (ns, name), p in sorted(state.policies.items())
            if p.spec.tier == tier]
