"""Pydantic models of the topology routes' answers (`controller.topology`, `controller.reach`):
the OpenAPI document describes them from these. Responses only; the routes take no body."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class HostSync(BaseModel):
    revision: int
    inSync: bool
    error: str | None = Field(description="the agent's error; a tenant sees only that there is one")
    reporting: bool = Field(description="a report arrived within the staleness window")
    lastSeen: str
    current: bool = Field(description="reporting, in sync, no error, at the current revision or later")


class TopologyHost(BaseModel):
    name: str
    workloads: list[str] = Field(description="NAMESPACE/NAME of its workloads the caller may read")
    agent: HostSync | None = Field(description="its agent's last report; null when none ever reported")


class TopologyNamespace(BaseModel):
    name: str
    labels: dict[str, str]
    defaultAction: str


class TopologyWorkload(BaseModel):
    id: str = Field(description="NAMESPACE/NAME")
    namespace: str
    name: str
    host: str
    labels: dict[str, str]
    ips: list[str]
    ports: list[dict[str, Any]]
    endpoint: dict[str, Any] = Field(description="attachment (routed | bridged), createdBy (stockade | runtime), "
                                     "attachedBy, interface, and where its agent found it (netns, interface, mac)")


class TopologyGroup(BaseModel):
    id: str
    namespace: str
    name: str
    members: list[str] = Field(description="member workloads, as the compiler's sets hold them")
    cidrs: list[str]
    except_: list[str] = Field(alias="except")


class TopologyPolicy(BaseModel):
    id: str = Field(description="KIND:NAMESPACE/NAME, or KIND:NAME for a cluster-scoped policy")
    kind: str = Field(description="as written: Policy, GlobalPolicy, NetworkPolicy, ClusterNetworkPolicy, "
                      "AdminNetworkPolicy, BaselineAdminNetworkPolicy")
    namespace: str | None
    name: str
    tier: str
    order: int
    mode: str
    group: str | None = Field(description="the group its appliesTo names (NAMESPACE/NAME), if any")
    appliesTo: dict[Literal["ingress", "egress"], list[str]] = Field(
        description="per direction, the workloads it takes decisions for")
    rules: dict[Literal["ingress", "egress"], int]


class TopologyResponse(BaseModel):
    revision: int
    hosts: list[TopologyHost]
    namespaces: list[TopologyNamespace]
    workloads: list[TopologyWorkload]
    groups: list[TopologyGroup]
    policies: list[TopologyPolicy]


class ReachRow(BaseModel):
    protocol: str = Field(description="tcp, udp, sctp or icmp")
    port: int | None
    label: str = Field(description="what was tried, as shown: tcp/443, tcp/http (8080), tcp/8000-8100, "
                       "icmp type 8, tcp/other (65535)")
    other: bool = Field(description="\"any other port\": one no rule in play names")
    family: int | None = None
    icmpType: int | None = None
    icmpCode: int | None = None
    verdict: str = Field(description="trace's verdict: allow, deny or reject")
    rule: str | None = Field(description="the deciding rule id (another namespace's: NS/(hidden))")
    side: Literal["egress", "ingress"] = Field(description="which end's policy decided")


class ReachPeer(BaseModel):
    peer: str = Field(description="NAMESPACE/NAME, or NAMESPACE/(hidden) for all of a namespace the caller "
                      "may not read")
    namespace: str
    hidden: bool
    rows: list[ReachRow]
    omittedProbes: int = Field(description="ports in play beyond the per-peer limit, not traced")
    problems: list[str]
    summary: str = Field(description="allow (every port traced is allowed), deny (none is), partial, or none "
                         "(nothing was traced)")


class ReachLimits(BaseModel):
    maxPeers: int
    maxProbesPerPair: int


class ReachResponse(BaseModel):
    revision: int
    workload: str
    outgoing: list[ReachPeer] = Field(description="what the workload may reach")
    incoming: list[ReachPeer] = Field(description="what may reach the workload")
    limits: ReachLimits
