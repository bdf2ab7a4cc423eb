"""A policy's `appliesTo` and a rule's peers and ports as one line of text each, for people.

Pure and total: every shape the model accepts has a text, and the same input gives the same
text. Used by the rules view (controller.rule_hits) that the dashboard's Policy page shows;
the objects themselves stay the source of truth (`stockade get policy -o yaml`).

    appliesTo  {group: web}                          -> "group web"
               {selector: {matchLabels: {tier: db}}} -> "selector tier=db"
    peers      None (no from/to)                     -> "any"
               [{cidr: 198.19.0.0/16, except: [..]}] -> "cidr 198.19.0.0/16 except 198.19.5.0/24"
    ports      None                                  -> "any"
               [{protocol: TCP, port: 8000, endPort: 8100}, {protocol: ICMP, type: 8}]
                                                     -> "TCP 8000-8100, ICMP type 8"
"""

from __future__ import annotations

from typing import Any, Sequence

from stockade.model.objects import AppliesTo, LabelSelector, Peer, PortSpec

ANY = "any"


def selector_text(selector: LabelSelector | None) -> str:
    """`k=v, k2 In (a, b), k3 Exists`; an empty selector selects everything: `(all)`."""
    if selector is None:
        return "(all)"
    terms = [f"{k}={v}" for k, v in sorted(selector.matchLabels.items())]
    for expr in selector.matchExpressions:
        terms.append(_expression_text(expr))
    return ", ".join(terms) or "(all)"


def _expression_text(expr: dict[str, Any]) -> str:
    key, operator = str(expr.get("key", "")), str(expr.get("operator", ""))
    values = expr.get("values") or []
    return f"{key} {operator} ({', '.join(str(v) for v in values)})" if values else f"{key} {operator}"


def _selection_text(selector: Any, namespace_selector: Any) -> str:
    """`selector A in namespaces B`, either half alone when the other is not given."""
    parts = []
    if selector is not None:
        parts.append(f"selector {selector_text(selector)}")
    if namespace_selector is not None:
        parts.append(f"namespaces {selector_text(namespace_selector)}")
    return " in ".join(parts)


def applies_to_text(applies: AppliesTo) -> str:
    if applies.group is not None:
        return f"group {applies.group}"
    return _selection_text(applies.selector, applies.namespaceSelector)


def peer_text(peer: Peer) -> str:
    if peer.group is not None:
        return f"group {peer.group}"
    if peer.cidr is not None:
        return f"cidr {peer.cidr}" + (f" except {', '.join(peer.except_)}" if peer.except_ else "")
    if peer.fqdn is not None:
        return f"fqdn {peer.fqdn}"
    return _selection_text(peer.selector, peer.namespaceSelector)


def peers_text(peers: Sequence[Peer] | None) -> str:
    """A rule's `from` (ingress) or `to` (egress); none given matches every peer."""
    if not peers:
        return ANY
    return "; ".join(peer_text(p) for p in peers)


def port_text(port: PortSpec) -> str:
    if port.protocol in ("ICMP", "ICMPv6"):
        text: str = port.protocol
        if port.type is not None:
            text += f" type {port.type}"
        if port.code is not None:
            text += f" code {port.code}"
        return text
    if port.port is None:
        return port.protocol
    if port.endPort is not None and port.endPort != port.port:
        return f"{port.protocol} {port.port}-{port.endPort}"
    return f"{port.protocol} {port.port}"


def ports_text(ports: Sequence[PortSpec] | None) -> str:
    """A rule's ports; none given matches every port and protocol."""
    if not ports:
        return ANY
    return ", ".join(port_text(p) for p in ports)
