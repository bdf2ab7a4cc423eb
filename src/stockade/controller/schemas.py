"""Pydantic models of the REST API's requests and responses: the OpenAPI document is built from these.

Objects inside requests and responses are plain JSON objects here on purpose:
`documents` must reach `model.kinds.parse_object` untouched, so that a bad
document is reported with its object and field like every other validation error.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    pass


# ------------------------------------------------------------------ requests

class ApplyRequest(_Request):
    documents: list[Any] = Field(description="Stockade objects (apiVersion, kind, metadata, spec), as in a YAML file")
    message: str = Field(default="", description="why: stored with the revision")
    namespace: str | None = Field(default=None, description="namespace for namespaced objects that name none")


class ObjectRef(_Request):
    kind: str = Field(description="kind as kubectl takes it: singular, plural or alias, any case")
    namespace: str | None = None
    name: str


class DeleteRequest(_Request):
    objects: list[ObjectRef] = Field(min_length=1)
    message: str = ""


class EndpointReport(BaseModel):
    """Where a workload's network stack lives on the reporting host."""

    model_config = ConfigDict(extra="ignore")  # newer agents may say more; older controllers ignore it
    netns: str | None = None
    interface: str | None = None
    mac: str | None = None


class AgentStatusRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    revision: int = Field(ge=0, description="the revision whose program the agent enforces")
    programHash: str | None = None
    appliedAt: str | None = Field(default=None, description="when the program was applied, UTC ISO 8601")
    inSync: bool = Field(default=False, description="the kernel holds exactly the computed program")
    error: str | None = None
    endpoints: dict[str, EndpointReport] = Field(default_factory=dict, description="keyed by namespace/name")


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


class ObjectResultModel(_Response):
    kind: str
    namespace: str | None
    name: str
    action: Literal["created", "configured", "unchanged", "deleted"]


class WriteResponse(_Response):
    revision: int = Field(description="the revision now current (unchanged when nothing changed)")
    results: list[ObjectResultModel]


class ListResponse(_Response):
    items: list[dict[str, Any]]
    revision: int


class SnapshotResponse(_Response):
    revision: int
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
    lastSeen: str
    reporting: bool = Field(description="a report arrived within the staleness window")


class StatusResponse(_Response):
    revision: int
    enforcedRevision: int | None = Field(description="lowest revision enforced by the reporting agents")
    agents: list[AgentStatusModel]


class RevisionModel(_Response):
    revision: int
    author: str
    message: str
    time: str


class RevisionsResponse(_Response):
    revisions: list[RevisionModel] = Field(description="newest first")
