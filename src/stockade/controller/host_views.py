"""Each agent's snapshot and watch, cut down to its host's view (compile.host_view).

An agent's credential reads what its host enforces and no more: the policies and
groups of the namespaces it runs workloads of, the groups those name, the
platform's tiers and global policies, and every other workload and namespace as
a peer (names, labels, addresses, named ports). Other tenants' policies and
groups, and other hosts' MACs, interfaces and annotations, never reach it.

The view's shape is its `HostScope`; the agent sends the scope's fingerprint
back with each watch. When the scope at the newest revision is another one, the
watch answers 410 and the agent lists its new view (a relist is built aside and
swapped in whole, so the host keeps enforcing meanwhile). Answering events up
to revision R with the scope at a revision at or after R is sound: equal scopes
at both ends of the range hold the same objects, and a scope that changed and
changed back in between only shaped a state that the next answer supersedes.

Runs on the event loop for watches (nothing here blocks but CPU on one revision's
index, built once per revision and shared by every agent).
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any, Sequence

from stockade.compile.host_view import HostScope, ScopeIndex, peer_document
from stockade.controller.auth import Principal
from stockade.controller.service import ControllerService
from stockade.controller.store import Event
from stockade.errors import Gone
from stockade.model.kinds import parse_stored
from stockade.model.state import DesiredState


class HostViews:
    def __init__(self, service: ControllerService) -> None:
        self._service = service
        self._index: tuple[int, ScopeIndex] | None = None
        self._lock = threading.Lock()

    def _scope_index(self, state: DesiredState) -> ScopeIndex:
        with self._lock:
            if self._index is None or self._index[0] != state.revision:
                self._index = (state.revision, ScopeIndex(state))
            return self._index[1]

    def scope(self, host: str) -> HostScope:
        """`host`'s scope at the newest revision."""
        return self._scope_index(self._service.desired_state()).scope(host)

    def snapshot_for(self, principal: Principal) -> tuple[int, list[dict[str, Any]], str | None]:
        """What `principal` lists: an agent its host's view (and the view's name), anyone else
        allowed to read the state the whole of it (and no view)."""
        if principal.host is not None:
            return self.snapshot(principal.host)
        revision, docs = self._service.snapshot()
        return revision, docs, None

    async def watch_for(self, principal: Principal, since: int, timeout: float, view: str | None
                        ) -> tuple[int, list[Event], str | None]:
        """What `principal` is told after `since`: an agent as its host holds it (`watch`)."""
        if principal.host is not None:
            return await self.watch(principal.host, since, timeout, view)
        revision, events = await self._service.watch(since, timeout)
        return revision, events, None

    def snapshot(self, host: str) -> tuple[int, list[dict[str, Any]], str]:
        """(revision, the documents `host` holds at it, the view's fingerprint)."""
        revision, docs = self._service.snapshot()
        state = self._service.desired_state()
        if state.revision != revision:  # a commit landed between the two reads: use the listing's own
            state = DesiredState.from_objects(revision, (parse_stored(d) for d in docs))
        scope = self._scope_index(state).scope(host)
        kept: list[dict[str, Any]] = []
        for doc in docs:
            form = scope.form(doc)
            if form is not None:
                kept.append(doc if form == "full" else peer_document(doc))
        return revision, kept, scope.fingerprint

    async def watch(self, host: str, since: int, timeout: float, view: str | None
                    ) -> tuple[int, list[Event], str]:
        """Events after `since` as `host` holds them; Gone when the host's view is another one
        than `view` (the fingerprint its agent holds), so that the agent lists it anew.
        Also Gone when `since` is too old or ahead (ControllerService.watch)."""
        revision, events = await self._service.watch(since, timeout)
        scope = self.scope(host)
        # No view: a watcher that keeps no view (a script) gets what its host holds now, but no
        # word when that changes; the agent always sends the one its snapshot named.
        if view is not None and view != scope.fingerprint:
            raise Gone(f"the objects host {host} needs have changed (view {view or 'none'} → "
                       f"{scope.fingerprint}): list again")
        return revision, held_events(scope, events), scope.fingerprint


def held_events(scope: HostScope, events: Sequence[Event]) -> list[Event]:
    """The events a host of `scope` sees, documents in the form it holds them."""
    out: list[Event] = []
    for event in events:
        if event.document is None:
            if scope.holds(event.key.kind, event.key.namespace, event.key.name):
                out.append(event)
            continue
        form = scope.form(event.document)
        if form == "full":
            out.append(event)
        elif form == "peer":
            out.append(replace(event, document=peer_document(event.document)))
    return out
