"""The controller's configuration: one frozen value, built by the CLI or a test.

Invariant (checked on construction): both IPAM pools lie inside the allowed
workload ranges, so an address the controller assigns always passes the same
validation as one a user writes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from stockade.controller.flow_file import DEFAULT_KEEP as DEFAULT_FLOW_LOG_KEEP
from stockade.controller.flow_file import DEFAULT_MAX_BYTES as DEFAULT_FLOW_LOG_MAX_BYTES
from stockade.controller.flows import DEFAULT_FLOW_HISTORY
from stockade.controller.quotas import DEFAULT_POLICIES, DEFAULT_POOL_SHARE, DEFAULT_WORKLOADS, Quotas, default_quotas
from stockade.controller.ratelimit import AuthFailureLimits
from stockade.controller.store.location import EtcdLocation, SqliteLocation, StoreLocation
from stockade.controller.store.types import DEFAULT_EVENT_RETENTION
from stockade.model.ipam import DEFAULT_IPV4_POOL, DEFAULT_IPV6_POOL
from stockade.model.validation import ValidationSettings

DEFAULT_STALE_AFTER = 15.0
DEFAULT_MAX_BODY = 16 * 1024 * 1024


@dataclass(frozen=True)
class ControllerConfig:
    """Where the store lives, who may talk to it, and the rules for what it accepts.

    The store is the SQLite file `db_path` or the etcd cluster `etcd` (`store`: whichever is set).

    `tokens_file` is the JSON file of hashed bearer tokens (see `controller.auth`);
    the HTTP API refuses every authenticated route when it is None.
    `agent_stale_after` is how many seconds after its last report an agent still
    counts as reporting. `event_retention` bounds the watch event log.
    `flow_history` bounds the in-memory flow record history (see `controller.flows`).
    `flow_log`: the JSON-lines file flow records are appended to and read back from on start
    (`controller.flow_file`), rotated at `flow_log_max_bytes` keeping `flow_log_keep` old files;
    None: memory only. `otlp_endpoint`: also send each record as an OTLP log there
    (`controller.flow_otlp`).
    `auth_failures`: how often one client may fail authentication before it gets 429
    (`controller.ratelimit`). `namespace_workloads`, `namespace_policies` and
    `namespace_pool_share` (of the IPv4 pool's addresses) are each namespace's default quota,
    which a Namespace's `spec.quota` overrides (`controller.quotas`); None: no limit.
    """

    db_path: Path | None = None             # the SQLite store (`--db PATH`, `--store sqlite:PATH`)
    etcd: EtcdLocation | None = None        # or the etcd store (`--store etcd://...`): exactly one of the two
    tokens_file: Path | None = None
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    ipv4_pool: ipaddress.IPv4Network = DEFAULT_IPV4_POOL
    ipv6_pool: ipaddress.IPv6Network = DEFAULT_IPV6_POOL
    agent_stale_after: float = DEFAULT_STALE_AFTER
    event_retention: int = DEFAULT_EVENT_RETENTION
    flow_history: int = DEFAULT_FLOW_HISTORY
    flow_log: Path | None = None
    flow_log_max_bytes: int = DEFAULT_FLOW_LOG_MAX_BYTES
    flow_log_keep: int = DEFAULT_FLOW_LOG_KEEP
    otlp_endpoint: str | None = None
    audit_log: Path | None = None           # JSON lines mirror of the audit log (the store keeps it too)
    max_body_bytes: int = DEFAULT_MAX_BODY
    metrics_auth: bool = False              # /metrics needs an admin, network-admin or viewer token
    auth_failures: AuthFailureLimits = field(default_factory=AuthFailureLimits)
    namespace_workloads: int | None = DEFAULT_WORKLOADS
    namespace_policies: int | None = DEFAULT_POLICIES
    namespace_pool_share: float = DEFAULT_POOL_SHARE
    prometheus_url: str | None = None       # where the dashboard's trends come from (`--prometheus URL`)

    @property
    def store(self) -> StoreLocation:
        """The store this controller serves from."""
        if self.etcd is not None:
            return self.etcd
        assert self.db_path is not None  # __post_init__
        return SqliteLocation(self.db_path)

    @property
    def quotas(self) -> Quotas:
        """Each namespace's default quota."""
        return default_quotas(self.namespace_workloads, self.namespace_policies, self.namespace_pool_share,
                              self.ipv4_pool)

    def __post_init__(self) -> None:
        if (self.db_path is None) == (self.etcd is None):
            raise ValueError("the controller needs one store: a SQLite file (db_path) or an etcd cluster (etcd)")
        for pool in (self.ipv4_pool, self.ipv6_pool):
            if not any(pool.version == r.version and pool.subnet_of(r)  # type: ignore[arg-type]
                       for r in self.validation.workload_ranges):
                ranges = ", ".join(str(r) for r in self.validation.workload_ranges)
                raise ValueError(f"IPAM pool {pool} is not inside the allowed workload ranges ({ranges})")
        if self.agent_stale_after <= 0:
            raise ValueError("agent_stale_after must be positive")
        if self.event_retention < 1:
            raise ValueError("event_retention must be at least 1")
        if self.flow_history < 1:
            raise ValueError("flow_history must be at least 1")
        if self.prometheus_url is not None and not self.prometheus_url.startswith(("http://", "https://")):
            raise ValueError(f"--prometheus {self.prometheus_url!r}: expected http://HOST:PORT or https://HOST:PORT")
        if self.flow_log_max_bytes < 1024:
            raise ValueError("flow_log_max_bytes must be at least 1024")
        if self.flow_log_keep < 0:
            raise ValueError("flow_log_keep must not be negative")
        if self.otlp_endpoint is not None and not self.otlp_endpoint.startswith(("http://", "https://")):
            raise ValueError(f"otlp_endpoint {self.otlp_endpoint!r}: expected an http:// or https:// URL "
                             "(e.g. http://collector:4318/v1/logs)")
        if not 0 < self.namespace_pool_share <= 1:
            raise ValueError("namespace_pool_share must be more than 0 and at most 1")
        for name in ("namespace_workloads", "namespace_policies"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative")
