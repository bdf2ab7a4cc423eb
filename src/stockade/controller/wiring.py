"""Open a controller's storage and its service from a config, without HTTP (tests, tools).

`build_app` (controller.api) does the same and adds auth, metrics and routes; this is the
part of it a caller without a server needs. The service owns what is opened here.
"""

from __future__ import annotations

from stockade.controller.audit import AuditLog
from stockade.controller.config import ControllerConfig
from stockade.clock import Clock, utc_now
from stockade.controller.service import ControllerService
from stockade.controller.store import Backend, open_store


def open_backend(config: ControllerConfig) -> Backend:
    """The store `config` names: the SQLite file at `db_path` or the etcd cluster `etcd` (`--store`)."""
    return open_store(config.store, config.event_retention)


def service_on(config: ControllerConfig, backend: Backend, clock: Clock = utc_now) -> ControllerService:
    """The service over `backend`, with the audit log on its audit repository."""
    return ControllerService(config, backend.state, backend.reports, AuditLog(backend.audit, config.audit_log),
                             clock=clock)


def open_service(config: ControllerConfig, clock: Clock = utc_now) -> ControllerService:
    return service_on(config, open_backend(config), clock)
