"""`stockade lab migrate NS/NAME --to HOST`: move a running lab workload to another hypervisor, live.

What a hypervisor does for a VM's live migration with a distributed firewall, done by the lab
for a namespace workload, whose processes and sockets stay where they are (its netns) while the
link that carries its traffic moves:

1. mark the move (`lab.moves`), so neither host's endpoint driver tears down or re-makes it;
2. tell the controller: the Workload's `spec.host` becomes HOST (one revision; the controller
   records `status.movedFrom`/`movedAt`); the policy follows the workload: HOST's agent
   programs it, the old host's agent drops it, exports the conntrack entries of its addresses,
   hands them over and deletes them; HOST's agent imports them (agent.migration); every
   hypervisor's routes to it now point at HOST;
3. wait until both agents report that revision, and HOST its handoff: the old host keeps
   nothing of it and HOST knows its connections;
4. switch: the workload's netns takes HOST's name and the host side of its link moves into
   HOST's namespace (the link, and the ARP/ND state behind it, is the same one);
5. unmark; HOST's agent, woken by the link's arrival, plumbs it (gateway address, routes).

The workload is unreachable from the moment the old host stops forwarding for it (step 2) to
the moment HOST plumbs its link (step 5): `MoveResult` says how long each part took.
`--no-state` deletes the imported entries on HOST before the switch: the connections then meet
HOST's policy as new ones (to show what carrying them is for; tests/e2e/test_live_migration.py).

A lab VM (`lab vm start`) moves the same way, with QEMU's own live migration in place of step 4
(`lab.vm.migrate`): a destination QEMU on a tap of the new hypervisor receives the running
guest, and the source QEMU quits once it has handed it over.

Invariants: the move is refused before anything changes when the workload is neither a lab-made
namespace workload nor a lab VM on a lab hypervisor, or HOST is not another one; a mark never
outlives the command; a failure after step 2 says what was written and what the hosts will do.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import asdict, dataclass
from typing import Any

from stockade.client import ControllerClient
from stockade.errors import LabError, NotFoundError, StockadeError
from stockade.lab import moves, naming, vms
from stockade.lab import netns as ns
from stockade.lab.rtnl import dump_links, netlink_op
from stockade.lab.state import LabSettings, read_record
from stockade.model.naming import ATTACHED_BY

SETTLE_TIMEOUT = 30.0


@dataclass(frozen=True)
class MoveResult:
    workload: str
    source: str
    target: str
    revision: int
    connections: int            # open connections carried to HOST (0 with --no-state: dropped there)
    handoff_seconds: float      # the write until both agents enforce it and HOST holds the connections
    switch_seconds: float       # netns renamed and link moved
    plumbed_seconds: float      # the link's arrival until HOST reports the workload's endpoint
    total_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


def migrate(settings: LabSettings, client: ControllerClient, key: str, target: str,
            carry_state: bool = True) -> MoveResult:
    namespace, _, name = key.partition("/")
    if not namespace or not name:
        raise LabError(f"{key!r}: name the workload as NAMESPACE/NAME")
    record = read_record(settings)
    if record is None:
        raise LabError("no lab is up here: run `stockade lab up` first")
    try:
        doc = client.list("Workload", namespace=namespace, name=name)["items"][0]
    except (NotFoundError, IndexError):
        raise NotFoundError(f"Workload {key}: not found") from None
    source = doc["spec"]["host"]
    is_vm = vms.is_lab_vm(doc)
    maker = ((doc["metadata"].get("annotations")) or {}).get(ATTACHED_BY)
    if maker is not None and not is_vm:
        raise LabError(f"Workload {key}: its interface was made by {maker}, not the lab: only the lab's "
                       "namespace workloads and VMs move live")
    if source not in record.host_names:
        raise LabError(f"Workload {key}: its host {source!r} is not a lab hypervisor")
    if target not in record.host_names:
        raise LabError(f"--to {target!r}: not a lab hypervisor ({', '.join(record.host_names)})")
    if target == source:
        raise LabError(f"Workload {key} is already on {target}")
    if is_vm:
        return _migrate_vm(settings, client, doc, key, source, target, carry_state)
    old_ns = naming.workload_netns(settings.prefix, source, namespace, name)
    new_ns = naming.workload_netns(settings.prefix, target, namespace, name)
    interface = (doc.get("status") or {}).get("interface")  # the host side, as its agent reports it
    if not interface:
        raise LabError(f"Workload {key}: its host reports no interface for it (is its agent running?)")
    if not ns.exists(old_ns):
        raise LabError(f"Workload {key}: its network namespace {old_ns} does not exist (is its agent running?)")
    if ns.exists(new_ns):
        raise LabError(f"Workload {key}: {new_ns} exists already; `stockade lab up` repairs the lab first")

    started = time.monotonic()
    moves.mark(settings.prefix, moves.Move(key, source, target))
    try:
        moved = _moved_document(doc, target)
        revision = int(client.apply([moved], message=f"lab migrate {key} {source} -> {target}")["revision"])
        connections = _settle(client, key, source, target, revision, carry_state)
        if not carry_state:
            _forget_in(naming.host_netns(settings.prefix, target), doc["status"]["ips"])
            connections = 0
        handed_off = time.monotonic()
        _switch(settings.prefix, source, target, old_ns, new_ns, interface)
        switched = time.monotonic()
    finally:
        moves.unmark(settings.prefix, key)
    _wait_plumbed(client, namespace, name, new_ns)
    done = time.monotonic()
    return MoveResult(key, source, target, revision, connections, handed_off - started, switched - handed_off,
                      done - switched, done - started)


def _migrate_vm(settings: LabSettings, client: ControllerClient, doc: dict[str, Any], key: str, source: str,
                target: str, carry_state: bool) -> MoveResult:
    """A lab VM moves by QEMU's own live migration: the same steps, with QEMU in place of the
    netns rename and link move (its tap is made anew on the destination, by the destination QEMU)."""
    namespace, name = key.split("/", 1)
    started = time.monotonic()
    revision = int(client.apply([_moved_document(doc, target)],
                                message=f"lab migrate {key} {source} -> {target}")["revision"])
    connections = _settle(client, key, source, target, revision, carry_state)
    if not carry_state:
        _forget_in(naming.host_netns(settings.prefix, target), doc["status"]["ips"])
        connections = 0
    handed_off = time.monotonic()
    vms.move(settings, doc, target)
    switched = time.monotonic()
    _wait_plumbed(client, namespace, name, None)
    done = time.monotonic()
    return MoveResult(key, source, target, revision, connections, handed_off - started, switched - handed_off,
                      done - switched, done - started)


def _moved_document(doc: dict[str, Any], target: str) -> dict[str, Any]:
    """The workload as it is, on `target`: its addresses (IPAM's, kept by the controller) and MAC stay."""
    meta = {k: v for k, v in doc["metadata"].items() if k not in ("resourceVersion",)}
    return {"apiVersion": doc["apiVersion"], "kind": "Workload", "metadata": meta,
            "spec": {**doc["spec"], "host": target}}


def _agents(client: ControllerClient) -> dict[str, dict[str, Any]]:
    return {a["host"]: a for a in client.status().get("agents") or []}


def _settle(client: ControllerClient, key: str, source: str, target: str, revision: int,
            carry_state: bool) -> int:
    """Wait until both hosts enforce `revision` and the target took the connections over; how many."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        agents = _agents(client)
        src, dst = agents.get(source, {}), agents.get(target, {})
        ready = all(a.get("inSync") and int(a.get("revision") or 0) >= revision for a in (src, dst))
        handoff = (dst.get("handoffs") or {}).get(key)
        if ready and handoff is not None and int(handoff.get("revision", 0)) >= revision:
            if carry_state and not handoff.get("taken"):
                raise LabError(f"Workload {key}: {target} got no connections from {source} (read its agent's log); "
                               f"revision {revision} moved it, and the lab leaves it half-way: "
                               "`stockade lab up` re-creates it on its new host")
            return int(handoff.get("connections", 0))
        if time.monotonic() > deadline:
            raise LabError(f"Workload {key}: the agents of {source} and {target} did not both enforce revision "
                           f"{revision} and hand its connections over within {SETTLE_TIMEOUT:.0f} s "
                           f"({source}: {src.get('revision')}, {target}: {dst.get('revision')}, handoff: {handoff})")
        time.sleep(0.02)


def _forget_in(hv: str, ips: list[str]) -> None:
    """Delete the conntrack entries of `ips` in hypervisor netns `hv` (the --no-state move)."""
    for ip in ips:
        for side in ("-s", "-d"):
            subprocess.run(["ip", "netns", "exec", hv, "conntrack", "-D", side, ip],
                           capture_output=True, text=True, timeout=20, check=False)


def _switch(prefix: str, source: str, target: str, old_ns: str, new_ns: str, interface: str) -> None:
    """The workload's netns under the target's name, then its link's host side into the target."""
    ns.rename(old_ns, new_ns)
    src_hv, dst_hv = naming.host_netns(prefix, source), naming.host_netns(prefix, target)
    with ns.open_rtnl(src_hv) as ipr:
        link = dump_links(ipr).get(interface)
        if link is None:
            raise LabError(f"{interface} is not in {src_hv}: the workload's link is gone")
        with netlink_op(f"move {interface} from {src_hv} to {dst_hv}"):
            ipr.link("set", index=link.index, net_ns_fd=dst_hv)


def _wait_plumbed(client: ControllerClient, namespace: str, name: str, new_ns: str | None) -> None:
    """Until the new host reports the workload's endpoint: its netns `new_ns`, or for a VM
    (`new_ns` None) its tap, which the new host's report holds once it plumbed it."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        try:
            status = client.list("Workload", namespace=namespace, name=name)["items"][0].get("status") or {}
        except (StockadeError, IndexError):
            status = {}
        if (status.get("netns") == new_ns) if new_ns is not None else bool(status.get("interface")):
            return
        if time.monotonic() > deadline:
            raise LabError(f"Workload {namespace}/{name}: its new host did not report its endpoint {new_ns} "
                           f"within {SETTLE_TIMEOUT:.0f} s")
        time.sleep(0.02)
