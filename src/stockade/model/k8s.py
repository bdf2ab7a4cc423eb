"""Kubernetes `networking.k8s.io/v1 NetworkPolicy`, accepted as it is, and its native meaning.

The model mirrors the upstream schema (optional fields stay None, so the
object is served back exactly as it was applied). `to_native` translates it
into the Policy the compiler runs: an application-tier policy whose rules are
all `allow`, that selects its pods for exactly the directions of its
`policyTypes` — so in an `allowUntilSelected` namespace it isolates them and
its allows add up with every other policy selecting them.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

import pydantic
from pydantic import Field, field_validator, model_validator

from stockade.model.objects import (
    MAX_RULES_PER_DIRECTION,
    AppliesTo,
    LabelSelector,
    Metadata,
    Peer,
    Policy,
    PolicySpec,
    PortSpec,
    Rule,
    Strict,
    _cidr,
)
from stockade.model.selectors import SelectorSyntaxError, parse_selector

K8S_API_VERSION = "networking.k8s.io/v1"
SOURCE_KIND_ANNOTATION = "stockade.io/source-kind"
# Where NetworkPolicies sit among native policies of the application tier.
NETWORK_POLICY_ORDER = 1000


class K8sLabelSelector(Strict):
    matchLabels: dict[str, str] | None = None
    matchExpressions: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _parses(self) -> "K8sLabelSelector":
        try:
            parse_selector(self.model_dump(exclude_none=True))
        except SelectorSyntaxError as e:
            raise ValueError(str(e)) from None
        return self

    def native(self) -> LabelSelector:
        return LabelSelector(matchLabels=self.matchLabels or {}, matchExpressions=self.matchExpressions or [])


class IPBlock(Strict):
    """`cidr` and `except` as the Kubernetes API server takes them: an address with host bits set
    (`10.1.2.3/8`) is accepted and means the network that holds it (`10.0.0.0/8`), as Go's
    `net.ParseCIDR` reads it; the object keeps the text it was given (`host_bits_warnings` says
    what it means), and the native translation uses the network."""

    cidr: str
    except_: list[str] | None = Field(default=None, alias="except")

    @field_validator("cidr")
    @classmethod
    def _v_cidr(cls, v: str) -> str:
        return _k8s_cidr(v)

    @field_validator("except_")
    @classmethod
    def _v_except(cls, v: list[str] | None) -> list[str] | None:
        return [_k8s_cidr(x) for x in v] if v is not None else None

    @model_validator(mode="after")
    def _except_inside(self) -> "IPBlock":
        # Upstream refuses these too ("must be a strict subset of `cidr`"); accepting one would
        # store a policy that cannot be translated (the native Peer refuses it) and fail every compile.
        net = network_of(self.cidr)
        for i, text in enumerate(self.except_ or []):
            sub = network_of(text)
            if sub.version != net.version or not sub.subnet_of(net) or sub.prefixlen <= net.prefixlen:  # type: ignore[arg-type]
                raise ValueError(f"except[{i}]: {text} must be a strict subset of cidr {self.cidr}")
        return self

    def networks(self) -> tuple[str, list[str]]:
        """The CIDR and exceptions as networks (host bits cleared): what the translation enforces."""
        return str(network_of(self.cidr)), [str(network_of(x)) for x in self.except_ or []]


def network_of(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """The network a Kubernetes CIDR means: host bits cleared."""
    return ipaddress.ip_network(text, strict=False)


def _k8s_cidr(v: str) -> str:
    """Valid as the API server sees it; a CIDR without host bits in canonical form (as the native
    kinds keep it), one with host bits as given."""
    try:
        net = network_of(v)
    except ValueError as e:
        raise ValueError(f"{v!r} is not a valid CIDR ({e})") from None
    canonical = _cidr(str(net))  # the IPv4-mapped check and its message
    return v if has_host_bits(v) else canonical


def has_host_bits(v: str) -> bool:
    """A CIDR (already validated) whose address is not its network's (`10.1.2.3/8`)."""
    try:
        ipaddress.ip_network(v, strict=True)
    except ValueError:
        return True
    return False


def host_bits_warnings(policy: "NetworkPolicy") -> list[str]:
    """A line for each ipBlock CIDR with host bits set, saying what it is taken to mean."""
    out = []
    sides: list[tuple[str, str, list[list[NetworkPolicyPeer] | None]]] = [
        ("ingress", "from", [r.from_ for r in policy.spec.ingress or []]),
        ("egress", "to", [r.to for r in policy.spec.egress or []])]
    for direction, side, rule_peers in sides:
        for i, peers in enumerate(rule_peers):
            for j, peer in enumerate(peers or []):
                if peer.ipBlock is None:
                    continue
                fields = [("cidr", peer.ipBlock.cidr)] + [(f"except[{k}]", x) for k, x in
                                                         enumerate(peer.ipBlock.except_ or [])]
                for name, text in fields:
                    if has_host_bits(text):
                        out.append(f"spec.{direction}[{i}].{side}[{j}].ipBlock.{name}: {text} has host bits set; "
                                   f"it means {network_of(text)}, as Kubernetes reads it")
    return out


class NetworkPolicyPeer(Strict):
    podSelector: K8sLabelSelector | None = None
    namespaceSelector: K8sLabelSelector | None = None
    ipBlock: IPBlock | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "NetworkPolicyPeer":
        if self.ipBlock is not None and (self.podSelector is not None or self.namespaceSelector is not None):
            raise ValueError("ipBlock cannot be combined with podSelector or namespaceSelector")
        if self.ipBlock is None and self.podSelector is None and self.namespaceSelector is None:
            raise ValueError("a peer needs podSelector, namespaceSelector or ipBlock")
        return self


class NetworkPolicyPort(Strict):
    protocol: Literal["TCP", "UDP", "SCTP"] | None = None
    port: int | str | None = None
    endPort: int | None = None

    @model_validator(mode="after")
    def _valid(self) -> "NetworkPolicyPort":
        # Checked through the native PortSpec so that both kinds give the same messages; raised
        # here, so that the problem names this port's field (spec.ingress[0].ports[1]).
        try:
            _native_port(self)
        except pydantic.ValidationError as e:
            raise ValueError("; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())) from None
        return self


class NetworkPolicyIngressRule(Strict):
    from_: list[NetworkPolicyPeer] | None = Field(default=None, alias="from")
    ports: list[NetworkPolicyPort] | None = None


class NetworkPolicyEgressRule(Strict):
    to: list[NetworkPolicyPeer] | None = None
    ports: list[NetworkPolicyPort] | None = None


class NetworkPolicySpec(Strict):
    # `podSelector:` with no value (as in upstream's conformance fixtures) or no key at all is the
    # empty selector, every pod of the namespace: the API server decodes both to the zero value.
    podSelector: K8sLabelSelector = Field(default_factory=K8sLabelSelector)
    policyTypes: list[Literal["Ingress", "Egress"]] | None = None
    ingress: list[NetworkPolicyIngressRule] | None = Field(default=None, max_length=MAX_RULES_PER_DIRECTION)
    egress: list[NetworkPolicyEgressRule] | None = Field(default=None, max_length=MAX_RULES_PER_DIRECTION)

    @field_validator("podSelector", mode="before")
    @classmethod
    def _null_selects_every_pod(cls, value: Any) -> Any:
        return {} if value is None else value


class NetworkPolicy(Strict):
    apiVersion: Literal["networking.k8s.io/v1"] = K8S_API_VERSION
    kind: Literal["NetworkPolicy"] = "NetworkPolicy"
    metadata: Metadata
    spec: NetworkPolicySpec
    status: dict[str, Any] | None = None

    def policy_types(self) -> tuple[str, ...]:
        """Upstream default (SetDefaults_NetworkPolicy): when policyTypes is absent or empty,
        Ingress, plus Egress when there is at least one egress rule — `egress: []` alone does
        not isolate egress; that takes `policyTypes: [Egress]`."""
        if self.spec.policyTypes:
            return tuple(self.spec.policyTypes)
        return ("Ingress", "Egress") if self.spec.egress else ("Ingress",)


def _native_port(port: NetworkPolicyPort) -> PortSpec:
    return PortSpec(protocol=port.protocol or "TCP", port=port.port, endPort=port.endPort)


def _native_peer(peer: NetworkPolicyPeer) -> Peer:
    if peer.ipBlock is not None:
        cidr, excepted = peer.ipBlock.networks()
        return Peer(cidr=cidr, except_=excepted)
    return Peer(selector=peer.podSelector.native() if peer.podSelector is not None else None,
                namespaceSelector=peer.namespaceSelector.native() if peer.namespaceSelector is not None else None)


def _native_rule(peers: list[NetworkPolicyPeer] | None, ports: list[NetworkPolicyPort] | None,
                 direction: str) -> Rule:
    # Missing or empty `from`/`to`: every peer; missing or empty `ports`: every port.
    native_peers = [_native_peer(p) for p in peers] if peers else None
    native_ports = [_native_port(p) for p in ports] if ports else None
    if direction == "ingress":
        return Rule(action="allow", from_=native_peers, ports=native_ports)
    return Rule(action="allow", to=native_peers, ports=native_ports)


def to_native(np: NetworkPolicy) -> Policy:
    """The Policy the compiler enforces for this NetworkPolicy."""
    types = np.policy_types()
    ingress = [_native_rule(r.from_, r.ports, "ingress") for r in (np.spec.ingress or [])] \
        if "Ingress" in types else []
    egress = [_native_rule(r.to, r.ports, "egress") for r in (np.spec.egress or [])] if "Egress" in types else []
    meta = Metadata(name=np.metadata.name, namespace=np.metadata.namespace,
                    annotations={SOURCE_KIND_ANNOTATION: "NetworkPolicy"})
    spec = PolicySpec(tier="application", order=NETWORK_POLICY_ORDER,
                      appliesTo=AppliesTo(selector=np.spec.podSelector.native()),
                      types=[t for t in ("Ingress", "Egress") if t in types],
                      ingress=ingress, egress=egress)
    return Policy(metadata=meta, spec=spec)
