"""The API objects of Stockade, validated once at the edge (pydantic, strict).

Shapes follow ../shared/DESIGN.md: `apiVersion`, `kind`, `metadata`, `spec`,
`status`; unknown fields are refused. Cross-object checks (does the group
exist?) live in `model.validation`, which sees the whole desired state.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stockade.model.fqdn import check_pattern
from stockade.model.verdicts import Action
from stockade.model.selectors import (
    SelectorSyntaxError,
    label_key_problem,
    label_value_problem,
    parse_selector,
)

API_VERSION = "stockade.io/v1"
# Hard limits on counts: a policy far beyond these is a mistake or an attack on the
# controller's memory and the agents' compile time; refusing it names the field.
MAX_RULES_PER_DIRECTION = 1_000
MAX_LIST_ITEMS = 1_000          # peers or ports in one rule
MAX_GROUP_ITEMS = 10_000        # static members or CIDRs in one group

# Built-in tiers and their order; admins add tiers of their own with `Tier` objects.
BUILTIN_TIERS: dict[str, int] = {"platform": 100, "application": 500, "baseline": 900}
DEFAULT_TIERS: tuple[str, ...] = tuple(BUILTIN_TIERS)

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$")
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")


class Strict(BaseModel):
    """Base of every object part: unknown fields are errors, objects are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        problem = label_key_problem(key) or label_value_problem(value)
        if problem:
            raise ValueError(problem)
    return labels


class Metadata(Strict):
    name: str
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    resourceVersion: str | None = None

    @field_validator("name")
    @classmethod
    def _name_is_dns_label(cls, v: str) -> str:
        if not _DNS_LABEL.match(v):
            raise ValueError(f"{v!r} is not a valid name: 1-63 lowercase letters, digits or '-', "
                             "starting and ending with a letter or digit")
        return v

    @field_validator("namespace")
    @classmethod
    def _namespace_is_dns_label(cls, v: str | None) -> str | None:
        if v is not None and not _DNS_LABEL.match(v):
            raise ValueError(f"{v!r} is not a valid namespace name")
        return v

    @field_validator("labels")
    @classmethod
    def _labels_valid(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_labels(v)


class LabelSelector(Strict):
    """A Kubernetes LabelSelector; checked by the same parser the compiler uses."""

    matchLabels: dict[str, str] = Field(default_factory=dict)
    matchExpressions: list[dict[str, Any]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _parses(self) -> "LabelSelector":
        try:
            parse_selector(self.model_dump(exclude_defaults=True))
        except SelectorSyntaxError as e:
            raise ValueError(str(e)) from None
        return self


def _ip(v: str) -> str:
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        raise ValueError(f"{v!r} is not an IPv4 or IPv6 address") from None


# IPv4-mapped IPv6 (::ffff:a.b.c.d): no packet on the wire carries such an address — an IPv4
# packet is matched as IPv4 — so a rule or a workload address inside it silently means nothing.
IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _cidr(v: str) -> str:
    try:
        net = ipaddress.ip_network(v, strict=True)
    except ValueError as e:
        raise ValueError(f"{v!r} is not a valid CIDR ({e})") from None
    if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(IPV4_MAPPED):
        raise ValueError(f"{v!r} is inside {IPV4_MAPPED} (IPv4-mapped IPv6), which never matches a packet; "
                         "write the IPv4 CIDR")
    return str(net)


# ---------------------------------------------------------------------- Tier

class TierSpec(Strict):
    order: int = Field(ge=0, le=1_000_000, description="lower is evaluated first; built-ins: "
                       "platform 100, application 500, baseline 900")


class Tier(Strict):
    """An admin-defined layer of policy, evaluated by `order` among the built-in tiers."""

    apiVersion: Literal["stockade.io/v1"] = API_VERSION
    kind: Literal["Tier"] = "Tier"
    metadata: Metadata
    spec: TierSpec
    status: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _not_builtin(self) -> "Tier":
        if self.metadata.name in BUILTIN_TIERS:
            raise ValueError(f"metadata.name: {self.metadata.name!r} is a built-in tier and cannot be redefined")
        return self


# ----------------------------------------------------------------- Namespace

class NamespaceQuota(Strict):
    """Limits on what one namespace may hold; a limit left out is the controller's default.
    Only admins and network-admins write Namespaces, so a tenant cannot raise its own."""

    workloads: int | None = Field(default=None, ge=0)
    addresses: int | None = Field(default=None, ge=0)   # per family, of the IPAM pools
    policies: int | None = Field(default=None, ge=0)    # Policies and NetworkPolicies


class NamespaceSpec(Strict):
    defaultAction: Literal["deny", "allowUntilSelected"] = "deny"
    quota: NamespaceQuota | None = None


class Namespace(Strict):
    apiVersion: Literal["stockade.io/v1"] = API_VERSION
    kind: Literal["Namespace"] = "Namespace"
    metadata: Metadata
    spec: NamespaceSpec = Field(default_factory=NamespaceSpec)
    status: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _cluster_scoped(self) -> "Namespace":
        if self.metadata.namespace:
            raise ValueError("metadata.namespace: a Namespace is not namespaced")
        return self

    def effective_labels(self) -> dict[str, str]:
        """Labels plus `kubernetes.io/metadata.name`, as Kubernetes adds it."""
        return {**self.metadata.labels, "kubernetes.io/metadata.name": self.metadata.name}


# ------------------------------------------------------------------ Workload

Protocol = Literal["TCP", "UDP", "SCTP"]


class NamedPort(Strict):
    name: str
    protocol: Protocol = "TCP"
    port: int = Field(ge=1, le=65535)

    @field_validator("name")
    @classmethod
    def _iana_name(cls, v: str) -> str:
        if not _PORT_NAME.match(v) or "--" in v:
            raise ValueError(f"{v!r} is not a valid port name (1-15 lowercase letters, digits or '-', "
                             "at least one letter)")
        return v


class WorkloadSpec(Strict):
    host: str
    ips: list[str] = Field(default_factory=list)
    ports: list[NamedPort] = Field(default_factory=list)
    mac: str | None = None
    interface: str | None = Field(default=None, description="host-side interface; derived in the lab")
    # How the interface reaches the network, as the hypervisor integration that registers the
    # workload knows it: routed (unset, the default: the host routes to it) or bridged (a port
    # of a Linux bridge on the host, e.g. libvirt's virbr0; filtered through br_netfilter).
    attachment: Literal["routed", "bridged"] | None = Field(
        default=None, description="routed (default) or bridged: the interface is a port of a Linux bridge")

    @field_validator("ips")
    @classmethod
    def _ips(cls, v: list[str]) -> list[str]:
        out = [_ip(x) for x in v]
        for i, x in enumerate(out):
            addr = ipaddress.ip_address(x)
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                raise ValueError(f"[{i}] {x} is an IPv4-mapped IPv6 address ({IPV4_MAPPED}); "
                                 f"write {addr.ipv4_mapped} as the workload's IPv4 address")
        fams = [ipaddress.ip_address(x).version for x in out]
        if fams.count(4) > 1 or fams.count(6) > 1:
            raise ValueError("at most one IPv4 and one IPv6 address")
        return out

    @field_validator("mac")
    @classmethod
    def _mac(cls, v: str | None) -> str | None:
        if v is not None and not _MAC.match(v.lower()):
            raise ValueError(f"{v!r} is not a MAC address like 02:00:00:00:00:01")
        return v.lower() if v else v

    @field_validator("interface")
    @classmethod
    def _ifname(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[A-Za-z0-9_.-]{1,15}$", v):
            raise ValueError(f"{v!r} is not a Linux interface name (1-15 characters)")
        return v

    @model_validator(mode="after")
    def _bridged_port_named(self) -> "WorkloadSpec":
        # The compiler dispatches a bridged workload by its bridge port's name, which only the
        # hypervisor knows: a derived name (the lab's routed veth) is never a bridge port.
        if self.attachment == "bridged" and self.interface is None:
            raise ValueError("attachment: bridged needs spec.interface, the name of the workload's "
                             "bridge port on its host")
        return self

    @model_validator(mode="after")
    def _unique_port_names(self) -> "WorkloadSpec":
        names = [p.name for p in self.ports]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"ports: name {dup[0]!r} is used twice")
        return self


class Workload(Strict):
    apiVersion: Literal["stockade.io/v1"] = API_VERSION
    kind: Literal["Workload"] = "Workload"
    metadata: Metadata
    spec: WorkloadSpec
    status: dict[str, Any] | None = None


# --------------------------------------------------------------------- Group

class GroupSpec(Strict):
    selector: LabelSelector | None = None
    workloads: list[str] = Field(default_factory=list, max_length=MAX_GROUP_ITEMS,
                                 description="static members, by name, in the group's namespace")
    cidrs: list[str] = Field(default_factory=list, max_length=MAX_GROUP_ITEMS)
    except_: list[str] = Field(default_factory=list, alias="except")

    _v_cidrs = field_validator("cidrs", "except_")(lambda cls, v: [_cidr(x) for x in v])


class Group(Strict):
    apiVersion: Literal["stockade.io/v1"] = API_VERSION
    kind: Literal["Group"] = "Group"
    metadata: Metadata
    spec: GroupSpec
    status: dict[str, Any] | None = None


# -------------------------------------------------------------------- Policy

PortProtocol = Literal["TCP", "UDP", "SCTP", "ICMP", "ICMPv6"]


class PortSpec(Strict):
    protocol: PortProtocol = "TCP"
    port: int | str | None = None
    endPort: int | None = None
    type: int | None = Field(default=None, ge=0, le=255)
    code: int | None = Field(default=None, ge=0, le=255)

    @model_validator(mode="after")
    def _consistent(self) -> "PortSpec":
        icmp = self.protocol in ("ICMP", "ICMPv6")
        if icmp:
            if self.port is not None or self.endPort is not None:
                raise ValueError(f"port: {self.protocol} has no ports; use type and code")
            if self.code is not None and self.type is None:
                raise ValueError("code: needs a type")
            return self
        if self.type is not None or self.code is not None:
            raise ValueError(f"type: only ICMP and ICMPv6 have a type and code, not {self.protocol}")
        if isinstance(self.port, int) and not 1 <= self.port <= 65535:
            raise ValueError(f"port: {self.port} is out of range 1-65535")
        if isinstance(self.port, str):
            if not _PORT_NAME.match(self.port):
                raise ValueError(f"port: {self.port!r} is neither a number nor a valid port name")
            if self.endPort is not None:
                raise ValueError("endPort: not allowed with a named port")
        if self.endPort is not None:
            if self.port is None:
                raise ValueError("endPort: needs port")
            if not 1 <= self.endPort <= 65535:
                raise ValueError(f"endPort: {self.endPort} is out of range 1-65535")
            if isinstance(self.port, int) and self.endPort < self.port:
                raise ValueError(f"endPort: {self.endPort} is below port {self.port}")
        return self


class Peer(Strict):
    group: str | None = None
    selector: LabelSelector | None = None
    namespaceSelector: LabelSelector | None = None
    cidr: str | None = None
    except_: list[str] = Field(default_factory=list, alias="except")
    fqdn: str | None = Field(default=None, description="egress only: the addresses the trusted resolvers "
                             "give this name (or '*.' pattern) to the workload, learned from its DNS answers")

    @field_validator("cidr")
    @classmethod
    def _v_cidr(cls, v: str | None) -> str | None:
        return _cidr(v) if v is not None else v

    @field_validator("fqdn")
    @classmethod
    def _v_fqdn(cls, v: str | None) -> str | None:
        return check_pattern(v) if v is not None else v

    @field_validator("except_")
    @classmethod
    def _v_except(cls, v: list[str]) -> list[str]:
        return [_cidr(x) for x in v]

    @model_validator(mode="after")
    def _one_kind(self) -> "Peer":
        kinds = [k for k, present in (
            ("group", self.group is not None),
            ("selector", self.selector is not None or self.namespaceSelector is not None),
            ("cidr", self.cidr is not None),
            ("fqdn", self.fqdn is not None),
        ) if present]
        if len(kinds) != 1:
            raise ValueError("a peer is exactly one of: group, selector (with optional namespaceSelector), cidr, fqdn"
                             + (f"; got {' and '.join(kinds)}" if kinds else "; got none"))
        if self.except_ and self.cidr is None:
            raise ValueError("except: only allowed with cidr")
        if self.cidr is not None:
            net = ipaddress.ip_network(self.cidr)
            for e in self.except_:
                sub = ipaddress.ip_network(e)
                if sub.version != net.version or not sub.subnet_of(net):  # type: ignore[arg-type]
                    raise ValueError(f"except: {e} is not inside {self.cidr}")
        return self


class Rule(Strict):
    id: str | None = None
    action: Action
    description: str | None = None
    from_: list[Peer] | None = Field(default=None, alias="from", max_length=MAX_LIST_ITEMS)
    to: list[Peer] | None = Field(default=None, max_length=MAX_LIST_ITEMS)
    ports: list[PortSpec] | None = Field(default=None, max_length=MAX_LIST_ITEMS)

    @field_validator("id")
    @classmethod
    def _v_id(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$", v):
            raise ValueError(f"{v!r} is not a valid rule id (lowercase letters, digits, '-' and '.')")
        return v


class AppliesTo(Strict):
    group: str | None = None
    selector: LabelSelector | None = None
    namespaceSelector: LabelSelector | None = None

    @model_validator(mode="after")
    def _one(self) -> "AppliesTo":
        if (self.group is None) == (self.selector is None and self.namespaceSelector is None):
            raise ValueError("give exactly one of group or selector")
        return self


class PolicySpec(Strict):
    tier: str = "application"
    order: int = Field(default=1000, ge=0, le=1_000_000)
    mode: Literal["enforce", "audit"] = "enforce"
    appliesTo: AppliesTo
    types: list[Literal["Ingress", "Egress"]] | None = Field(
        default=None, description="directions this policy selects its workloads for; default: the "
        "directions it has rules for (an empty list of rules in a listed direction isolates)")
    ingress: list[Rule] = Field(default_factory=list, max_length=MAX_RULES_PER_DIRECTION)
    egress: list[Rule] = Field(default_factory=list, max_length=MAX_RULES_PER_DIRECTION)
    enforceEstablished: bool = Field(
        default=False, description="cut the open connections of the workloads this policy applies to "
        "when it is created or changed, so that it decides their next packets (default: they are kept)")

    @field_validator("tier")
    @classmethod
    def _v_tier(cls, v: str) -> str:
        # Whether the tier exists is checked against the whole state (model.validation).
        if not _DNS_LABEL.match(v):
            raise ValueError(f"{v!r} is not a valid tier name")
        return v

    @model_validator(mode="after")
    def _rules(self) -> "PolicySpec":
        for direction, rules in (("ingress", self.ingress), ("egress", self.egress)):
            ids = [r.id for r in rules if r.id]
            dup = sorted({i for i in ids if ids.count(i) > 1})
            if dup:
                raise ValueError(f"{direction}: rule id {dup[0]!r} is used twice")
            for i, r in enumerate(rules):
                wrong = r.to if direction == "ingress" else r.from_
                if wrong is not None:
                    raise ValueError(f"{direction}[{i}]: an {direction} rule takes "
                                     f"'{'from' if direction == 'ingress' else 'to'}', "
                                     f"not '{'to' if direction == 'ingress' else 'from'}'")
                for j, peer in enumerate(r.from_ or [] if direction == "ingress" else []):
                    if peer.fqdn is not None:
                        raise ValueError(f"ingress[{i}].from[{j}].fqdn: a domain name is an egress peer only "
                                         "(a source address says nothing of the names it has)")
        return self


class Policy(Strict):
    apiVersion: Literal["stockade.io/v1"] = API_VERSION
    kind: Literal["Policy"] = "Policy"
    metadata: Metadata
    spec: PolicySpec
    status: dict[str, Any] | None = None


class GlobalPolicy(Strict):
    apiVersion: Literal["stockade.io/v1"] = API_VERSION
    kind: Literal["GlobalPolicy"] = "GlobalPolicy"
    metadata: Metadata
    spec: PolicySpec
    status: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _cluster_scoped(self) -> "GlobalPolicy":
        if self.metadata.namespace:
            raise ValueError("metadata.namespace: a GlobalPolicy is not namespaced")
        return self


AnyObject = Annotated[
    Union[Tier, Namespace, Workload, Group, Policy, GlobalPolicy], Field(discriminator="kind")
]
StockadeObject = Tier | Namespace | Workload | Group | Policy | GlobalPolicy
