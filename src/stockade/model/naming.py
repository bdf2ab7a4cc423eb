"""Stable names derived from object identity: interface names and short hashes.

Pure. Kernel names are short (interfaces 15 characters, nftables objects are
kept under 64), so long identities are shortened to a readable prefix plus a
stable hash.
"""

from __future__ import annotations

import hashlib
import re

from stockade.model.objects import Workload

IFACE_PREFIX = "stk"
# On a Workload: who made its interface (`stockade-cni`, a hypervisor hook, `lab-vm`). Such a
# workload is attached to an interface Stockade did not create: the lab makes no endpoint for it,
# and a host credential may register, change and remove it on its own host (controller.rbac).
ATTACHED_BY = "stockade.io/attached-by"


def short_hash(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def workload_interface(workload: Workload) -> str:
    """The host-side interface of a workload: given in the spec, or derived (the lab's veth)."""
    if workload.spec.interface:
        return workload.spec.interface
    ns = workload.metadata.namespace or ""
    return IFACE_PREFIX + short_hash(f"{ns}/{workload.metadata.name}", 11)


def readable(text: str, limit: int) -> str:
    """Lowercase, [a-z0-9_] only, cut to `limit`."""
    return re.sub(r"[^a-z0-9_]+", "_", text.lower())[:limit].strip("_")


def object_name(prefix: str, identity: str, hint: str = "", hint_len: int = 20) -> str:
    """`prefix_hint_hash`: readable in `nft list`, unique by the hash of the full identity."""
    h = short_hash(identity, 10)
    hint = readable(hint, hint_len)
    return f"{prefix}_{hint}_{h}" if hint else f"{prefix}_{h}"
