"""What an apply says back about an object it took but that may not mean what its author thinks.

Today: CIDRs with host bits set in the Kubernetes kinds (`10.1.2.3/8`). The API server takes
them and means the network that holds the address (`10.0.0.0/8`); Stockade does the same and
says so, per field, so that an author who meant the host sees it. The native kinds refuse such
CIDRs instead, so they never warn.
"""

from __future__ import annotations

from typing import Any

from stockade.model.admin_policy import AdminNetworkPolicy, BaselineAdminNetworkPolicy
from stockade.model.cluster_policy import ClusterNetworkPolicy
from stockade.model.k8s import NetworkPolicy, has_host_bits, host_bits_warnings, network_of


def apply_warnings(obj: Any) -> list[str]:
    """One line per field worth a warning, naming the field; [] for most objects."""
    if isinstance(obj, NetworkPolicy):
        return host_bits_warnings(obj)
    if isinstance(obj, (ClusterNetworkPolicy, AdminNetworkPolicy, BaselineAdminNetworkPolicy)):
        return _network_peer_warnings(obj)
    return []


def _network_peer_warnings(policy: ClusterNetworkPolicy | AdminNetworkPolicy | BaselineAdminNetworkPolicy) -> list[str]:
    out = []
    for i, rule in enumerate(policy.spec.egress or []):
        for j, peer in enumerate(getattr(rule, "to", None) or []):
            for k, text in enumerate(getattr(peer, "networks", None) or []):
                if has_host_bits(text):
                    out.append(f"spec.egress[{i}].to[{j}].networks[{k}]: {text} has host bits set; "
                               f"it means {network_of(text)}, as Kubernetes reads it")
    return out
