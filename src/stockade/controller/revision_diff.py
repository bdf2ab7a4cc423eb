"""What changed between two stored revisions, object by object and field by field.

The dashboard's Changes page (GET /api/v1/revisions/diff?from=A&to=B). `stockade diff -f FILE`
compares a proposed file with the store; this compares two points of the store's own history,
with the same field-level differences (`diffing.diff_documents`).

Scoping: a tenant sees only objects it may read (`rbac.may_read`), as in `history`.
Invariants: reads the store only; the range is checked before anything is read.
"""

from __future__ import annotations

from typing import Any, Mapping

from stockade.controller import rbac
from stockade.controller.auth import Principal
from stockade.controller.diffing import diff_documents
from stockade.controller.service import ControllerService, object_key
from stockade.errors import NotFoundError, ValidationError
from stockade.model.kinds import ObjectKey


def _by_key(documents: list[dict[str, Any]], principal: Principal) -> dict[ObjectKey, Mapping[str, Any]]:
    out: dict[ObjectKey, Mapping[str, Any]] = {}
    for doc in documents:
        meta = doc.get("metadata") or {}
        key = object_key(doc.get("kind", ""), meta.get("namespace"), meta.get("name", ""))
        if rbac.may_read(principal, key):
            out[key] = doc
    return out


def revision_diff(service: ControllerService, principal: Principal, older: int, newer: int) -> dict[str, Any]:
    if older < 0:
        raise ValidationError.single("diff", "from", f"{older}: a revision is 0 or more")
    if newer <= older:
        raise ValidationError.single("diff", "to", f"{newer}: must be after from ({older})")
    current = service.revision()
    if newer > current:
        raise NotFoundError(f"revision {newer} not found (the store is at revision {current})")
    before = _by_key(service.store.objects_at(older), principal)
    after = _by_key(service.store.objects_at(newer), principal)
    items = []
    for key in sorted(set(before) | set(after), key=lambda k: (k.kind, k.namespace or "", k.name)):
        old, new = before.get(key), after.get(key)
        action = "created" if old is None else "deleted" if new is None else "configured"
        strip = (lambda d: {k: v for k, v in d.items() if k != "status"})
        if old is not None and new is not None and strip(old) == strip(new):
            continue
        items.append((key, action, old, new))
    return {"from": older, "to": newer, "objects": [d.to_dict() for d in diff_documents(items)]}
