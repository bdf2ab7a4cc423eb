"""Where each thing lives in etcd: the one place that spells the store's keys.

Everything of one store is under one prefix (default `/stockade/`) that holds nothing else,
so several stores can share a cluster (the tests do) and `etcdctl get --prefix` shows all.
Object names are percent-quoted, so a `/` in a name cannot make two keys collide; numbers
are zero-padded, so etcd's key order is numeric order. The layout is drawn in
`store.etcd` and docs/architecture.md.
"""

from __future__ import annotations

from urllib.parse import quote

from stockade.model.kinds import ObjectKey

DEFAULT_PREFIX = "/stockade/"


class Layout:
    """Where each thing lives under the prefix (the one place that spells the keys)."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not prefix.startswith("/") or not prefix.endswith("/"):
            raise ValueError(f"etcd key prefix {prefix!r} must start and end with '/'")
        self.prefix = prefix

    def _k(self, path: str) -> bytes:
        return (self.prefix + path).encode()

    @property
    def cluster_id(self) -> bytes:
        return self._k("meta/cluster_id")

    @property
    def lineage(self) -> bytes:
        return self._k("meta/lineage")

    @property
    def head(self) -> bytes:
        return self._k("head")

    def object(self, key: ObjectKey) -> bytes:
        return self._k("objects/" + "/".join(quote(p, safe="") for p in (key.kind, key.namespace, key.name)))

    @property
    def objects(self) -> bytes:
        return self._k("objects/")

    @property
    def revision_prefix(self) -> bytes:
        return self._k("revisions/")

    @property
    def event_prefix(self) -> bytes:
        return self._k("events/")

    @property
    def audit_prefix(self) -> bytes:
        return self._k("audit/")

    def revision(self, number: int) -> bytes:
        return self._k(f"revisions/{number:012d}")

    def events(self, number: int) -> bytes:
        return self._k(f"events/{number:012d}")

    @property
    def audit_seq(self) -> bytes:
        return self._k("audit-seq")

    def audit(self, seq: int) -> bytes:
        return self._k(f"audit/{seq:012d}")

    def token(self, token_id: str) -> bytes:
        return self._k("tokens/" + quote(token_id, safe=""))

    @property
    def tokens(self) -> bytes:
        return self._k("tokens/")

    def revoked(self, sha256: str) -> bytes:
        return self._k("revoked/" + sha256)

    @property
    def revoked_all(self) -> bytes:
        return self._k("revoked/")

    def agent(self, host: str) -> bytes:
        return self._k("agents/" + quote(host, safe=""))

    @property
    def agents(self) -> bytes:
        return self._k("agents/")
