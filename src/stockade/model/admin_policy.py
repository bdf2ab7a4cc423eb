"""SIG Network's earlier `policy.networking.k8s.io/v1alpha1` kinds: `AdminNetworkPolicy` and
`BaselineAdminNetworkPolicy`, as upstream defines them (apis/v1alpha1), and their native meaning.

They are what `ClusterNetworkPolicy` (model.cluster_policy) replaced: an AdminNetworkPolicy is
an `Admin`-tier policy (actions `Allow`/`Deny`/`Pass`, `priority` 0-1000), the one
BaselineAdminNetworkPolicy — upstream allows only `metadata.name: default` — a `Baseline`-tier one
(actions `Allow`/`Deny`). Upstream's v1alpha1 limits differ from v1alpha2's and are kept: 100
rules per direction, 100 peers and 100 ports per rule; ports are `portNumber` (protocol, port),
`portRange` (protocol, start < end) or `namedPort`, the protocol TCP when not given. As for
ClusterNetworkPolicy, `nodes` and `domainNames` peers are refused with the reason, and the native
policy is built by the same rules (`cluster_policy.native_policy`): same tiers, rule ids from
rule names, deny as a drop, never isolating, audit mode by the `stockade.io/mode` annotation.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from stockade.model.cluster_policy import (
    MAX_CIDR_LENGTH,
    EgressPeer,
    NamespacedPod,
    NativeRule,
    Subject,
    check_domain_names_accept_only,
    check_rule_name,
    native_policy,
)
from stockade.model.k8s import K8sLabelSelector
from stockade.model.objects import GlobalPolicy, Metadata, PortSpec, Strict

API_VERSION = "policy.networking.k8s.io/v1alpha1"
MAX_RULES = 100
MAX_PEERS = 100
MAX_PORTS = 100
BANP_NAME = "default"

L4 = Literal["TCP", "UDP", "SCTP"]


class PortNumber(Strict):
    protocol: L4 = "TCP"
    port: int = Field(ge=1, le=65535)


class PortRange(Strict):
    protocol: L4 = "TCP"
    start: int = Field(ge=1, le=65535)
    end: int = Field(ge=1, le=65535)

    @model_validator(mode="after")
    def _ordered(self) -> "PortRange":
        if not self.start < self.end:
            raise ValueError(f"start ({self.start}) must be less than end ({self.end})")
        return self


class AdminPort(Strict):
    portNumber: PortNumber | None = None
    namedPort: str | None = None
    portRange: PortRange | None = None

    @model_validator(mode="after")
    def _one(self) -> "AdminPort":
        present = [n for n, v in self if v is not None]
        if len(present) != 1:
            raise ValueError("a port needs exactly one of portNumber, namedPort, portRange"
                             + (f", not {', '.join(present)}" if present else ""))
        return self

    def native(self) -> list[PortSpec]:
        if self.portNumber is not None:
            return [PortSpec(protocol=self.portNumber.protocol, port=self.portNumber.port)]
        if self.portRange is not None:
            return [PortSpec(protocol=self.portRange.protocol, port=self.portRange.start, endPort=self.portRange.end)]
        # A named port's protocol is the workload's (as for ClusterNetworkPolicy's destinationNamedPort).
        return [PortSpec(protocol=proto, port=self.namedPort) for proto in ("TCP", "UDP", "SCTP")]


class RequiredNamespacedPod(NamespacedPod):
    namespaceSelector: K8sLabelSelector  # v1alpha1: required (an empty one: every namespace)


class AdminSubject(Subject):
    pods: RequiredNamespacedPod | None = None  # type: ignore[assignment]


class AdminIngressPeer(Strict):
    namespaces: K8sLabelSelector | None = None
    pods: RequiredNamespacedPod | None = None

    @model_validator(mode="after")
    def _one(self) -> "AdminIngressPeer":
        present = [n for n, v in self if v is not None]
        if len(present) != 1:
            raise ValueError("a peer needs exactly one of namespaces, pods" + (f", not {', '.join(present)}" if present else ""))
        return self


class AdminEgressPeer(EgressPeer):
    pods: RequiredNamespacedPod | None = None  # type: ignore[assignment]


class BaselineEgressPeer(AdminEgressPeer):
    @model_validator(mode="before")
    @classmethod
    def _no_domains(cls, data: Any) -> Any:
        if isinstance(data, dict) and "domainNames" in data:
            raise ValueError("domainNames: a BaselineAdminNetworkPolicy has no domainNames peer")
        return data


def _no_named_port_to_networks(peers: list[Any], ports: list[AdminPort] | None) -> None:
    if any(p.namedPort is not None for p in ports or []) and any(
            getattr(peer, "networks", None) is not None or getattr(peer, "nodes", None) is not None
            or getattr(peer, "domainNames", None) is not None for peer in peers):
        raise ValueError("ports: a namedPort cannot be used with a networks, nodes or domainNames peer "
                         "(they have no named ports)")


class _Rule(Strict):
    name: str | None = None
    ports: list[AdminPort] | None = Field(default=None, min_length=1, max_length=MAX_PORTS)

    @field_validator("name")
    @classmethod
    def _v_name(cls, v: str | None) -> str | None:
        return check_rule_name(v)


class AdminIngressRule(_Rule):
    action: Literal["Allow", "Deny", "Pass"]
    from_: list[AdminIngressPeer] = Field(alias="from", min_length=1, max_length=MAX_PEERS)


class AdminEgressRule(_Rule):
    action: Literal["Allow", "Deny", "Pass"]
    to: list[AdminEgressPeer] = Field(min_length=1, max_length=MAX_PEERS)

    @model_validator(mode="after")
    def _named(self) -> "AdminEgressRule":
        _no_named_port_to_networks(self.to, self.ports)
        check_domain_names_accept_only(self.to, self.action, "Allow")
        return self


class BaselineIngressRule(_Rule):
    action: Literal["Allow", "Deny"]
    from_: list[AdminIngressPeer] = Field(alias="from", min_length=1, max_length=MAX_PEERS)


class BaselineEgressRule(_Rule):
    action: Literal["Allow", "Deny"]
    to: list[BaselineEgressPeer] = Field(min_length=1, max_length=MAX_PEERS)

    @model_validator(mode="after")
    def _named(self) -> "BaselineEgressRule":
        _no_named_port_to_networks(self.to, self.ports)
        return self


class AdminNetworkPolicySpec(Strict):
    priority: int = Field(ge=0, le=1000)
    subject: AdminSubject
    ingress: list[AdminIngressRule] | None = Field(default=None, max_length=MAX_RULES)
    egress: list[AdminEgressRule] | None = Field(default=None, max_length=MAX_RULES)


class BaselineAdminNetworkPolicySpec(Strict):
    subject: AdminSubject
    ingress: list[BaselineIngressRule] | None = Field(default=None, max_length=MAX_RULES)
    egress: list[BaselineEgressRule] | None = Field(default=None, max_length=MAX_RULES)


class AdminNetworkPolicy(Strict):
    apiVersion: Literal["policy.networking.k8s.io/v1alpha1"] = API_VERSION
    kind: Literal["AdminNetworkPolicy"] = "AdminNetworkPolicy"
    metadata: Metadata
    spec: AdminNetworkPolicySpec
    status: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _cluster_scoped(self) -> "AdminNetworkPolicy":
        if self.metadata.namespace:
            raise ValueError("metadata.namespace: an AdminNetworkPolicy is not namespaced")
        return self


class BaselineAdminNetworkPolicy(Strict):
    apiVersion: Literal["policy.networking.k8s.io/v1alpha1"] = API_VERSION
    kind: Literal["BaselineAdminNetworkPolicy"] = "BaselineAdminNetworkPolicy"
    metadata: Metadata
    spec: BaselineAdminNetworkPolicySpec
    status: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _the_default(self) -> "BaselineAdminNetworkPolicy":
        if self.metadata.namespace:
            raise ValueError("metadata.namespace: a BaselineAdminNetworkPolicy is not namespaced")
        if self.metadata.name != BANP_NAME:
            raise ValueError(f"metadata.name: there is one BaselineAdminNetworkPolicy and it is named "
                             f"{BANP_NAME!r}, not {self.metadata.name!r}")
        return self


ACTIONS = {"Allow": "Accept", "Deny": "Deny", "Pass": "Pass"}   # v1alpha1 → v1alpha2 words


def _ports(ports: list[AdminPort] | None) -> list[PortSpec] | None:
    return [spec for p in ports for spec in p.native()] if ports else None


def to_native(policy: AdminNetworkPolicy | BaselineAdminNetworkPolicy) -> GlobalPolicy:
    """The native policy, as `cluster_policy.native_policy` builds it for ClusterNetworkPolicy."""
    if isinstance(policy, AdminNetworkPolicy):
        tier, priority = "Admin", policy.spec.priority
    else:
        tier, priority = "Baseline", 1000
    ingress = [NativeRule(r.name, ACTIONS[r.action], list(r.from_), _ports(r.ports)) for r in policy.spec.ingress or []]
    egress = [NativeRule(r.name, ACTIONS[r.action], list(r.to), _ports(r.ports)) for r in policy.spec.egress or []]
    return native_policy(policy.metadata, policy.kind, tier, priority, policy.spec.subject, ingress, egress)


__all__ = ["AdminNetworkPolicy", "BaselineAdminNetworkPolicy", "MAX_CIDR_LENGTH", "to_native"]
