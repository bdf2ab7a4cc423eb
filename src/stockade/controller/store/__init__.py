"""The controller's storage: the state store seam and the repositories beside it.

    protocol.StateStore         desired state: revisions, objects, CAS commit, events, history
    types                       the frozen values that cross it (Revision, Change, Event, Committed)
    sqlite.SqliteStateStore     the SQLite backend (one file, `sqlite_file.SqliteFile`)
    etcd.EtcdStateStore         the etcd v3 backend (`etcd_kv`, keys: `etcd_layout`; the
                                repositories beside it: `etcd_repos`), shared by controller replicas
    location                    `--store sqlite:PATH | etcd://HOST:PORT,...` parsed
    tokens.TokenRepository      API tokens and revocations (hashes only)
    audit_log.AuditRepository   stored audit entries
    agent_reports.AgentReportRepository   the agents' latest reports (runtime state)
    archive.StoreArchive        the whole store read at one revision, or loaded into an empty one
                                (`sqlite_archive`, `etcd_archive`); backup, restore and migrate
                                (`operations`) are built on it

`open_sqlite` opens all four on one database path, `open_etcd` on one etcd cluster and key
prefix, `open_store` whichever a `location` names; `build_app` (controller.api, through
controller.wiring) calls it and hands each part to the component that needs it. Nothing
above this package imports a backend module but that wiring. The etcd modules (and their
client library) are imported only when an etcd store is opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stockade.controller.store.archive import StoreArchive
from stockade.controller.store.agent_reports import AgentReportRepository, SqliteAgentReports
from stockade.controller.store.audit_log import DEFAULT_AUDIT_RETENTION, AuditRepository, SqliteAudit
from stockade.controller.store.location import EtcdLocation, SqliteLocation, StoreLocation, parse_store
from stockade.controller.store.protocol import StateStore
from stockade.controller.store.sqlite import SqliteStateStore
from stockade.controller.store.sqlite_archive import SqliteArchive
from stockade.controller.store.sqlite_file import SqliteFile
from stockade.controller.store.tokens import SqliteTokens, StoredToken, TokenRepository
from stockade.controller.store.types import (DEFAULT_EVENT_RETENTION, AuditRows, Change, Committed, Event, EventType,
                                             Revision, StaleBase)

__all__ = ["AgentReportRepository", "AuditRepository", "AuditRows", "Backend", "Change", "Committed", "Event",
           "EtcdLocation", "EventType", "Revision", "SqliteLocation", "StaleBase", "StateStore", "StoreArchive", "StoreLocation",
           "StoredToken", "TokenRepository", "open_etcd", "open_sqlite", "open_store", "parse_store"]


@dataclass(frozen=True)
class Backend:
    """One store's parts. The state store owns the storage: close the others first."""

    state: StateStore
    tokens: TokenRepository
    audit: AuditRepository
    reports: AgentReportRepository
    archive: StoreArchive
    # Several controller replicas may serve this store at once (etcd): each follows the others'
    # commits and agent reports (controller.replicas). One SQLite file has one controller.
    shared: bool = False

    def close(self) -> None:
        self.reports.close()
        self.state.close()


def open_sqlite(path: Path | str, event_retention: int = DEFAULT_EVENT_RETENTION,
                audit_retention: int = DEFAULT_AUDIT_RETENTION) -> Backend:
    """Every part of the SQLite store at `path` (created if absent); agent reports beside it."""
    db = SqliteFile(path)
    return Backend(SqliteStateStore(db, event_retention, audit_retention), SqliteTokens(db),
                   SqliteAudit(db, audit_retention), SqliteAgentReports(db), SqliteArchive(db))


def open_etcd(location: EtcdLocation, event_retention: int = DEFAULT_EVENT_RETENTION,
              audit_retention: int = DEFAULT_AUDIT_RETENTION, flush_delay: float = 0.5) -> Backend:
    """Every part of the store under `location.prefix` on the etcd cluster at `location`
    (created on first use); the state store owns the one connection they share."""
    from stockade.controller.store.etcd import EtcdStateStore
    from stockade.controller.store.etcd_archive import EtcdArchive
    from stockade.controller.store.etcd_kv import EtcdKV
    from stockade.controller.store.etcd_layout import Layout
    from stockade.controller.store.etcd_repos import EtcdAgentReports, EtcdAudit, EtcdTokens

    kv = EtcdKV(location.endpoints, location.tls)
    layout = Layout(location.prefix)
    try:
        state = EtcdStateStore(kv, layout, event_retention, audit_retention)
        return Backend(state, EtcdTokens(kv, layout), EtcdAudit(kv, layout, audit_retention),
                       EtcdAgentReports(kv, layout, flush_delay), EtcdArchive(kv, layout, state.reload_identity),
                       shared=True)
    except BaseException:
        kv.close()
        raise


def open_store(location: StoreLocation, event_retention: int = DEFAULT_EVENT_RETENTION) -> Backend:
    """The store `location` names (`--store`)."""
    if isinstance(location, EtcdLocation):
        return open_etcd(location, event_retention)
    return open_sqlite(location.path, event_retention)
