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

`FlowMemory` keeps what the next comparison needs: the last state's workloads (the same objects,
no copy) and digests of those policies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Mapping

from stockade.compile.selection import Selection
from stockade.model.objects import Workload
from stockade.model.state import DesiredState


def enforcing_policies(state: DesiredState) -> dict[tuple[str, str], str]:
    """The policies with `enforceEstablished`, each with a digest of its spec."""
    return {key: json.dumps(p.spec.model_dump(mode="json"), sort_keys=True)
            for key, p in state.policies.items() if p.spec.enforceEstablished}


@dataclass
class FlowMemory:
    """What the last state held that `forget` compares the next one with.

    Runs on every change, so it looks only at workloads that changed: the agent's cache keeps an
    unchanged workload as the same object from one state to the next, so an identity check per
    workload finds the few that moved (a label change costs no address work at all)."""

    workloads: Mapping[tuple[str, str], Workload] = field(default_factory=dict)
    enforcing: dict[tuple[str, str], str] = field(default_factory=dict)
    known: bool = False  # False until the first state: nothing to compare with, nothing to forget

    def forget(self, state: DesiredState, host: str) -> set[str]:
        """The addresses whose connections this host must forget for `state`; remembers `state`."""
        enforcing = enforcing_policies(state) if state.policies else {}
        gone: set[str] = set()
        if self.known:
            before, after = self.workloads, state.workloads
            changed = [k for k, wl in after.items() if before.get(k) is not wl]
            changed += [k for k in before.keys() - after.keys()]
            for key in changed:  # addresses that left the workload that had them (deleted, released, moved)
                old = set(state_ips(state, before.get(key)))
                gone |= old - set(state_ips(state, after.get(key)))
            rolled_out = [key for key, digest in enforcing.items() if self.enforcing.get(key) != digest]
            if rolled_out:
                selection = Selection(state)
                for key in rolled_out:
                    for wkey in selection.applied(state.policies[key]):
                        workload = state.workloads[wkey]
                        if workload.spec.host == host:
                            gone.update(state.workload_ips(workload))
        self.workloads, self.enforcing, self.known = state.workloads, enforcing, True
        return gone


def state_ips(state: DesiredState, workload: Workload | None) -> list[str]:
    return state.workload_ips(workload) if workload is not None else []
