"""Trace as a use case of the controller: the verdict the stored policy gives a flow, and why.

`stockade trace` computes the same answer on the caller's side from a snapshot; the dashboard's
Why page asks the controller instead (GET /api/v1/trace), because a browser has no compiler and
a tenant may not read the snapshot. Both run `compile.trace.trace_flow` on the same desired
state, so they cannot disagree.

Scoping (a tenant): both ends it names must be workloads of its namespaces (a domain name is
fine as a destination), asked before looking: a trace to `bank/vault` would answer 200 and one
to `bank/nothing` 404, so tracing into another namespace would tell its workload names apart
(rbac: a tenant never tells another tenant's names apart). What reaches it from other namespaces,
and what it may reach there, a tenant sees per namespace in Topology's reach and in its flow
records, with the other end shown as `ns/(hidden)`. (An answer naming both ends in full would
leak more than names: the other end's address would name the `ns/(hidden)` ends of flow records
again, and its kernel chains, `pol_<policy>_<hash>_in`, its policy names.) In the answer, rule
ids of other namespaces read `ns/(hidden)` (`visibility.rule_ref`), as everywhere.

Invariants: pure over the desired state (no kernel, no network); bad input is a ValidationError
naming the field.
"""

from __future__ import annotations

from typing import Any, Literal, cast

from stockade.compile.trace import Flow, check_request, trace_flow
from stockade.controller import rbac, visibility
from stockade.controller.auth import Principal
from stockade.controller.service import ControllerService
from stockade.errors import Forbidden, ValidationError

def _workload_key(field: str, ref: str) -> tuple[str, str]:
    namespace, sep, name = ref.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ValidationError.single("trace", field, f"{ref!r}: name a workload as NAMESPACE/NAME")
    return namespace, name


def parse_flow(src: str, dst: str | None, protocol: str, port: int | None, family: int,
               to_fqdn: str | None = None, to_ip: str | None = None) -> Flow:
    """The flow a trace request names; ValidationError naming the field otherwise."""
    check_request(protocol, family, dst is not None, to_fqdn,
                  field=lambda name: {"to-fqdn": "toFqdn"}.get(name, name))
    if port is not None and not 0 <= port <= 65535:
        raise ValidationError.single("trace", "port", f"{port} is not a port (0-65535)")
    source = _workload_key("from", src)
    destination = _workload_key("to", dst) if dst is not None else source
    return Flow(source, destination, cast(Literal["tcp", "udp", "sctp", "icmp"], protocol), port or None,
                cast(Literal[4, 6], family), dst_fqdn=to_fqdn, dst_ip=to_ip)


def trace(service: ControllerService, principal: Principal, flow: Flow) -> dict[str, Any]:
    """The trace of `flow` as `principal` may see it (see the module docstring)."""
    ends = [flow.src] if flow.dst_fqdn is not None else [flow.src, flow.dst]
    if rbac.is_scoped(principal) and not all(ns in principal.namespaces for ns, _ in ends):
        raise Forbidden(f"{principal.name!r} (role tenant) traces between workloads of its namespaces "
                        f"({', '.join(sorted(principal.namespaces))}); other namespaces show, unnamed, in "
                        "the Topology page's reach and in flow records")
    result = trace_flow(service.desired_state(), flow)
    out = result.to_dict()
    out["decidingRule"] = result.deciding_rule
    out["from"] = "/".join(flow.src)
    out["to"] = flow.dst_fqdn if flow.dst_fqdn is not None else "/".join(flow.dst)
    out["protocol"], out["port"], out["family"] = flow.protocol, flow.port, flow.family
    if rbac.is_scoped(principal):
        visible = rbac.visible_namespaces(principal)
        out["decidingRule"] = visibility.rule_ref(out["decidingRule"], visible)
        for side in ("egress", "ingress"):
            if out.get(side):
                out[side]["rules"] = [{**r, "rule": visibility.rule_ref(r.get("rule"), visible)}
                                      for r in out[side]["rules"]]
    return out
