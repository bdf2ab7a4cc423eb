"""Which open connections a change of the desired state must end (pure).

Conntrack accepts the packets of an established connection before any policy runs, so two
kinds of change need the kernel to forget connections, not only to load a new program:

- an address that no longer belongs to the workload that had it (the workload was deleted,
  or the address released or handed to another workload, maybe another tenant's): its
  connections must not live on for whoever holds the address next. Any host may track such a
  connection, so every host forgets it;
- a Policy (or GlobalPolicy) with `spec.enforceEstablished: true` that is new or changed:
  connections of the local workloads it applies to are cut at its rollout, and their next
  packets are decided by the new policy (by default, established connections are kept, as
  Kubernetes' implementations do).

`FlowMemory` keeps what the next comparison needs (address owners, digests of those policies),
not a whole previous state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from stockade.compile.selection import Selection
from stockade.model.state import DesiredState


def address_owners(state: DesiredState) -> dict[str, str]:
    """Every workload address and the workload (`ns/name`) that holds it."""
    return {ip: f"{key[0]}/{key[1]}" for key, wl in state.workloads.items() for ip in state.workload_ips(wl)}


def enforcing_policies(state: DesiredState) -> dict[tuple[str, str], str]:
    """The policies with `enforceEstablished`, each with a digest of its spec."""
    return {key: json.dumps(p.spec.model_dump(mode="json"), sort_keys=True)
            for key, p in state.policies.items() if p.spec.enforceEstablished}


@dataclass
class FlowMemory:
    """What the last state held that `forget` compares the next one with."""

    owners: dict[str, str] = field(default_factory=dict)
    enforcing: dict[tuple[str, str], str] = field(default_factory=dict)
    known: bool = False  # False until the first state: nothing to compare with, nothing to forget

    def forget(self, state: DesiredState, host: str) -> set[str]:
        """The addresses whose connections this host must forget for `state`; remembers `state`."""
        owners, enforcing = address_owners(state), enforcing_policies(state)
        gone: set[str] = set()
        if self.known:
            gone = {ip for ip, owner in self.owners.items() if owners.get(ip) != owner}
            rolled_out = [key for key, digest in enforcing.items() if self.enforcing.get(key) != digest]
            if rolled_out:
                selection = Selection(state)
                for key in rolled_out:
                    for wkey in selection.applied(state.policies[key]):
                        workload = state.workloads[wkey]
                        if workload.spec.host == host:
                            gone.update(state.workload_ips(workload))
        self.owners, self.enforcing, self.known = owners, enforcing, True
        return gone
