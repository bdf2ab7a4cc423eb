"""SIG Network's `policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicy`, as upstream defines it.

The model mirrors the upstream API types (kubernetes-sigs/network-policy-api,
`apis/v1alpha2/clusternetworkpolicy_types.go`) field by field, with upstream's validation: the
`Admin`/`Baseline` tier enum, `priority` 0-1000, at most 25 rules per direction, 25 peers and 25
protocols per rule, rule names of at most 100 characters, exactly one field in a subject, peer,
protocol and port, `start < end` in a port range, CIDRs of at most 43 characters, domain names
by upstream's pattern, and no named port together with a `networks`, `nodes` or `domainNames`
peer. Optional fields stay None, so the object is served back as it was applied; unknown fields
are errors naming the field.

What this model does not take, refused with the reason rather than ignored: `nodes` peers (a
Stockade cluster has no Node objects to select; the lab has none). `domainNames` peers are
Stockade's `fqdn` peers (model.fqdn: the same wildcard meaning), in Accept rules only, as upstream
says.

`to_native` gives the GlobalPolicy the compiler enforces (docs/kubernetes.md, "Cluster-wide
policies").
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from stockade.model.fqdn import check_pattern, normalise
from stockade.model.k8s import SOURCE_KIND_ANNOTATION, K8sLabelSelector
from stockade.model.naming import short_hash
from stockade.model.objects import (
    AppliesTo,
    GlobalPolicy,
    LabelSelector,
    Metadata,
    Peer,
    PolicySpec,
    PortSpec,
    Rule,
    Strict,
)

API_VERSION = "policy.networking.k8s.io/v1alpha2"
MAX_RULES = 25          # per direction
MAX_PEERS = 25          # per rule
MAX_PROTOCOLS = 25      # per rule
MAX_RULE_NAME = 100
MAX_CIDR_LENGTH = 43
# Upstream's pattern, with its `A-z` ranges as written (they also admit [\]^_` between Z and a).
DOMAIN_NAME = re.compile(r"^(\*\.)?([a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.)+[a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.?$")
_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$")

Tier = Literal["Admin", "Baseline"]
Action = Literal["Accept", "Deny", "Pass"]


def _exactly_one(model: Strict, what: str) -> None:
    """Upstream's MinProperties=1, MaxProperties=1."""
    present = [name for name, value in model if value is not None]
    if len(present) != 1:
        fields = ", ".join(type(model).model_fields)
        raise ValueError(f"{what} needs exactly one of {fields}" + (f", not {', '.join(present)}" if present else ""))


class NamespacedPod(Strict):
    namespaceSelector: K8sLabelSelector | None = None   # absent or empty: every namespace
    podSelector: K8sLabelSelector


class Subject(Strict):
    namespaces: K8sLabelSelector | None = None
    pods: NamespacedPod | None = None

    @model_validator(mode="after")
    def _one(self) -> "Subject":
        _exactly_one(self, "a subject")
        return self


class PortRange(Strict):
    start: int = Field(ge=1, le=65535)
    end: int = Field(ge=1, le=65535)

    @model_validator(mode="after")
    def _ordered(self) -> "PortRange":
        if not self.start < self.end:
            raise ValueError(f"start ({self.start}) must be less than end ({self.end})")
        return self


class Port(Strict):
    number: int | None = Field(default=None, ge=1, le=65535)
    range: PortRange | None = None

    @model_validator(mode="after")
    def _one(self) -> "Port":
        _exactly_one(self, "a port")
        return self


class ProtocolPort(Strict):
    destinationPort: Port


class Protocol(Strict):
    tcp: ProtocolPort | None = None
    udp: ProtocolPort | None = None
    sctp: ProtocolPort | None = None
    destinationNamedPort: str | None = None

    @field_validator("destinationNamedPort")
    @classmethod
    def _v_named(cls, v: str | None) -> str | None:
        if v is not None and not _PORT_NAME.match(v):
            raise ValueError(f"{v!r} is not a valid port name (an IANA service name: at most 15 lowercase "
                             "letters, digits and '-')")
        return v

    @model_validator(mode="after")
    def _one(self) -> "Protocol":
        _exactly_one(self, "a protocol")
        return self


class IngressPeer(Strict):
    namespaces: K8sLabelSelector | None = None
    pods: NamespacedPod | None = None

    @model_validator(mode="after")
    def _one(self) -> "IngressPeer":
        _exactly_one(self, "a peer")
        return self


class EgressPeer(Strict):
    namespaces: K8sLabelSelector | None = None
    pods: NamespacedPod | None = None
    nodes: K8sLabelSelector | None = None
    networks: list[str] | None = Field(default=None, min_length=1, max_length=MAX_PEERS)
    domainNames: list[str] | None = Field(default=None, min_length=1, max_length=MAX_PEERS)

    @field_validator("networks")
    @classmethod
    def _v_networks(cls, v: list[str] | None) -> list[str] | None:
        for i, text in enumerate(v or []):
            if len(text) > MAX_CIDR_LENGTH:
                raise ValueError(f"[{i}]: {text!r} is longer than {MAX_CIDR_LENGTH} characters")
            try:
                ipaddress.ip_network(text, strict=False)  # CEL's isCIDR: host bits are allowed
            except ValueError:
                raise ValueError(f"[{i}]: {text!r} is not a valid CIDR") from None
        if v is not None and len(set(v)) != len(v):
            raise ValueError("holds the same CIDR twice (a set)")
        return v

    @field_validator("domainNames")
    @classmethod
    def _v_domains(cls, v: list[str] | None) -> list[str] | None:
        for i, text in enumerate(v or []):
            if not DOMAIN_NAME.match(text):
                raise ValueError(f"[{i}]: {text!r} is not a domain name ('*.' may only lead)")
            try:
                check_pattern(text)  # and DNS's lengths, which upstream's pattern leaves out
            except ValueError as e:
                raise ValueError(f"[{i}]: {e}") from None
        if v is not None and len({normalise(n) for n in v}) != len(v):
            raise ValueError("holds the same domain name twice (a set)")
        return v

    @model_validator(mode="after")
    def _one(self) -> "EgressPeer":
        _exactly_one(self, "a peer")
        if self.nodes is not None:
            raise ValueError("nodes: Stockade has no Node objects to select; write the nodes' addresses "
                             "as networks")
        return self


def check_rule_name(v: str | None) -> str | None:
    if v is not None and len(v) > MAX_RULE_NAME:
        raise ValueError(f"is {len(v)} characters long; at most {MAX_RULE_NAME}")
    return v


class IngressRule(Strict):
    name: str | None = None
    action: Action
    from_: list[IngressPeer] = Field(alias="from", min_length=1, max_length=MAX_PEERS)
    protocols: list[Protocol] | None = Field(default=None, min_length=1, max_length=MAX_PROTOCOLS)

    @field_validator("name")
    @classmethod
    def _v_name(cls, v: str | None) -> str | None:
        return check_rule_name(v)


class EgressRule(Strict):
    name: str | None = None
    action: Action
    to: list[EgressPeer] = Field(min_length=1, max_length=MAX_PEERS)
    protocols: list[Protocol] | None = Field(default=None, min_length=1, max_length=MAX_PROTOCOLS)

    @field_validator("name")
    @classmethod
    def _v_name(cls, v: str | None) -> str | None:
        return check_rule_name(v)

    @model_validator(mode="after")
    def _no_named_port_to_networks(self) -> "EgressRule":
        # Upstream's CEL rule: networks, nodes and domain names have no named ports.
        if any(p.destinationNamedPort is not None for p in self.protocols or []) and any(
                peer.networks is not None or peer.nodes is not None or peer.domainNames is not None
                for peer in self.to):
            raise ValueError("protocols: a destinationNamedPort cannot be used with a networks, nodes or "
                             "domainNames peer (they have no named ports)")
        check_domain_names_accept_only(self.to, self.action, "Accept")
        return self


def check_domain_names_accept_only(peers: list[Any], action: str, accept: str) -> None:
    """Upstream: "DomainNames is only supported for Accept rules" (Allow in v1alpha1) — an allow-list
    of names in front of a lower-precedence deny."""
    if action != accept and any(getattr(p, "domainNames", None) is not None for p in peers):
        raise ValueError(f"to: a domainNames peer is only allowed in an {accept} rule, as upstream says "
                         f"(this rule is {action}); deny the rest with a rule after it")


class ClusterNetworkPolicySpec(Strict):
    tier: Tier
    priority: int = Field(ge=0, le=1000)
    subject: Subject
    ingress: list[IngressRule] | None = Field(default=None, max_length=MAX_RULES)
    egress: list[EgressRule] | None = Field(default=None, max_length=MAX_RULES)


class ClusterNetworkPolicy(Strict):
    apiVersion: Literal["policy.networking.k8s.io/v1alpha2"] = API_VERSION
    kind: Literal["ClusterNetworkPolicy"] = "ClusterNetworkPolicy"
    metadata: Metadata
    spec: ClusterNetworkPolicySpec
    status: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _cluster_scoped(self) -> "ClusterNetworkPolicy":
        if self.metadata.namespace:
            raise ValueError("metadata.namespace: a ClusterNetworkPolicy is not namespaced")
        return self


# ------------------------------------------------------------------ native meaning

ACTIONS = {"Accept": "allow", "Deny": "deny", "Pass": "pass"}   # Deny drops: the client times out
TIERS = {"Admin": "platform", "Baseline": "baseline"}
AUDIT_ANNOTATION = "stockade.io/mode"   # "audit": rules record what they would do and decide nothing
_RULE_ID = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$")


def rule_id(name: str | None, direction: str, index: int, taken: set[str]) -> str:
    """A native rule id that names the upstream rule: its name when that is a valid id, else the
    name made one (lowercased, other characters as '-', shortened, a hash of the name added),
    else `DIRECTION-N`; unique within the direction."""
    if not name:
        candidate = f"{direction}-{index}"
    elif _RULE_ID.match(name):
        candidate = name
    else:
        slug = re.sub(r"[^a-z0-9.-]+", "-", name.lower()).strip("-.")[:50].strip("-.") or direction
        candidate = f"{slug}-{short_hash(name, 6)}"
    if candidate in taken:
        candidate = f"{candidate[:56]}-{index}"
    taken.add(candidate)
    return candidate


def _native_selector(sel: K8sLabelSelector | None) -> LabelSelector:
    return sel.native() if sel is not None else LabelSelector()  # absent: everything


def _native_peers(peer: Any) -> list[Peer]:
    if peer.namespaces is not None:  # every pod of the namespaces it selects
        return [Peer(selector=LabelSelector(), namespaceSelector=_native_selector(peer.namespaces))]
    if peer.pods is not None:        # an empty namespaceSelector: every namespace
        return [Peer(selector=_native_selector(peer.pods.podSelector),
                     namespaceSelector=_native_selector(peer.pods.namespaceSelector))]
    if getattr(peer, "domainNames", None):
        return [Peer(fqdn=name) for name in peer.domainNames]
    networks = getattr(peer, "networks", None) or []
    return [Peer(cidr=str(ipaddress.ip_network(n, strict=False))) for n in networks]


def _native_ports(protocols: list[Protocol] | None) -> list[PortSpec] | None:
    if not protocols:
        return None  # every protocol and port
    out: list[PortSpec] = []
    for p in protocols:
        if p.destinationNamedPort is not None:
            # The named port's protocol is the workload's: one alternative per protocol, each
            # matching only where the workload names a port so with that protocol.
            out += [PortSpec(protocol=proto, port=p.destinationNamedPort) for proto in ("TCP", "UDP", "SCTP")]
            continue
        for proto, spec in (("TCP", p.tcp), ("UDP", p.udp), ("SCTP", p.sctp)):
            if spec is None:
                continue
            port = spec.destinationPort
            if port.range is not None:
                out.append(PortSpec(protocol=proto, port=port.range.start, endPort=port.range.end))
            else:
                out.append(PortSpec(protocol=proto, port=port.number))
    return out


@dataclass(frozen=True)
class NativeRule:
    """An upstream rule, in the words `native_policy` takes (every upstream version gives these)."""

    name: str | None
    action: str                       # Accept | Deny | Pass
    peers: list[Any]                  # objects with namespaces / pods / networks
    ports: list[PortSpec] | None      # None: every protocol and port


def native_policy(metadata: Metadata, source_kind: str, tier: str, priority: int, subject: Any,
                  ingress: list[NativeRule], egress: list[NativeRule]) -> GlobalPolicy:
    """The GlobalPolicy the compiler enforces for an upstream cluster-wide policy: tier `platform`
    (Admin) or `baseline` (Baseline) at order = priority, the subject as its appliesTo, one native
    rule per upstream rule with the same action (Accept → allow, Deny → deny: a drop, Pass →
    pass), peers and ports. It selects no direction (`types: []`): an admin policy decides what its
    rules match and never isolates a workload, as upstream says."""
    if subject.namespaces is not None:
        applies = AppliesTo(selector=LabelSelector(), namespaceSelector=_native_selector(subject.namespaces))
    else:
        applies = AppliesTo(selector=_native_selector(subject.pods.podSelector),
                            namespaceSelector=_native_selector(subject.pods.namespaceSelector))

    def rules(upstream: list[NativeRule], direction: str) -> list[Rule]:
        taken: set[str] = set()
        out = []
        for i, r in enumerate(upstream):
            peers = [n for peer in r.peers for n in _native_peers(peer)]
            fields: dict[str, Any] = {"from_" if direction == "ingress" else "to": peers}
            out.append(Rule(id=rule_id(r.name, direction, i, taken), action=ACTIONS[r.action],
                            description=r.name, ports=r.ports, **fields))
        return out

    mode = "audit" if metadata.annotations.get(AUDIT_ANNOTATION) == "audit" else "enforce"
    meta = Metadata(name=metadata.name, annotations={SOURCE_KIND_ANNOTATION: source_kind})
    return GlobalPolicy(metadata=meta, spec=PolicySpec(
        tier=TIERS[tier], order=priority, mode=mode, appliesTo=applies, types=[],
        ingress=rules(ingress, "ingress"), egress=rules(egress, "egress")))


def to_native(policy: ClusterNetworkPolicy) -> GlobalPolicy:
    """The GlobalPolicy the compiler enforces for this ClusterNetworkPolicy (`native_policy`)."""
    spec = policy.spec
    ingress = [NativeRule(r.name, r.action, list(r.from_), _native_ports(r.protocols)) for r in spec.ingress or []]
    egress = [NativeRule(r.name, r.action, list(r.to), _native_ports(r.protocols)) for r in spec.egress or []]
    return native_policy(policy.metadata, "ClusterNetworkPolicy", spec.tier, spec.priority, spec.subject,
                         ingress, egress)
