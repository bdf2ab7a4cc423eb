"""Pydantic models of the REST API's requests and responses: the OpenAPI document is built from these.

Objects inside requests and responses are plain JSON objects here on purpose:
`documents` must reach `model.kinds.parse_object` untouched, so that a bad
document is reported with its object and field like every other validation error.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import IPvAnyAddress, BaseModel, ConfigDict, Field, field_validator, model_validator

from stockade.model.fqdn import check_pattern
from stockade.model.verdicts import Verdict

MAX_FLOW_BATCH = 5_000
MAX_DOCUMENTS = 10_000
MAX_MESSAGE = 2_000
_WORKLOAD_REF = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    pass


# ------------------------------------------------------------------ requests

class ApplyRequest(_Request):
    documents: list[Any] = Field(max_length=MAX_DOCUMENTS,
                                 description="Stockade objects (apiVersion, kind, metadata, spec), as in a YAML "
                                 "file; an object with metadata.resourceVersion is written only if that is still "
                                 "its version (else 409)")
    message: str = Field(default="", max_length=MAX_MESSAGE, description="why: stored with the revision")
    namespace: str | None = Field(default=None, max_length=63,
                                  description="namespace for namespaced objects that name none")


class DiffRequest(_Request):
    documents: list[Any] = Field(max_length=MAX_DOCUMENTS, description="the objects an apply would send")
    namespace: str | None = Field(default=None, max_length=63)


class RollbackRequest(_Request):
    # strict: lax mode would take true, 1.0 or "1" for revision 1 and roll back to it
    revision: int = Field(ge=0, le=2**53, strict=True,
                          description="restore the objects as they were right after this revision")
    message: str = Field(default="", max_length=MAX_MESSAGE)


class TokenCreateRequest(_Request):
    role: Literal["admin", "network-admin", "tenant", "viewer", "agent"]
    namespaces: list[str] = Field(default_factory=list, max_length=100,
                                  description="a tenant's namespaces (required for tenants, refused otherwise)")
    ttl: str | None = Field(default=None, max_length=16, description="lifetime: 90s, 30m, 12h, 7d, 2w; none: no expiry")
    name: str | None = Field(default=None, min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.@]*$")
    host: str | None = Field(default=None, min_length=1, max_length=253, description="an agent token's host")


class ObjectRef(_Request):
    kind: str = Field(max_length=64, description="kind as kubectl takes it: singular, plural or alias, any case")
    namespace: str | None = Field(default=None, max_length=63)
    name: str = Field(max_length=253)


class DeleteRequest(_Request):
    objects: list[ObjectRef] = Field(min_length=1, max_length=MAX_DOCUMENTS)
    message: str = Field(default="", max_length=MAX_MESSAGE)


class EndpointReport(BaseModel):
    """Where a workload's network stack lives on the reporting host."""

    model_config = ConfigDict(extra="ignore")  # newer agents may say more; older controllers ignore it
    netns: str | None = None
    interface: str | None = None
    mac: str | None = None


class NotProgrammedReport(BaseModel):
    """A local workload the agent's program leaves out, and why (e.g. its interface is taken)."""

    model_config = ConfigDict(extra="ignore")
    object: str = Field(max_length=254, description="namespace/name of the workload")
    reason: str = Field(max_length=1000)


class HandoffReport(BaseModel):
    model_config = ConfigDict(extra="ignore")
    revision: int = Field(ge=0)
    connections: int = Field(default=0, ge=0)
    taken: bool = False


class RuleCountReport(BaseModel):
    """What one host's kernel counted for one rule in one direction."""

    model_config = ConfigDict(extra="ignore")
    packets: int = Field(default=0, ge=0)
    bytes: int = Field(default=0, ge=0)


# The agent caps its reports at agent.rule_counters.MAX_REPORTED_RULES entries; this bound is the
# controller's, above it, so that a report can never make it hold an unbounded map.
MAX_REPORTED_RULE_IDS = 10_000


class AgentStatusRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    revision: int = Field(ge=0, description="the revision whose program the agent enforces")
    programHash: str | None = None
    appliedAt: str | None = Field(default=None, description="when the program was applied, UTC ISO 8601")
    inSync: bool = Field(default=False, description="the kernel holds exactly the computed program")
    error: str | None = None
    endpoints: dict[str, EndpointReport] = Field(default_factory=dict, description="keyed by namespace/name")
    driftRepairs: int = Field(default=0, ge=0, description="hand edits of the kernel table undone so far")
    lastDriftAt: str | None = Field(default=None, description="when drift was last seen, UTC ISO 8601")
    notProgrammed: list[NotProgrammedReport] = Field(
        default_factory=list, max_length=100_000,
        description="local workloads left out of the program (the host cannot enforce their policy), and why")
    handoffs: dict[str, HandoffReport] = Field(
        default_factory=dict, max_length=1_000,
        description="workloads that moved here (namespace/name): the revision, and the open connections taken over")
    ruleCounters: dict[str, dict[Literal["egress", "ingress"], RuleCountReport]] = Field(
        default_factory=dict, max_length=MAX_REPORTED_RULE_IDS,
        description="the kernel's counters per rule id (as trace and flow records name it) and direction, "
                    "read at the agent's last heartbeat; at most the agent's cap of entries, the most-hit ones")
    ruleCountersOmitted: int = Field(default=0, ge=0, description="rule entries the agent's cap left out")


def parse_utc(value: str) -> datetime:
    """An ISO 8601 time with a zone (`Z` or an offset), as an aware UTC datetime; ValueError otherwise."""
    text = value.strip()
    when = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    if when.tzinfo is None:
        raise ValueError("must carry a time zone (UTC: end it with Z)")
    return when.astimezone(timezone.utc)


class FlowEnd(BaseModel):
    """One end of a flow: its address, port, and the workload and namespace it belongs to (null outside)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    ip: str = Field(max_length=64)
    port: int | None = Field(default=None, ge=0, le=65535)
    workload: str | None = Field(default=None, max_length=254, description="namespace/name")
    namespace: str | None = Field(default=None, max_length=63)
    names: list[str] = Field(default_factory=list, max_length=16, description="outside every workload: the "
                             "domain names its host learned this address for (fqdn rules)")

    @field_validator("names")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for name in v:
            check_pattern(name)  # an agent reports names, not patterns, but never anything malformed
            if name.startswith("*"):
                raise ValueError(f"{name!r}: a name, not a pattern")
        return v

    @field_validator("ip")
    @classmethod
    def _ip(cls, v: str) -> str:
        try:
            return str(ipaddress.ip_address(v))
        except ValueError:
            raise ValueError(f"{v!r} is not an IPv4 or IPv6 address") from None

    @field_validator("workload")
    @classmethod
    def _workload(cls, v: str | None) -> str | None:
        if v is not None and not _WORKLOAD_REF.match(v):
            raise ValueError(f"{v!r} is not namespace/name")
        return v


class FlowRecord(BaseModel):
    """A flow record as agents send it: a `start` once per new connection (or logged packet), and for an
    allowed connection an `end` when conntrack forgets it, with its counts."""

    model_config = ConfigDict(extra="forbid", strict=True)
    time: str = Field(description="UTC ISO 8601; normalised to +00:00")
    host: str = Field(min_length=1, max_length=253, description="the enforcing host (the sender)")
    direction: Literal["egress", "ingress"]
    verdict: Verdict
    rule: str = Field(min_length=1, max_length=512, description="ns/policy/rule-id (policy/rule-id if global)")
    protocol: str = Field(min_length=1, max_length=16)
    family: Literal[4, 6]
    src: FlowEnd
    dst: FlowEnd
    icmpType: int | None = Field(default=None, ge=0, le=255)
    event: Literal["start", "end"] = Field(default="start", description="the connection began, or ended")
    packets: int | None = Field(default=None, ge=0, description="end: both directions")
    bytes: int | None = Field(default=None, ge=0, description="end: both directions")
    replyPackets: int | None = Field(default=None, ge=0, description="end: the reply direction alone")
    replyBytes: int | None = Field(default=None, ge=0, description="end: the reply direction alone")

    @field_validator("time")
    @classmethod
    def _time(cls, v: str) -> str:
        try:
            return parse_utc(v).isoformat(timespec="microseconds")
        except ValueError as e:
            raise ValueError(f"{v!r} is not an ISO 8601 time with a zone: {e}") from None

    @model_validator(mode="after")
    def _family_matches(self) -> "FlowRecord":
        for end, name in ((self.src, "src"), (self.dst, "dst")):
            if ipaddress.ip_address(end.ip).version != self.family:
                raise ValueError(f"{name}.ip {end.ip} is not an IPv{self.family} address (family {self.family})")
        return self


class FlowBatchRequest(_Request):
    records: list[FlowRecord] = Field(max_length=MAX_FLOW_BATCH,
                                      description=f"at most {MAX_FLOW_BATCH} records per request")
    dropped: int = Field(default=0, ge=0, strict=True,
                         description="records the agent dropped or sampled away since its previous batch")


class ConnectionEntry(_Request):
    """One conntrack entry of a moving workload (dataplane.conntrack_transfer.ConnectionState)."""

    family: Literal["ipv4", "ipv6"]
    protocol: Literal["tcp", "udp"]
    src: IPvAnyAddress
    dst: IPvAnyAddress
    sport: int | None = Field(ge=0, le=65535)
    dport: int | None = Field(ge=0, le=65535)
    reply_src: IPvAnyAddress
    reply_dst: IPvAnyAddress
    reply_sport: int | None = Field(ge=0, le=65535)
    reply_dport: int | None = Field(ge=0, le=65535)
    state: str | None = Field(default=None, pattern=r"^[A-Z_]{1,16}$")
    timeout: int = Field(ge=0, le=2**31)
    assured: bool
    replied: bool
    mark: int = Field(default=0, ge=0, le=2**32 - 1)


class HandoffRequest(_Request):
    revision: int = Field(ge=1, description="the revision that moved the workload, as the source host saw it")
    entries: list[ConnectionEntry] = Field(max_length=65_536)


# ----------------------------------------------------------------- responses

class Problem(_Response):
    object: str
    field: str
    problem: str


class ErrorBody(_Response):
    error: str = Field(description="stable code: invalid, not_found, conflict, unauthorized, forbidden, gone, ...")
    message: str
    problems: list[Problem] | None = None


class HealthResponse(_Response):
    ok: bool
    revision: int
    clusterId: str


class ObjectResultModel(_Response):
    kind: str
    namespace: str | None
    name: str
    action: Literal["created", "configured", "unchanged", "deleted"]
    warnings: list[str] | None = Field(
        default=None, description="what the object was taken to mean where that differs from its text "
                                  "(e.g. a Kubernetes ipBlock CIDR with host bits set); absent when none")


class WriteResponse(_Response):
    revision: int = Field(description="the revision now current (unchanged when nothing changed)")
    results: list[ObjectResultModel]


class ListResponse(_Response):
    items: list[dict[str, Any]]
    revision: int


class SnapshotResponse(_Response):
    revision: int
    clusterId: str = Field(description="the store's identity, made when its database was created")
    lineage: list[str] | None = Field(default=None, description="the identities the store was restored from "
                                      "(`stockade restore`), oldest first; absent when none")
    view: str | None = Field(default=None, description="an agent's: the name of its host's view, sent back "
                             "with each watch")
    objects: list[dict[str, Any]]


class EventModel(_Response):
    revision: int
    type: Literal["PUT", "DELETE"]
    kind: str
    namespace: str | None
    name: str
    object: dict[str, Any] | None = Field(description="the stored object after a PUT; null for DELETE")


class WatchResponse(_Response):
    revision: int = Field(description="resume the next watch from here")
    clusterId: str = Field(description="the store's identity: an agent relists if it changed")
    view: str | None = Field(default=None, description="an agent's: the name of its host's view")
    events: list[EventModel]


class OkResponse(_Response):
    ok: bool


class AgentStatusModel(_Response):
    host: str
    revision: int
    programHash: str | None
    appliedAt: str | None
    inSync: bool
    error: str | None
    driftRepairs: int = 0
    lastDriftAt: str | None = None
    notProgrammed: list[NotProgrammedReport] = Field(
        default_factory=list, description="local workloads the host's program leaves out, and why")
    handoffs: dict[str, HandoffReport] = Field(
        default_factory=dict, description="workloads that moved to this host, and the connections taken over")
    lastSeen: str
    reporting: bool = Field(description="a report arrived within the staleness window")


class StatusResponse(_Response):
    revision: int
    enforcedRevision: int | None = Field(description="lowest revision enforced by the reporting agents")
    agents: list[AgentStatusModel]


class FlowIngestResponse(_Response):
    accepted: int
    lastSeq: int


class FlowDropCounts(_Response):
    agent: int = Field(description="records the agent reported dropped or sampled away")
    evicted: int = Field(description="records the controller evicted from its bounded history")


class FlowsResponse(_Response):
    records: list[dict[str, Any]] = Field(description="flow records, oldest first, each with its `seq`")
    lastSeq: int = Field(description="follow from here (since_seq)")
    firstSeq: int = Field(description="oldest record still held; since_seq < firstSeq - 1 means some were evicted")
    more: bool = Field(description="the limit cut the answer: ask again from lastSeq")
    dropped: dict[str, FlowDropCounts] = Field(description="per host, since the controller started")
    received: dict[str, int] = Field(description="records received per host, since the controller started")


class RevisionModel(_Response):
    revision: int
    author: str
    message: str
    time: str


class ChangedObject(_Response):
    type: Literal["PUT", "DELETE"]
    kind: str
    namespace: str | None
    name: str


class HistoryEntry(RevisionModel):
    objects: list[ChangedObject] = Field(description="what this revision put or deleted, in commit order")


class RevisionsResponse(_Response):
    revisions: list[HistoryEntry] = Field(description="newest first")


class TokenInfo(_Response):
    id: str = Field(description="first 12 hex digits of the token's SHA-256: names it, cannot be used as it")
    name: str
    role: str
    host: str | None = None
    namespaces: list[str] = Field(default_factory=list)
    source: str = Field(description="file (bootstrap tokens file) or api (token create)")
    created: str | None = None
    createdBy: str | None = None
    expires: str | None = None
    expired: bool = False
    revoked: str | None = None


class TokenCreated(_Response):
    token: str = Field(description="the secret: shown once, never stored")
    info: TokenInfo


class TokensResponse(_Response):
    tokens: list[TokenInfo]


class AuditResponse(_Response):
    entries: list[dict[str, Any]] = Field(description="oldest first: time, actor, action, outcome, status, "
                                          "revision or reason, objects")


class DiffResponse(_Response):
    revision: int = Field(description="the stored revision the diff was computed against")
    objects: list[dict[str, Any]] = Field(description="per object: kind, namespace, name, action and field changes")
    flows: list[dict[str, Any]] = Field(description="recently observed flows whose verdict would change")


class HostRuleCount(_Response):
    host: str
    packets: int
    bytes: int


class RuleHitsModel(_Response):
    id: str = Field(description="the rule id as trace, flow records and the kernel name it: ns/policy/rule "
                                "(policy/rule for a cluster-wide policy, ns/default-deny/DIRECTION for a namespace's default)")
    direction: Literal["ingress", "egress"]
    action: str
    peers: str = Field(description="the rule's from (ingress) or to (egress) as text; 'any' when it has none")
    ports: str = Field(description="the rule's ports as text; 'any' when it has none")
    description: str | None
    packets: int = Field(description="packets the hosts' kernels counted for it, summed over their latest reports")
    bytes: int
    hosts: list[HostRuleCount] = Field(description="the same per host that counted it")
    flows: int = Field(description="flow records in the controller's history that name it (start records)")
    wouldDeny: int | None = Field(description="an audit-mode rule: packets it would have denied or rejected "
                                              "(0 for an audit allow, pass or log); null when enforcing")
    unused: bool = Field(description="no host counted a packet for it and no flow record names it")


class PolicyHitsModel(_Response):
    kind: str = Field(description="Policy, GlobalPolicy, NetworkPolicy, or an upstream cluster policy's kind")
    namespace: str | None
    name: str
    tier: str
    order: int
    mode: Literal["enforce", "audit"]
    appliesTo: str
    rules: list[RuleHitsModel]


class TierHitsModel(_Response):
    name: str
    policies: list[PolicyHitsModel] = Field(description="in evaluation order: order, then name")


class NamespaceDefaultsModel(_Response):
    namespace: str
    defaultAction: str
    rules: list[RuleHitsModel]


class RulesResponse(_Response):
    revision: int
    tiers: list[TierHitsModel] = Field(description="every tier in evaluation order, with the policies the caller may read")
    defaults: list[NamespaceDefaultsModel] = Field(description="the namespaces' default rules, after the last tier")
    hosts: list[str] = Field(description="the hosts whose latest reports were summed")
    omitted: dict[str, int] = Field(description="per host, rule entries its agent's cap left out of its report "
                                                "(the least-hit ones); empty for a tenant")
    rules: list[RuleHitsModel] | None = Field(default=None, description="with ?rule=ID only: the matching rules, flat")
