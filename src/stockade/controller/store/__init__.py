"""The controller's storage: the state store seam and the repositories beside it.

    protocol.StateStore         desired state: revisions, objects, CAS commit, events, history
    types                       the frozen values that cross it (Revision, Change, Event, Committed)
    sqlite.SqliteStateStore     the SQLite backend (one file, `sqlite_file.SqliteFile`)
    tokens.TokenRepository      API tokens and revocations (hashes only)
    audit_log.AuditRepository   stored audit entries
    agent_reports.AgentReportRepository   the agents' latest reports (runtime state)

`open_sqlite` opens all four on one database path; `build_app` (controller.api) calls it
and hands each part to the component that needs it. Nothing above this package imports a
backend module but that wiring.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stockade.controller.store.agent_reports import AgentReportRepository, SqliteAgentReports
from stockade.controller.store.audit_log import DEFAULT_AUDIT_RETENTION, AuditRepository, SqliteAudit
from stockade.controller.store.protocol import StateStore
from stockade.controller.store.sqlite import DEFAULT_EVENT_RETENTION, SqliteStateStore
from stockade.controller.store.sqlite_file import SqliteFile
from stockade.controller.store.tokens import SqliteTokens, StoredToken, TokenRepository
from stockade.controller.store.types import AuditRows, Change, Committed, Event, EventType, Revision

__all__ = ["AgentReportRepository", "AuditRepository", "AuditRows", "Backend", "Change", "Committed", "Event",
           "EventType", "Revision", "StateStore", "StoredToken", "TokenRepository", "open_sqlite"]


@dataclass(frozen=True)
class Backend:
    """One store's parts. The state store owns the storage: close the others first."""

    state: StateStore
    tokens: TokenRepository
    audit: AuditRepository
    reports: AgentReportRepository

    def close(self) -> None:
        self.reports.close()
        self.state.close()


def open_sqlite(path: Path | str, event_retention: int = DEFAULT_EVENT_RETENTION,
                audit_retention: int = DEFAULT_AUDIT_RETENTION) -> Backend:
    """Every part of the SQLite store at `path` (created if absent); agent reports beside it."""
    db = SqliteFile(path)
    return Backend(SqliteStateStore(db, event_retention, audit_retention), SqliteTokens(db),
                   SqliteAudit(db, audit_retention), SqliteAgentReports(db))
