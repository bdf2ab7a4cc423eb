"""Fixtures for the store tests: one real 3-member etcd cluster for the whole session.

Started on first use (only when an etcd test runs), killed and its directory removed at the
end of the session, also after a failure. It needs no root: these are not kernel tests.
Every test gets its own key prefix on it, so tests never see each other's data.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.controller.store.etcd_cluster import EtcdCluster


@pytest.fixture(scope="session")
def etcd_cluster() -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(size=3).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def etcd_tls_cluster() -> Iterator[EtcdCluster]:
    """A second cluster that serves clients over TLS only and wants a client certificate."""
    cluster = EtcdCluster(size=3, tls=True).start()
    try:
        yield cluster
    finally:
        cluster.stop()
