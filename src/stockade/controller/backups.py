"""Backup, restore and migration of a controller's store: the use cases over `store.archive`.

- `take_backup` reads the whole store at one revision (the controller's `GET /api/v1/backup`
  and `stockade store backup` both use it).
- `restore` loads a backup into an EMPTY store and gives it a new identity, with the old one
  in its lineage: agents that enforce a program of the old store (perhaps of a revision newer
  than the backup) take the restored state as a deliberate successor and relist, instead of
  holding their program as they do for a stranger's store (agent.loop). Revision numbers,
  history, tokens and the audit log are kept.
- `migrate` moves a store to another backend (SQLite -> etcd, or back) keeping everything,
  its identity included: agents go on watching from the revision they have, no relist.

Restore and migrate are offline tools: the controllers of the target (and, for a migration,
of the source) must be stopped. A source that moves on during a migration is found out, and
the target is emptied again.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from pathlib import Path

from stockade.clock import Clock, utc_now
from stockade.controller.store import Backend, StoreLocation, open_store
from stockade.controller.store.archive import StoreDump, read_backup, write_backup
from stockade.controller.store.location import EtcdLocation
from stockade.errors import ConflictError


def _now(clock: Clock) -> str:
    return clock().isoformat(timespec="milliseconds")


def describe(location: StoreLocation) -> str:
    if isinstance(location, EtcdLocation):
        return "etcd://" + ",".join(str(e) for e in location.endpoints) + location.prefix
    return f"sqlite:{location.path}"


def take_backup(backend: Backend, clock: Clock = utc_now) -> StoreDump:
    """The whole store at one revision (read while the controller goes on serving)."""
    return backend.archive.dump(_now(clock))


def backup_store(location: StoreLocation, path: Path, clock: Clock = utc_now) -> StoreDump:
    """Read the store at `location` directly (no controller needed) into the backup file `path`."""
    backend = open_store(location)
    try:
        dump = take_backup(backend, clock)
    finally:
        backend.close()
    write_backup(path, dump)
    return dump


def _with_entry(dump: StoreDump, action: str, clock: Clock, **detail: object) -> StoreDump:
    """`dump` with one more audit entry saying what an offline tool did to the store."""
    seq = max((s for s, _ in dump.audit), default=0) + 1
    entry = {"time": _now(clock), "action": action, "outcome": "ok", "status": 0, "method": "", "path": "",
             "client": "offline tool", "actor": {"name": f"stockade {action.replace('store.', 'store ')}"},
             "revision": dump.revision, "detail": dict(detail)}
    return dataclasses.replace(dump, audit=dump.audit + ((seq, entry),))


@dataclass(frozen=True)
class Restored:
    dump: StoreDump          # as loaded: the new identity and lineage
    previous_identity: str   # the identity of the store the backup was taken from


def restore(path: Path, location: StoreLocation, clock: Clock = utc_now) -> Restored:
    """Load the backup file `path` into the empty store at `location`, under a new identity."""
    dump = read_backup(path)
    restored = dataclasses.replace(dump, cluster_id=uuid.uuid4().hex, lineage=dump.lineage + (dump.cluster_id,))
    restored = _with_entry(restored, "store.restore", clock, file=str(path), backupTaken=dump.created,
                           previousIdentity=dump.cluster_id)
    backend = open_store(location)
    try:
        backend.archive.load(restored)
    finally:
        backend.close()
    return Restored(restored, dump.cluster_id)


def migrate(source: StoreLocation, target: StoreLocation, clock: Clock = utc_now) -> StoreDump:
    """Copy the store at `source` into the empty store at `target`, identity and revision numbers
    kept. The source is left as it was; if it moved on meanwhile, the target is emptied again."""
    if source == target:
        raise ConflictError(f"--from and --to are the same store ({describe(source)})")
    origin = open_store(source)
    try:
        dump = take_backup(origin, clock)
        moved = _with_entry(dump, "store.migrate", clock, source=describe(source), target=describe(target))
        destination = open_store(target)
        try:
            destination.archive.load(moved)
            now = origin.state.revision()
            if now != dump.revision:
                destination.archive.discard()
                raise ConflictError(f"the source store moved on from revision {dump.revision} to {now} during the "
                                    "migration (a controller still writes to it): stop every controller of "
                                    f"{describe(source)} and migrate again; the target was emptied again")
        finally:
            destination.close()
    finally:
        origin.close()
    return moved
