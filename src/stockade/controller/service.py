"""The controller's use cases: apply, delete, list, snapshot, watch, agent reports. No HTTP here.

Invariants:
- All or nothing: a request with any problem stores nothing; a request that
  changes something makes exactly one revision; one that changes nothing makes none.
- Every stored object passed `parse_object` and `validate_state` against the
  state it was stored in; IPAM addresses live in `status.ips` (see `ipam`).
- Writes are serialized by one lock, so the state a write validates against is
  the state it commits on top of; each commit names that revision (`base`), so a write
  that another controller replica overtook (etcd store) is never stored on a state it did
  not check: it is planned again on the new state (`_replanned`), or 409 after a few tries.
  The cached state is only a cache: it is re-read whenever the store's revision moved.
- The service is given its storage (`controller.store`): the state store, the agent
  report repository and the audit log, built by `build_app`; it owns them from then on
  (`close`). It knows no backend.
- Watch answers come from above the store: the event tail of the revisions committed
  here (`controller.event_tail`) and the notifier that wakes long-polls (`controller.notify`).
- Runtime facts from agents (netns, interface, MAC) are merged into Workload
  `status` when read (`list_objects`, `snapshot`); they are not desired state,
  make no revision and are not in watch events.

- Flow records live in a bounded in-memory `FlowLog` mirrored to a JSON-lines file and read
  back from it on start (see `controller.flows` for why), never in the store; they make no
  revision.
- Authorization of writes is object by object (`rbac.check_write`) on the old and
  the new document, inside the write lock, so what is checked is what is replaced.
- Optimistic concurrency: an object sent with `metadata.resourceVersion` is written
  only if that is still the revision that last changed it; else 409 and nothing changes.
  Checked before planning (a clear answer first) and again by the store's commit (CAS).
- Rollback and diff go through the same parse/validate/authorize path as apply.
- Reads are scoped here, not in the routes: with a `principal`, every answer holds only what
  that caller may read (`rbac.may_read`), and answers that mix its namespaces with others'
  (flows, status, diff, validation problems) are cut down by `controller.visibility`. What a
  caller may not read gets the same answer whether it exists or not (403), and is looked at
  only after the caller's right to it was checked.
- The rollout latency of a (host, revision) is measured once: from the
  revision's commit time to the first report of that host enforcing it in sync.
- A write given a `WriteAudit` stores its revision and that revision's audit entry in one
  transaction (`AuditLog.commit_revision`): both exist, or neither.

Sync methods block on SQLite; call them off the event loop. `watch` and `flows` are async.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from datetime import datetime
from typing import Any, Callable, Iterable, Sequence

from stockade.clock import Clock, utc_now
from stockade.controller import rbac, visibility
from stockade.controller.rbac import Permission
from stockade.controller.audit import AuditLog, WriteAudit
from stockade.controller.auth import Principal
from stockade.controller.config import ControllerConfig
from stockade.controller.event_tail import EventTail
from stockade.controller.diffing import ObjectDiff, VerdictChange, diff_documents, verdict_changes
from stockade.controller.flow_sinks import open_flow_log
from stockade.controller.flows import FlowPage, FlowQuery
from stockade.controller import quotas
from stockade.model.ipam import Pools, assign_addresses
from stockade.model.apply_warnings import apply_warnings
from stockade.model.placement import record_moves
from stockade.controller.notify import RevisionNotifier
from stockade.controller.records import (
    Action,
    AgentStatus,
    ControllerStatus,
    ObjectResult,
    WriteResult,
)
from stockade.controller.store import AgentReportRepository, Change, Event, Revision, StateStore
from stockade.controller.store.types import StaleBase, stale_versions
from stockade.errors import (
    ConflictError,
    FieldProblem,
    Forbidden,
    NotFoundError,
    PayloadTooLarge,
    ValidationError,
)
from stockade.model.kinds import (
    KIND_ORDER,
    ObjectKey,
    key_of,
    parse_documents,
    parse_stored,
    resolve_kind,
    to_document,
)
from stockade.model.kinds import StockadeObject
from stockade.model.reports import AgentReport, FlowRecord
from stockade.model.state import DesiredState
from stockade.model.validation import referrers_of_group, referrers_of_tier, validate_state


MAX_OBJECTS_PER_WRITE = 10_000
# Plans of one write that another controller replica may overtake before it answers 409.
REPLANS = 5





def object_key(kind: str, namespace: str | None, name: str) -> ObjectKey:
    """The key of an object named as a user would (`workloads`, `shop`, `web-1`).

    Cluster-scoped kinds ignore the namespace; namespaced ones require it.
    """
    k = resolve_kind(kind)
    if not k.namespaced:
        return ObjectKey(k.name, "", name)
    if not namespace:
        raise ValidationError.single(f"{k.name} {name}", "namespace", f"is required for a {k.name}")
    return ObjectKey(k.name, namespace, name)


class ControllerService:
    def __init__(self, config: ControllerConfig, store: StateStore, reports: AgentReportRepository,
                 audit: AuditLog, clock: Clock = utc_now) -> None:
        self.config = config
        self.store = store
        self.reports = reports
        self.audit = audit
        self._tail = EventTail()
        self.pools = Pools(config.ipv4_pool, config.ipv6_pool)
        # The pools' network and broadcast addresses are no workload's: validation knows them.
        self.validation = replace(config.validation, pools=(config.ipv4_pool, config.ipv6_pool))
        self._quotas = config.quotas
        self._clock = clock
        self._write_lock = threading.Lock()
        self._state: DesiredState | None = None
        self._notifier = RevisionNotifier(self.store.revision())
        self.flow_log = open_flow_log(config, self.store.cluster_id, clock)
        self._flow_notifier = RevisionNotifier(self.flow_log.last_seq)  # "revision": the flow log's last seq
        # Long-polls waiting right now, by kind: agents waiting for the next revision (watch) and
        # followers of the flow log (flows). Only the event loop changes them.
        self._long_polls = {"watch": 0, "flows": 0}
        # Newest revision whose rollout was measured, per host. Seeded from the stored reports so a
        # restart does not measure an old revision again (with its age as the "latency").
        self._rollout_seen: dict[str, int] = {
            a.host: int(a.report.get("revision", 0)) for a in self.reports.all()
            if a.report.get("inSync") and not a.report.get("error")}
        self._rollout_lock = threading.Lock()

    def release_watchers(self) -> None:
        """Make pending and future long-polls return now (server shutdown)."""
        self._notifier.release()
        self._flow_notifier.release()

    def close(self) -> None:
        self._notifier.release()
        self._flow_notifier.release()
        self.audit.close()  # stores the entries still queued
        self.flow_log.close()  # the OTLP exporter sends what it holds
        self.reports.close()  # saves the reports not yet written
        self.store.close()

    # ------------------------------------------------------------------ state

    def revision(self) -> int:
        return self.store.revision()

    @property
    def cluster_id(self) -> str:
        """The store's identity (made when its database was created); agents check it."""
        return self.store.cluster_id

    @property
    def lineage(self) -> tuple[str, ...]:
        """The identities the store was restored from (`stockade restore`), oldest first."""
        return self.store.lineage

    def _current_state(self) -> DesiredState:
        """The stored state, cached between writes (only this service writes the file)."""
        rev = self.store.revision()
        if self._state is None or self._state.revision != rev:
            rev, docs = self.store.objects()
            self._state = DesiredState.from_objects(rev, (parse_stored(d) for d in docs))
        return self._state

    def desired_state(self) -> DesiredState:
        """The stored desired state as typed objects (with `status.ips`, without agent facts)."""
        with self._write_lock:
            return self._current_state()

    # ------------------------------------------------------------------ apply

    @staticmethod
    def _check_count(count: int, what: str) -> None:
        if count > MAX_OBJECTS_PER_WRITE:
            raise PayloadTooLarge(f"{count} {what} in one request; at most {MAX_OBJECTS_PER_WRITE} "
                                  "(split the file)")

    def _plan_apply(self, current: DesiredState, documents: Sequence[Any], default_namespace: str | None,
                    principal: Principal | None
                    ) -> tuple[list[ObjectResult], list[StockadeObject], DesiredState, dict[ObjectKey, str]]:
        """What applying `documents` on `current` would do: results, changed objects, the state after,
        and the resourceVersions the request pinned (for the commit's compare-and-swap).

        Raises what apply would raise (validation, 403, 409 on a stale resourceVersion). Pure but for
        the store read of resource versions; call it under the write lock when the result is committed.
        """
        if not documents:
            raise ValidationError.single("", "documents", "nothing to apply: no documents given")
        self._check_count(len(documents), "documents")
        objects = parse_documents(list(documents), default_namespace)
        if principal is not None:
            # Before anything is looked up: a stale or unknown resourceVersion (409) on an object
            # the caller may not write would tell it whether that object exists.
            for obj in objects:
                rbac.check_write(principal, key_of(obj), None, to_document(obj))
        expected = self._check_versions(objects)
        objects = record_moves(current, assign_addresses(current, objects, self.pools), self._clock())
        results: list[ObjectResult] = []
        changed: list[StockadeObject] = []
        for obj in objects:
            key = key_of(obj)
            doc = to_document(obj)
            old = current.get(key)
            old_doc = to_document(old) if old is not None else None
            action: Action
            if old_doc is None:
                action = "created"
            elif old_doc == doc:
                action = "unchanged"
            else:
                action = "configured"
            warnings = tuple(apply_warnings(obj))
            results.append(ObjectResult(key, action, warnings))
            if principal is not None:
                # Also for unchanged objects: a request naming anything outside the caller's
                # rights is refused as a whole, whether or not it would change it.
                rbac.check_write(principal, key, old_doc, doc)
            if action != "unchanged":
                changed.append(obj)
        after = current.with_changes(current.revision + 1, put=changed)
        if changed:
            self._check_quotas(current, after, changed)
            problems = validate_state(after, self.validation, only={key_of(o) for o in changed},
                                      visible=self._visible(principal))
            if problems:
                raise ValidationError(problems)
        return results, changed, after, expected

    @staticmethod
    def _visible(principal: Principal | None) -> Callable[[str], bool] | None:
        return rbac.visible_namespaces(principal) if principal is not None else None

    def _check_quotas(self, current: DesiredState, after: DesiredState, changed: Iterable[StockadeObject]) -> None:
        """QuotaExceeded (403) when the change grows a namespace beyond one of its limits."""
        touched = {o.metadata.namespace or "" for o in changed} | {o.metadata.name for o in changed
                                                                     if o.kind == "Namespace"}
        quotas.check(current, after, touched, self._quotas, (self.pools.ipv4, self.pools.ipv6))

    def _check_versions(self, objects: Sequence[StockadeObject]) -> dict[ObjectKey, str]:
        """409 for any object sent with a `metadata.resourceVersion` that is no longer its version;
        else the versions pinned, by object."""
        pinned = {key_of(o): o.metadata.resourceVersion for o in objects if o.metadata.resourceVersion}
        if not pinned:
            return {}
        stale = stale_versions(pinned, self.store.object_revisions())
        if stale:
            raise ConflictError("; ".join(stale))
        return pinned

    def apply(self, documents: Sequence[Any], author: str, message: str,
              default_namespace: str | None = None, principal: Principal | None = None,
              audit: WriteAudit | None = None) -> WriteResult:
        """Create or update every object in `documents`, all or nothing, as one revision.

        With `principal`, every object it changes must be within that caller's rights; with
        `audit`, the revision's audit entry is stored with it (and one is recorded when nothing changed).
        """
        return self._replanned(lambda: self._apply_once(documents, author, message, default_namespace,
                                                        principal, audit))

    def _replanned(self, write: Callable[[], WriteResult]) -> WriteResult:
        """Run `write`, which plans on the current state and commits on top of exactly that revision;
        when another writer (another controller replica on the same store) committed in between
        (StaleBase), drop the cached state and plan again on the new one, a few times."""
        for _ in range(REPLANS):
            try:
                return write()
            except StaleBase as e:
                overtaken = e
                with self._write_lock:
                    self._state = None
        raise ConflictError(f"{overtaken} (overtaken {REPLANS} times by other controller replicas)")

    def _apply_once(self, documents: Sequence[Any], author: str, message: str, default_namespace: str | None,
                    principal: Principal | None, audit: WriteAudit | None) -> WriteResult:
        with self._write_lock:
            current = self._current_state()
            results, changed, after, expected = self._plan_apply(current, documents, default_namespace,
                                                                 principal)
            if not changed:
                if audit is not None:
                    self.audit.record(audit.entry(current.revision, []))
                return WriteResult(current.revision, tuple(results))
            changes = [Change(key_of(o), to_document(o)) for o in changed]
            revision = self._commit(self._ordered(changes), author, message, results, audit, current.revision,
                                    expected)
            self._state = after if revision.number == after.revision else None
        self._notifier.publish(revision.number)
        return WriteResult(revision.number, tuple(results))

    def _commit(self, changes: list[Change], author: str, message: str, results: Sequence[ObjectResult],
                audit: WriteAudit | None, base: int, expected: dict[ObjectKey, str] | None = None) -> Revision:
        """Commit `changes` as one revision on top of revision `base` (the state they were checked
        against; else StaleBase) if the `expected` resourceVersions still hold; with `audit`, its
        audit entry in the same transaction. The committed revision's events go to the event
        tail before anyone is told of it."""
        when = self._clock()
        if audit is None:
            committed = self.store.commit(changes, author, message, when, expected=expected, base=base)
        else:
            objects = [r.to_dict() for r in results if r.action != "unchanged"]
            committed = self.audit.commit_revision(
                lambda rows: self.store.commit(changes, author, message, when, expected=expected, audit=rows,
                                               base=base),
                lambda revision: audit.entry(revision, objects))
        self._tail.add(committed.revision, list(committed.events))
        return committed.revision

    # ------------------------------------------------------- diff, rollback

    def diff(self, documents: Sequence[Any], default_namespace: str | None = None,
             principal: Principal | None = None) -> tuple[int, list[ObjectDiff], list[VerdictChange]]:
        """What applying `documents` would change, object by object and field by field, and which
        recently observed flows would get another verdict. Stores nothing."""
        with self._write_lock:
            current = self._current_state()
        results, changed, after, _ = self._plan_apply(current, documents, default_namespace, principal)
        new_docs = {key_of(o): to_document(o) for o in changed}
        items = []
        for r in results:
            stored = current.get(r.key)
            old_doc = to_document(stored) if stored is not None else None
            items.append((r.key, r.action, old_doc, old_doc if r.action == "unchanged" else new_docs.get(r.key)))
        diffs = diff_documents(items)
        recent = self.flow_log.recent_distinct()
        if principal is None or not rbac.is_scoped(principal):
            return current.revision, diffs, verdict_changes(current, after, recent)
        # A tenant's change can only matter to flows with one end in its namespaces; others'
        # flows are not replayed for it at all, and the far end of its own is shown cut down.
        visible = rbac.visible_namespaces(principal)
        mine = [r for r in recent if visibility.touches((r.src.namespace, r.dst.namespace), visible)]
        changes = [visibility.verdict_change(c, visible) for c in verdict_changes(current, after, mine)]
        return current.revision, diffs, changes

    def rollback(self, target: int, author: str, message: str,
                 principal: Principal | None = None, audit: WriteAudit | None = None) -> WriteResult:
        """A new revision whose objects equal those right after revision `target`.

        Validated and authorized like any write; no revision when the state already equals it.
        """
        return self._replanned(lambda: self._rollback_once(target, author, message, principal, audit))

    def _rollback_once(self, target: int, author: str, message: str, principal: Principal | None,
                       audit: WriteAudit | None) -> WriteResult:
        with self._write_lock:
            current = self._current_state()
            if target < 0 or target > current.revision:
                raise NotFoundError(f"revision {target} not found (the store is at revision {current.revision})")
            wanted = {key_of(o): o for o in (parse_stored(d) for d in self.store.objects_at(target))}
            have = {key_of(o): o for o in current.objects()}
            puts = [o for k, o in wanted.items() if k not in have or to_document(have[k]) != to_document(o)]
            deletes = [k for k in have if k not in wanted]
            results = [ObjectResult(key_of(o), "created" if key_of(o) not in have else "configured") for o in puts]
            results += [ObjectResult(k, "deleted") for k in deletes]
            if not results:
                if audit is not None:
                    self.audit.record(audit.entry(current.revision, []))
                return WriteResult(current.revision, ())
            if principal is not None:
                self._require_rollback_readable(principal, target, [r.key for r in results])
            self._check_count(len(results), "changes")
            if principal is not None:
                for o in puts:
                    k = key_of(o)
                    rbac.check_write(principal, k, to_document(have[k]) if k in have else None, to_document(o))
                for k in deletes:
                    rbac.check_write(principal, k, to_document(have[k]), None)
            after = current.with_changes(current.revision + 1, put=puts, delete=deletes)
            self._check_quotas(current, after, puts)
            problems = validate_state(after, self.validation, only={r.key for r in results},
                                      visible=self._visible(principal))
            if problems:
                raise ValidationError(problems)
            changes = [Change(key_of(o), to_document(o)) for o in puts]
            changes = self._ordered(changes) + self._ordered((Change(k, None) for k in deletes), reverse=True)
            revision = self._commit(changes, author, message or f"rollback to revision {target}", results,
                                    audit, current.revision)
            self._state = after if revision.number == after.revision else None
        self._notifier.publish(revision.number)
        return WriteResult(revision.number, tuple(results))

    @staticmethod
    def _ordered(changes: Iterable[Change], reverse: bool = False) -> list[Change]:
        # Events in dependency order (namespaces, workloads, groups, policies; deletes
        # the other way), so a watcher applying them one by one never sees a dangling reference.
        return sorted(changes, key=lambda c: KIND_ORDER.get(c.key.kind, 99), reverse=reverse)

    # ----------------------------------------------------------------- delete

    def delete(self, keys: Iterable[ObjectKey], author: str, message: str,
               principal: Principal | None = None, audit: WriteAudit | None = None) -> WriteResult:
        """Delete every object in `keys`, all or nothing, as one revision.

        NotFoundError when one is missing; ConflictError when a group would still
        be used by a policy, or a namespace would still hold objects.
        """
        wanted = list(dict.fromkeys(keys))  # drop repeats, keep order
        if not wanted:
            raise ValidationError.single("", "objects", "nothing to delete: no objects given")
        return self._replanned(lambda: self._delete_once(wanted, author, message, principal, audit))

    def _delete_once(self, wanted: list[ObjectKey], author: str, message: str, principal: Principal | None,
                     audit: WriteAudit | None) -> WriteResult:
        with self._write_lock:
            current = self._current_state()
            self._check_count(len(wanted), "objects")
            if principal is not None:
                # Rights first, then existence: deleting another tenant's object is 403 whether or
                # not it exists (404 for one and 403 for the other would tell them apart).
                for k in wanted:
                    old = current.get(k)
                    rbac.check_write(principal, k, to_document(old) if old is not None else None, None)
            missing = [k for k in wanted if current.get(k) is None]
            if missing:
                raise NotFoundError("; ".join(f"{k} not found" for k in missing))
            after = current.with_changes(current.revision + 1, delete=wanted)
            conflicts: list[str] = []
            for k in wanted:
                if k.kind == "Group":
                    users = referrers_of_group(after, (k.namespace, k.name), self._visible(principal))
                    if users:
                        conflicts.append(f"{k} is still used by {', '.join(users)}; "
                                         "change or delete those first")
                elif k.kind == "Tier":
                    users = referrers_of_tier(after, k.name)
                    if users:
                        conflicts.append(f"{k} is still used by {', '.join(users)}; "
                                         "move or delete those first")
                elif k.kind == "Namespace":
                    held = [str(key_of(o)) for o in after.objects() if o.metadata.namespace == k.name]
                    if held:
                        shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
                        conflicts.append(f"{k} still holds {len(held)} object(s): {shown}; delete them first")
            if conflicts:
                raise ConflictError("; ".join(conflicts))
            results = [ObjectResult(k, "deleted") for k in wanted]
            revision = self._commit(self._ordered((Change(k, None) for k in wanted), reverse=True),
                                    author, message, results, audit, current.revision)
            self._state = after if revision.number == after.revision else None
        self._notifier.publish(revision.number)
        return WriteResult(revision.number, tuple(results))

    # ------------------------------------------------------------------ reads

    def list_objects(self, kind: str, namespace: str | None = None, name: str | None = None,
                     principal: Principal | None = None) -> tuple[int, list[dict[str, Any]]]:
        """(revision, documents) of one kind; namespace None means all namespaces.

        NotFoundError when a name is given and no such object exists. With a scoped `principal`
        (a tenant), only what it may read; and a name it may not read — in a namespace not its
        own, of a kind it may not read, or asked across all namespaces and not found in its
        own — is Forbidden whether or not it exists, so no answer tells others' names apart.
        """
        k = resolve_kind(kind)
        if principal is not None and principal.role == "agent":
            return self._own_workloads(k.name, namespace, name, principal)
        scoped = principal is not None and rbac.is_scoped(principal)
        if principal is not None and scoped:
            rbac.require_namespace(principal, namespace if k.namespaced else None)
            if name is not None and (not k.namespaced or namespace):
                rbac.require_readable(principal, ObjectKey(k.name, (namespace or "") if k.namespaced else "", name))
        ns_filter = (namespace or None) if k.namespaced else ""
        revision, docs = self.store.objects(k.name, ns_filter, name)
        if principal is not None and scoped:
            docs = [d for d in docs if rbac.may_read(principal, _key_of_doc(d))]
            if name is not None and not docs and not namespace and k.namespaced:
                # Searched across namespaces: "not in yours" is all a tenant may learn.
                raise Forbidden(f"{principal.name!r} (role tenant) may read no {k.name} named {name!r} "
                                f"in its namespaces ({', '.join(sorted(principal.namespaces))})")
        if name is not None and not docs:
            where = f"{namespace}/" if k.namespaced and namespace else ""
            raise NotFoundError(f"{k.name} {where}{name} not found")
        return revision, self._with_runtime_status(self._with_versions(docs))

    def _own_workloads(self, kind: str, namespace: str | None, name: str | None,
                       principal: Principal) -> tuple[int, list[dict[str, Any]]]:
        """A host credential reads back the Workloads on its own host (what the CNI plugin
        registered: its addresses), nothing else: other kinds are Forbidden, other hosts'
        workloads are not there (NotFound alike, so the answer tells nothing of them)."""
        rbac.require_own_workloads(principal, kind)
        revision, docs = self.store.objects(kind, namespace or None, name)
        docs = [d for d in docs if (d.get("spec") or {}).get("host") == principal.host]
        if name is not None and not docs:
            raise NotFoundError(f"Workload {namespace + '/' if namespace else ''}{name} not found on host "
                                f"{principal.host}")
        return revision, self._with_runtime_status(self._with_versions(docs))

    def _with_versions(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Documents with `metadata.resourceVersion`: the revision that last changed each."""
        versions = self.store.object_revisions()
        for doc in docs:
            meta = doc.get("metadata") or {}
            key = ObjectKey(str(doc.get("kind")), str(meta.get("namespace") or ""), str(meta.get("name")))
            if key in versions:
                meta["resourceVersion"] = str(versions[key])
        return docs

    def history(self, limit: int | None = None, principal: Principal | None = None) -> list[dict[str, Any]]:
        """Revisions newest first with the objects each changed; a tenant sees only its namespaces'."""
        revisions = self.store.revisions(limit if principal is None or not rbac.is_scoped(principal) else None)
        changes = self.store.changes_of([r.number for r in revisions])
        out: list[dict[str, Any]] = []
        for r in revisions:
            objects = [{"type": t, "kind": k.kind, "namespace": k.namespace or None, "name": k.name}
                       for t, k in changes[r.number] if principal is None or rbac.may_read(principal, k)]
            if not objects and principal is not None and rbac.is_scoped(principal):
                continue
            out.append({"revision": r.number, "author": r.author, "message": r.message, "time": r.time,
                        "objects": objects})
            if limit is not None and len(out) >= limit:
                break
        return out

    def snapshot(self) -> tuple[int, list[dict[str, Any]]]:
        """(revision, every document) read in one transaction, in dependency order."""
        revision, docs = self.store.objects()
        docs.sort(key=lambda d: KIND_ORDER.get(d.get("kind", ""), 99))  # stable: keeps ns/name order
        return revision, self._with_runtime_status(docs)

    def revisions(self, limit: int | None = None) -> list[Revision]:
        return self.store.revisions(limit)

    def revision_info(self, number: int) -> Revision | None:
        """One revision's author, message and commit time; None for 0 or an unknown number.
        Recent ones from memory: every agent's first report of a revision asks for its time."""
        known = self._tail.revision(number)
        return known if known is not None else self.store.revision_info(number)

    def _with_runtime_status(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Workload documents with `status.{ips,host}` and the agent's endpoint facts merged in."""
        if not any(d.get("kind") == "Workload" for d in docs):
            return docs
        endpoints = {a.host: AgentReport.from_dict(a.report).endpoints for a in self.reports.all()}
        for doc in docs:
            if doc.get("kind") != "Workload":
                continue
            meta, spec = doc["metadata"], doc["spec"]
            status = dict(doc.get("status") or {})
            status["ips"] = list(spec.get("ips") or status.get("ips") or [])
            status["host"] = spec["host"]
            found = endpoints.get(spec["host"], {}).get(f"{meta.get('namespace', '')}/{meta['name']}")
            if found is not None:
                status.update(found.to_dict())
            doc["status"] = status
        return docs

    # ------------------------------------------------------------------ watch

    async def watch(self, since: int, timeout: float) -> tuple[int, list[Event]]:
        """Events of revisions after `since`: at once if there are some, else when the next
        commit happens, else ([], current revision) after `timeout` seconds.

        Raises Gone when `since` is older than the kept event log or newer than the store.
        """
        if since < 0:
            raise ValidationError.single("", "since", "must be 0 or more")
        # An agent that is up to date asks with `since` = the newest revision committed here:
        # nothing to read yet (and it cannot be Gone). After each commit every agent asks again.
        if since != self._notifier.revision:
            revision, events = await asyncio.to_thread(self.store.events_since, since)
            if events or timeout <= 0:
                return revision, events
        elif timeout <= 0:
            return since, []
        self._long_polls["watch"] += 1
        try:
            woken = await self._notifier.wait_beyond(since, timeout)
        finally:
            self._long_polls["watch"] -= 1
        if woken:
            recent = self._tail.after(since)  # the commit that woke us, from memory
            if recent is not None:
                return recent
        return await asyncio.to_thread(self.store.events_since, since)

    def take_revision(self, revision: int) -> None:
        """A revision another controller replica committed (controller.replicas): wake the
        watches waiting for it. Older or known revisions change nothing."""
        if revision > self._notifier.revision:
            self._notifier.publish(revision)

    def long_polls(self) -> dict[str, int]:
        """How many watches and flow follows are waiting right now (a watch per connected agent)."""
        return dict(self._long_polls)

    # ----------------------------------------------------------------- agents

    def _check_host(self, host: str) -> None:
        known = self.config.validation.known_hosts
        if known is not None and host not in known:
            raise ValidationError.single(f"agent {host}", "host",
                                         f"unknown host (known hosts: {', '.join(sorted(known)) or 'none'})")

    def report_agent(self, host: str, report: AgentReport, principal: Principal | None = None) -> float | None:
        """Record an agent's report (runtime state: no revision); with `principal`, only if it may
        report for `host` (an agent token: its own host only).

        Returns the rollout latency in seconds (revision committed → this host enforces it in
        sync) when this is the first such report for that (host, revision), else None.
        """
        if principal is not None:
            rbac.require(principal, Permission.REPORT, host=host)
        self._check_host(host)
        now = self._clock()
        self.reports.put(host, report.to_dict(), now)
        if not report.in_sync or report.error or report.revision < 1:
            return None
        with self._rollout_lock:
            if report.revision <= self._rollout_seen.get(host, 0):
                return None
            self._rollout_seen[host] = report.revision
        committed = self.revision_info(report.revision)
        if committed is None:
            return None
        return max(0.0, (now - datetime.fromisoformat(committed.time)).total_seconds())

    # ------------------------------------------------------------------ flows

    def record_flows(self, host: str, records: Sequence[tuple[datetime, FlowRecord]], dropped: int = 0,
                     principal: Principal | None = None) -> int:
        """Keep validated flow records (with their time) from `host`; count `dropped`.

        Every record must name `host` as its enforcing host; with `principal`, it must be one
        that may report for `host`. Returns the log's last seq.
        """
        if principal is not None:
            rbac.require(principal, Permission.REPORT, host=host)
        self._check_host(host)
        problems = [FieldProblem(f"agent {host}", f"records.{i}.host",
                                 f"{record.host!r} is not the reporting host {host!r}")
                    for i, (_, record) in enumerate(records) if record.host != host]
        if problems:
            raise ValidationError(problems)
        last = self.flow_log.add(host, records, dropped)
        if records:
            self._flow_notifier.publish(last)
        return last

    @staticmethod
    def _require_rollback_readable(principal: Principal, target: int, changed: Iterable[ObjectKey]) -> None:
        """A tenant's rollback that would change an object it may not read is refused without naming
        it: `check_write`'s message names the object, and one rollback per revision would list
        another tenant's objects created, changed or deleted since."""
        if rbac.is_scoped(principal) and not all(rbac.may_read(principal, k) for k in changed):
            raise Forbidden(f"{principal.name!r} (role tenant) may not roll back to revision {target}: that "
                            "would change objects outside its namespaces "
                            f"({', '.join(sorted(principal.namespaces))})")

    @staticmethod
    def scope_flow_query(query: FlowQuery, principal: Principal | None) -> FlowQuery:
        """The query a caller may ask: a tenant names one of its namespaces (or has only one, the
        default), and a `workload` filter only of its namespaces (filtering on another tenant's
        workload name would tell whether it exists). Forbidden otherwise. The other name filters
        (`from`, `to`, `rule`) are matched in the tenant's redacted view (`FlowQuery.visible`):
        another namespace's workload or rule matches only as `ns/(hidden)`, as it is shown."""
        if principal is None or not rbac.is_scoped(principal):
            return query
        namespace, workload = query.namespace, query.workload
        if workload:
            rbac.require_namespace(principal, workload.split("/", 1)[0])
            namespace = namespace or workload.split("/", 1)[0]
        if not namespace and len(principal.namespaces) == 1:
            namespace = next(iter(principal.namespaces))
        if not namespace:
            raise Forbidden(f"{principal.name!r} (role tenant) must ask for one of its namespaces "
                            f"({', '.join(sorted(principal.namespaces))})")
        rbac.require_namespace(principal, namespace)
        return replace(query, namespace=namespace, workload=workload, visible=rbac.visible_namespaces(principal))

    def scope_flow_page(self, page: FlowPage, principal: Principal | None) -> dict[str, Any]:
        """The page's wire form as the caller may see it (see `visibility.flow_record`)."""
        out = page.to_dict()
        if principal is not None and rbac.is_scoped(principal):
            visible = rbac.visible_namespaces(principal)
            out["records"] = [visibility.flow_record(r, visible) for r in out["records"]]
        return out

    async def flows(self, query: FlowQuery, follow_timeout: float = 0.0,
                    principal: Principal | None = None) -> FlowPage:
        """Matching flow records; with `follow_timeout`, waits up to that long for new matching
        ones when there are none yet (a long-poll like `watch`). With `principal`, the query is
        first scoped to what it may read (`scope_flow_query`); render with `scope_flow_page`."""
        query = self.scope_flow_query(query, principal)
        page = await asyncio.to_thread(self.flow_log.query, query)
        if page.records or follow_timeout <= 0:
            return page
        self._long_polls["flows"] += 1
        try:
            return await self._follow_flows(page, query, follow_timeout)
        finally:
            self._long_polls["flows"] -= 1

    async def flow_page(self, query: FlowQuery, follow_timeout: float,
                        principal: Principal | None) -> dict[str, Any]:
        """`flows` for `principal`, in the wire form it may see (`scope_flow_page`)."""
        page = await self.flows(query, follow_timeout, principal=principal)
        return self.scope_flow_page(page, principal)

    async def _follow_flows(self, page: FlowPage, query: FlowQuery, follow_timeout: float) -> FlowPage:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + follow_timeout
        while not page.records:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            # Only records after what we have looked at can match from now on.
            query = replace(query, since_seq=page.last_seq)
            if not await self._flow_notifier.wait_beyond(page.last_seq, remaining):
                # Timed out or shutting down: one last look, so a record that raced the timeout is not missed.
                page = await asyncio.to_thread(self.flow_log.query, query)
                break
            page = await asyncio.to_thread(self.flow_log.query, query)
        return page

    def status(self, principal: Principal | None = None) -> ControllerStatus:
        """The revision and every agent's report; a tenant's view hides error texts and other
        namespaces' workloads (`visibility.controller_status`)."""
        status = self._status()
        if principal is not None and rbac.is_scoped(principal):
            return visibility.controller_status(status, rbac.visible_namespaces(principal))
        return status

    def _status(self) -> ControllerStatus:
        now = self._clock()
        agents = []
        for record in self.reports.all():
            age = (now - record.last_seen).total_seconds()
            # Without the rule counters: no status answer carries them (the rules view reads them from
            # the reports), and parsing thousands per host on every status, scrape and `apply --wait`
            # poll was most of its cost (about 110 ms for 20 hosts of 4,000 rules).
            report = {k: v for k, v in record.report.items() if k != "ruleCounters"}
            agents.append(AgentStatus(
                host=record.host,
                report=AgentReport.from_dict(report),
                last_seen=record.last_seen.isoformat(timespec="milliseconds"),
                reporting=age <= self.config.agent_stale_after,
            ))
        return ControllerStatus(self.store.revision(), tuple(agents))

    # `list` reads naturally at call sites (service.list("workloads")); defined last so
    # it does not shadow the builtin inside this class body.
    list = list_objects


def _key_of_doc(doc: dict[str, Any]) -> ObjectKey:
    meta = doc.get("metadata") or {}
    return ObjectKey(str(doc.get("kind")), str(meta.get("namespace") or ""), str(meta.get("name")))
