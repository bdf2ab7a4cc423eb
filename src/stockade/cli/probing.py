"""`stockade probe`: find two lab workloads through the API, then send real packets between them."""

from __future__ import annotations

import ipaddress
from typing import Any

from stockade.errors import NotFoundError, ValidationError


def resolve_workload(client: Any, ref: str, namespace: str | None) -> dict[str, Any]:
    """`ns/name`, or `name` (with -n, or unique across namespaces)."""
    ns, _, name = ref.rpartition("/")
    ns = ns or namespace
    items = client.list("Workload", namespace=ns, name=name if ns else None)["items"]
    found = [i for i in items if i["metadata"]["name"] == name]
    if not found:
        raise NotFoundError(f"Workload {ref}: not found")
    if len(found) > 1:
        spaces = ", ".join(i["metadata"]["namespace"] for i in found)
        raise ValidationError.single(f"Workload {name}", "--namespace",
                                     f"the name is used in several namespaces ({spaces}); write NAMESPACE/NAME")
    return found[0]


def run_probe(client: Any, src: str, dst: str, port: int, protocol: str, family: int,
              namespace: str | None, timeout: float) -> dict[str, Any]:
    from stockade.lab.probe import check_workload_netns, probe
    from stockade.lab.state import LabSettings

    protocol = protocol.lower()
    if protocol not in ("tcp", "udp", "icmp"):
        raise ValidationError.single("probe", "--protocol", f"{protocol!r} is not one of tcp, udp, icmp")
    if protocol != "icmp" and not 1 <= port <= 65535:
        raise ValidationError.single("probe", "--port", f"{port} is out of range 1-65535")
    if family not in (4, 6):
        raise ValidationError.single("probe", "--family", "must be 4 or 6")
    s, d = resolve_workload(client, src, namespace), resolve_workload(client, dst, namespace)
    from stockade.lab import vms
    for w, which in ((s, "--from"), (d, "--to")):
        if vms.is_lab_vm(w):
            continue  # reached through its control channel (lab.vms.guest), not a namespace
        if not (w.get("status") or {}).get("netns"):
            raise ValidationError.single(f"Workload {w['metadata']['namespace']}/{w['metadata']['name']}", which,
                                         "has no lab network namespace (is it on a lab host, and is its agent running?)")
    settings = LabSettings.from_env()
    for w in (s, d):
        meta = w["metadata"]
        if not vms.is_lab_vm(w):
            check_workload_netns(w["status"]["netns"], settings.prefix, w["spec"]["host"], meta["namespace"],
                                 meta["name"])
    dst_ips = [ip for ip in (d.get("status") or {}).get("ips", []) if ipaddress.ip_address(ip).version == family]
    if not dst_ips:
        raise ValidationError.single(f"Workload {dst}", "status.ips", f"has no IPv{family} address")
    if vms.is_lab_vm(s) or vms.is_lab_vm(d):
        result = _probe_with_vms(settings, s, d, dst_ips[0], protocol, port, timeout)
    else:
        result = probe(s["status"]["netns"], d["status"]["netns"], dst_ips[0], protocol, port, timeout=timeout)
    return {
        "from": f"{s['metadata']['namespace']}/{s['metadata']['name']}",
        "to": f"{d['metadata']['namespace']}/{d['metadata']['name']}",
        "protocol": protocol, "port": port if protocol != "icmp" else None, "family": family,
        "dst_ip": dst_ips[0], "verdict": result.verdict, "detail": result.detail,
        "elapsed_ms": round(result.elapsed * 1000, 1),
    }


def _probe_with_vms(settings: Any, s: dict[str, Any], d: dict[str, Any], dst_ip: str, protocol: str, port: int,
                    timeout: float) -> Any:
    """The same probe when either end is a lab VM: the VM's side runs in its guest, through its
    control channel; the verdicts are the namespace probe's (lab.vm.guest_client)."""
    from contextlib import ExitStack

    from stockade.lab import vms
    from stockade.lab.probe import probe, serve

    with ExitStack() as stack:
        server_needed = protocol != "icmp"
        if vms.is_lab_vm(d):
            guest = stack.enter_context(vms.guest(settings, d))
            if server_needed:
                stack.enter_context(guest.serving(protocol, port))
        elif server_needed:
            stack.enter_context(serve(d["status"]["netns"], protocol, port))
        if vms.is_lab_vm(s):
            source = stack.enter_context(vms.guest(settings, s))
            return source.connect(dst_ip, protocol, port if server_needed else None, timeout=timeout)
        return probe(s["status"]["netns"], None, dst_ip, protocol, port if server_needed else None, timeout=timeout,
                     reuse_server=True)
