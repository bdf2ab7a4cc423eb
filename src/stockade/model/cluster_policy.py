"""SIG Network's `policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicy`, as upstream defines it.

The model mirrors the upstream API types (kubernetes-sigs/network-policy-api,
`apis/v1alpha2/clusternetworkpolicy_types.go`) field by field, with upstream's validation: the
`Admin`/`Baseline` tier enum, `priority` 0-1000, at most 25 rules per direction, 25 peers and 25
protocols per rule, rule names of at most 100 characters, exactly one field in a subject, peer,
protocol and port, `start < end` in a port range, CIDRs of at most 43 characters, domain names
by upstream's pattern, and no named port together with a `networks`, `nodes` or `domainNames`
peer. Optional fields stay None, so the object is served back as it was applied; unknown fields
are errors naming the field.

What this model does not take yet, refused with the reason rather than ignored:
- `nodes` peers: a Stockade cluster has no Node objects to select (the lab has none);
- `domainNames` peers: egress by domain name is its own piece of work (issue "Egress by domain
  name"); until it lands, such a rule would match nothing, which for an Accept or Pass is not
  what its author meant.

Not yet wired into `apply` (model.kinds) nor translated to the compiler's native policies: see
docs/kubernetes.md, "Cluster-wide policies".
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from stockade.model.k8s import K8sLabelSelector
from stockade.model.objects import Metadata, Strict

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
    namespaceSelector: K8sLabelSelector = Field(default_factory=K8sLabelSelector)
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
        return v

    @model_validator(mode="after")
    def _one(self) -> "EgressPeer":
        _exactly_one(self, "a peer")
        if self.nodes is not None:
            raise ValueError("nodes: Stockade has no Node objects to select; write the nodes' addresses "
                             "as networks")
        if self.domainNames is not None:
            raise ValueError("domainNames: egress by domain name is not supported yet; write the "
                             "destinations' addresses as networks")
        return self


def _check_rule_name(v: str | None) -> str | None:
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
        return _check_rule_name(v)


class EgressRule(Strict):
    name: str | None = None
    action: Action
    to: list[EgressPeer] = Field(min_length=1, max_length=MAX_PEERS)
    protocols: list[Protocol] | None = Field(default=None, min_length=1, max_length=MAX_PROTOCOLS)

    @field_validator("name")
    @classmethod
    def _v_name(cls, v: str | None) -> str | None:
        return _check_rule_name(v)

    @model_validator(mode="after")
    def _no_named_port_to_networks(self) -> "EgressRule":
        # Upstream's CEL rule: networks, nodes and domain names have no named ports.
        if any(p.destinationNamedPort is not None for p in self.protocols or []) and any(
                peer.networks is not None or peer.nodes is not None or peer.domainNames is not None
                for peer in self.to):
            raise ValueError("protocols: a destinationNamedPort cannot be used with a networks, nodes or "
                             "domainNames peer (they have no named ports)")
        return self


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
