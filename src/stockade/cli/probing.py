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
    for w, which in ((s, "--from"), (d, "--to")):
        if not (w.get("status") or {}).get("netns"):
            raise ValidationError.single(f"Workload {w['metadata']['namespace']}/{w['metadata']['name']}", which,
                                         "has no lab network namespace (is it on a lab host, and is its agent running?)")
    prefix = LabSettings.from_env().prefix
    for w in (s, d):
        meta = w["metadata"]
        check_workload_netns(w["status"]["netns"], prefix, w["spec"]["host"], meta["namespace"], meta["name"])
    dst_ips = [ip for ip in (d.get("status") or {}).get("ips", []) if ipaddress.ip_address(ip).version == family]
    if not dst_ips:
        raise ValidationError.single(f"Workload {dst}", "status.ips", f"has no IPv{family} address")
    result = probe(s["status"]["netns"], d["status"]["netns"], dst_ips[0], protocol, port, timeout=timeout)
    return {
        "from": f"{s['metadata']['namespace']}/{s['metadata']['name']}",
        "to": f"{d['metadata']['namespace']}/{d['metadata']['name']}",
        "protocol": protocol, "port": port if protocol != "icmp" else None, "family": family,
        "dst_ip": dst_ips[0], "verdict": result.verdict, "detail": result.detail,
        "elapsed_ms": round(result.elapsed * 1000, 1),
    }
