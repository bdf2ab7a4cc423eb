"""`stockade lab vm start | stop`: a lab workload that is a real QEMU virtual machine.

    start(settings, client, namespace, name, host, labels)   the Workload, then the VM on its tap
    stop(settings, client, namespace, name)                  the VM, then the Workload
    move(settings, workload, target)                         QEMU's live migration to another hypervisor
    guest(settings, workload)                                its control channel, for `stockade probe`

What a hypervisor does on a real host, done here by the lab: the Workload is registered first
(marked `stockade.io/attached-by: lab-vm`, naming the tap and MAC; IPAM gives its addresses),
then QEMU boots on a tap in the hypervisor's namespace (`lab.vm`) with those addresses and the
gateway the agent puts on attached interfaces (169.254.1.1): the host's agent plumbs the tap
when it appears and enforces the workload's policy from its first packet. `stockade probe`
reaches the guest through its control channel (`guest_client`), the run directory named after
the VM's process (`processes.vm_name`).

Invariants: a VM is a lab process like the others (run/<name>.pid, role "vm", stopped by
`lab down`); its run directory is under the state directory; a start that fails removes what it
made (the VM, then the Workload).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Mapping

from stockade.client import ControllerClient
from stockade.dataplane.attach import GATEWAY_V4  # what the host's agent puts on the tap
from stockade.errors import LabError, NotFoundError
from stockade.lab import naming, processes
from stockade.lab.state import LabSettings, read_record
from stockade.lab.vm import GuestClient, VmSpec, build_image, start_vm
from stockade.lab.vm.migrate import VmMigration, live_migrate
from stockade.model.naming import ATTACHED_BY, short_hash

ATTACHED_BY_LAB = "lab-vm"


def run_dir(settings: LabSettings, namespace: str, name: str) -> Path:
    return settings.run_dir / processes.vm_name(namespace, name)


def is_lab_vm(workload: Mapping[str, Any]) -> bool:
    return ((workload.get("metadata") or {}).get("annotations") or {}).get(ATTACHED_BY) == ATTACHED_BY_LAB


def guest(settings: LabSettings, workload: Mapping[str, Any], timeout: float = 10.0) -> GuestClient:
    """The control channel of the VM of `workload` (for `stockade probe`)."""
    meta = workload["metadata"]
    return GuestClient.open(run_dir(settings, meta["namespace"], meta["name"]),
                            processes.vm_name(meta["namespace"], meta["name"]), timeout)


def start(settings: LabSettings, client: ControllerClient, namespace: str, name: str, host: str,
          labels: Mapping[str, str]) -> dict[str, Any]:
    record = read_record(settings)
    if record is None:
        raise LabError("no lab is up here: run `stockade lab up` first")
    if host not in record.host_names:
        raise LabError(f"VM {namespace}/{name}: host {host!r} is not a lab hypervisor "
                       f"({', '.join(record.host_names)})")
    process = processes.vm_name(namespace, name)
    if processes.process_status(settings, process).alive:
        raise LabError(f"VM {namespace}/{name} runs already (lab vm stop it first)")
    key = f"{namespace}/{name}"
    tap, mac = "tapvm" + short_hash(key, 10), naming.derived_mac(key)
    client.apply([{"apiVersion": "stockade.io/v1", "kind": "Workload",
                   "metadata": {"name": name, "namespace": namespace, "labels": dict(labels),
                                "annotations": {ATTACHED_BY: ATTACHED_BY_LAB}},
                   "spec": {"host": host, "interface": tap, "mac": mac}}], message=f"lab vm start {key}")
    ips = client.list("Workload", namespace, name)["items"][0].get("status", {}).get("ips") or []
    directory = run_dir(settings, namespace, name)
    try:
        image = build_image(settings.state_dir / "vm-image")
        vm = start_vm(VmSpec(process, naming.host_netns(settings.prefix, host), tap, mac, tuple(ips),
                             gateway_v4=GATEWAY_V4), image, directory)
    except BaseException:
        client.delete([("Workload", namespace, name)], message=f"lab vm start {key} failed")
        shutil.rmtree(directory, ignore_errors=True)
        raise
    vm.release_control()  # `stockade probe` opens it from its own process
    (directory / "accel").write_text(vm.accel)  # a live migration's destination must use the same
    settings.pid_file(process).write_text(f"{vm.pid}\n")
    return {"workload": key, "host": host, "interface": tap, "mac": mac, "ips": list(ips), "pid": vm.pid,
            "accel": vm.accel, "bootSeconds": round(vm.boot_seconds, 2), "process": process}


def move(settings: LabSettings, workload: Mapping[str, Any], target: str) -> VmMigration:
    """Live-migrate the running VM of `workload` to hypervisor `target` (QEMU's own migration,
    `lab.vm.migrate`); its run directory is the destination's afterwards. The Workload must
    already name `target` (`lab.migration` writes it first), so that the destination's agent
    plumbs the tap the destination QEMU makes."""
    meta, spec = workload["metadata"], workload["spec"]
    process = processes.vm_name(meta["namespace"], meta["name"])
    if not processes.process_status(settings, process).alive:
        raise LabError(f"VM {meta['namespace']}/{meta['name']} does not run (lab vm start it first)")
    directory = run_dir(settings, meta["namespace"], meta["name"])
    accel = (directory / "accel").read_text().strip() if (directory / "accel").exists() else "tcg"
    ips = tuple((workload.get("status") or {}).get("ips") or ())
    dest = VmSpec(process, naming.host_netns(settings.prefix, target), spec["interface"], spec["mac"], ips,
                  gateway_v4=GATEWAY_V4)
    incoming = directory / "next"
    moved = live_migrate(directory, dest, build_image(settings.state_dir / "vm-image"), incoming,
                         "kvm" if accel == "kvm" else "tcg")
    # The destination's files take the source's names: `stockade probe` and `lab vm stop` find
    # them where they always are (a unix socket keeps listening when its file is renamed).
    for entry in sorted(incoming.iterdir()):
        os.replace(entry, directory / entry.name)
    incoming.rmdir()
    settings.pid_file(process).write_text(f"{moved.pid}\n")
    return moved


def stop(settings: LabSettings, client: ControllerClient, namespace: str, name: str) -> bool:
    """Stop the VM and delete its Workload; True when a VM was running."""
    process = processes.vm_name(namespace, name)
    was_running = bool(processes.stop(settings, [process]))
    try:
        client.delete([("Workload", namespace, name)], message=f"lab vm stop {namespace}/{name}")
    except NotFoundError:
        pass
    shutil.rmtree(run_dir(settings, namespace, name), ignore_errors=True)
    return was_running
