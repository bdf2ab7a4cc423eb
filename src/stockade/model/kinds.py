"""The kinds Stockade knows, their names as kubectl takes them, and parsing raw documents.

`parse_object` is the one door from untrusted dicts to typed objects: every
pydantic error comes out as a `ValidationError` naming the object and field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import pydantic

from stockade.errors import FieldProblem, ValidationError
from stockade.model.admin_policy import AdminNetworkPolicy, BaselineAdminNetworkPolicy
from stockade.model.cluster_policy import ClusterNetworkPolicy
from stockade.model.k8s import NetworkPolicy
from stockade.model.objects import (
    GlobalPolicy,
    Group,
    Namespace,
    Policy,
    Tier,
    Workload,
)
from stockade.model.objects import StockadeObject as NativeObject

StockadeObject = NativeObject | NetworkPolicy | ClusterNetworkPolicy | AdminNetworkPolicy | BaselineAdminNetworkPolicy


@dataclass(frozen=True)
class Kind:
    name: str
    plural: str
    namespaced: bool
    model: type[StockadeObject]
    api_version: str
    aliases: tuple[str, ...] = ()


KINDS: tuple[Kind, ...] = (
    Kind("Tier", "tiers", False, Tier, "stockade.io/v1"),
    Kind("Namespace", "namespaces", False, Namespace, "stockade.io/v1", ("ns",)),
    Kind("Workload", "workloads", True, Workload, "stockade.io/v1", ("wl",)),
    Kind("Group", "groups", True, Group, "stockade.io/v1", ("grp",)),
    Kind("Policy", "policies", True, Policy, "stockade.io/v1", ("pol",)),
    Kind("GlobalPolicy", "globalpolicies", False, GlobalPolicy, "stockade.io/v1", ("gp", "gpol")),
    Kind("NetworkPolicy", "networkpolicies", True, NetworkPolicy, "networking.k8s.io/v1", ("netpol",)),
    Kind("ClusterNetworkPolicy", "clusternetworkpolicies", False, ClusterNetworkPolicy,
         "policy.networking.k8s.io/v1alpha2", ("cnp",)),
    Kind("AdminNetworkPolicy", "adminnetworkpolicies", False, AdminNetworkPolicy,
         "policy.networking.k8s.io/v1alpha1", ("anp",)),
    Kind("BaselineAdminNetworkPolicy", "baselineadminnetworkpolicies", False, BaselineAdminNetworkPolicy,
         "policy.networking.k8s.io/v1alpha1", ("banp",)),
)
KIND_BY_NAME: dict[str, Kind] = {k.name: k for k in KINDS}
# Apply order: what others refer to comes first; deletes run the other way.
KIND_ORDER: dict[str, int] = {k.name: i for i, k in enumerate(KINDS)}


def resolve_kind(text: str) -> Kind:
    """`workload`, `Workloads`, `wl`, `workload.stockade.io` → the Workload kind."""
    wanted = text.strip().lower().split(".", 1)[0]  # `networkpolicies.networking.k8s.io` too
    for kind in KINDS:
        if wanted in (kind.name.lower(), kind.plural, *kind.aliases):
            return kind
    names = ", ".join(k.name.lower() for k in KINDS)
    raise ValidationError.single("", "kind", f"unknown kind {text!r}; known kinds: {names}")


@dataclass(frozen=True, order=True)
class ObjectKey:
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace + '/' if self.namespace else ''}{self.name}"


def key_of(obj: StockadeObject) -> ObjectKey:
    return ObjectKey(obj.kind, obj.metadata.namespace or "", obj.metadata.name)


def _describe_raw(raw: Mapping[str, Any], index: int | None) -> str:
    kind = raw.get("kind", "?") if isinstance(raw, Mapping) else "?"
    meta = raw.get("metadata") if isinstance(raw, Mapping) else None
    name = meta.get("name", "?") if isinstance(meta, Mapping) else "?"
    ns = meta.get("namespace") if isinstance(meta, Mapping) else None
    where = f" (document {index + 1})" if index is not None else ""
    return f"{kind} {ns + '/' if ns else ''}{name}{where}"


def _loc_to_field(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part in KIND_BY_NAME:
            continue  # the discriminated-union tag pydantic puts in front
        else:
            out += ("." if out else "") + str(part)
    return out


def parse_object(raw: Any, index: int | None = None, default_namespace: str | None = None) -> StockadeObject:
    """Validate one document into its typed object, or raise a ValidationError naming it."""
    if not isinstance(raw, Mapping):
        raise ValidationError.single(f"document {index + 1}" if index is not None else "document", "",
                                     "must be a mapping with apiVersion, kind, metadata and spec")
    ref = _describe_raw(raw, index)
    kind_name = raw.get("kind")
    kind = KIND_BY_NAME.get(kind_name) if isinstance(kind_name, str) else None
    if kind is None:
        raise ValidationError.single(ref, "kind", f"unknown kind {kind_name!r}; expected one of "
                                     + ", ".join(KIND_BY_NAME))
    api_version = raw.get("apiVersion")
    if api_version != kind.api_version:
        raise ValidationError.single(ref, "apiVersion", f"{api_version!r} is not supported for {kind.name}; "
                                     f"use {kind.api_version}")
    data = dict(raw)
    meta = data.get("metadata")
    if kind.namespaced and isinstance(meta, Mapping) and not meta.get("namespace"):
        if not default_namespace:
            raise ValidationError.single(ref, "metadata.namespace", f"is required for a {kind.name}")
        data["metadata"] = {**meta, "namespace": default_namespace}
    if not kind.namespaced and isinstance(meta, Mapping) and meta.get("namespace"):
        # Checked here, not only in the model, so that the problem names its field.
        raise ValidationError.single(ref, "metadata.namespace", f"a {kind.name} is not namespaced")
    # Status is written by Stockade, never taken from input (kubectl does the same).
    data.pop("status", None)
    try:
        return kind.model.model_validate(data)
    except pydantic.ValidationError as e:
        problems = []
        for err in e.errors():
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            if err["type"] == "extra_forbidden":
                msg = "unknown field"
            problems.append(FieldProblem(ref, _loc_to_field(tuple(err["loc"])), msg))
        raise ValidationError(problems) from None


def to_document(obj: StockadeObject) -> dict[str, Any]:
    """The object as users write it: aliases (`from`, `except`), no empty defaults noise."""
    doc = obj.model_dump(by_alias=True, exclude_none=True, mode="json")
    # Empty labels/annotations are noise, and dropping them serves objects back as they were applied.
    for key in ("labels", "annotations"):
        if not doc["metadata"].get(key):
            doc["metadata"].pop(key, None)
    # The store's version stamp, not desired state: served on reads, checked on writes, never stored.
    doc["metadata"].pop("resourceVersion", None)
    return doc


def parse_stored(document: Mapping[str, Any]) -> StockadeObject:
    """Rebuild an object that Stockade itself stored or served, keeping its `status`.

    Only for documents that already passed `parse_object` (store rows, the
    controller's snapshot as seen by an agent); user input goes through `parse_object`.
    """
    kind = KIND_BY_NAME.get(str(document.get("kind")))
    if kind is None:
        raise ValidationError.single(_describe_raw(document, None), "kind", "unknown kind in stored document")
    return kind.model.model_validate(document)


def parse_documents(documents: list[Any], default_namespace: str | None = None) -> list[StockadeObject]:
    """A batch of documents as typed objects, all or nothing: every problem of every document
    is reported at once, and an object given twice is refused (keeping one would be a guess)."""
    objects: list[StockadeObject] = []
    problems: list[FieldProblem] = []
    first_seen: dict[ObjectKey, int] = {}
    for i, raw in enumerate(documents):
        try:
            obj = parse_object(raw, i, default_namespace)
        except ValidationError as e:
            problems += e.problems
            continue
        key = key_of(obj)
        if key in first_seen:
            problems.append(FieldProblem(f"{key} (document {i + 1})", "metadata.name",
                                         f"appears twice in this request (also document {first_seen[key] + 1})"))
            continue
        first_seen[key] = i
        objects.append(obj)
    if problems:
        raise ValidationError(problems)
    return objects
