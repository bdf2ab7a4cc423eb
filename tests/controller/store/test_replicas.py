"""Several controller replicas on one etcd store, over real HTTP (issue 15, item 2).

Each replica is a whole controller (build_app, uvicorn in a thread) on the same real 3-member
etcd cluster (`conftest.etcd_cluster`). What one replica takes in, the others act on at once:
a commit through A ends a watch waiting on B; an agent's report to A shows in B's status; a
client given both goes on through B when A is gone.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from stockade.client import ControllerClient
from stockade.controller.api import build_app
from stockade.controller.auth import create_token_file
from stockade.controller.config import ControllerConfig
from stockade.controller.main import RunningController, start_in_thread
from stockade.model.validation import ValidationSettings
from tests.controller.controller_docs import namespace, shop
from tests.controller.store.etcd_cluster import EtcdCluster
from tests.controller.store.test_etcd import prefix_for
from tests.waiting import wait_until


@pytest.fixture
def replicas(etcd_cluster: EtcdCluster, tmp_path: Path) -> Iterator[tuple[list[RunningController], dict[str, str]]]:
    tokens = create_token_file(tmp_path / "tokens.json", [
        {"name": "alice", "role": "admin"}, {"name": "agent-hv1", "role": "agent", "host": "hv1"}])
    config = ControllerConfig(etcd=etcd_cluster.location(prefix_for(tmp_path)), tokens_file=tmp_path / "tokens.json",
                              validation=ValidationSettings(known_hosts=frozenset({"hv1", "hv2"})))
    running: list[RunningController] = []
    try:
        for _ in range(2):
            running.append(start_in_thread(config, app=build_app(config)))
        yield running, tokens
    finally:
        for r in running:
            r.stop()


def test_a_commit_through_one_replica_ends_a_watch_waiting_on_another(
        replicas: tuple[list[RunningController], dict[str, str]]) -> None:
    (a, b), tokens = replicas
    with ControllerClient(a.url, tokens["alice"]) as admin_a, ControllerClient(b.url, tokens["agent-hv1"]) as agent_b:
        admin_a.apply([namespace("shop")], "one")
        listing = agent_b.snapshot()
        answer: dict[str, Any] = {}

        def watch() -> None:
            started = time.monotonic()
            answer["result"] = agent_b.watch(listing["revision"], timeout=20, view=listing["view"])
            answer["seconds"] = time.monotonic() - started

        waiting = threading.Thread(target=watch)
        waiting.start()
        time.sleep(0.3)  # the watch is in place on B (nothing to wait for otherwise: it waits 20 s)
        committed = admin_a.apply([namespace("bank")], "two")["revision"]
        waiting.join(5)
        assert not waiting.is_alive(), "the watch on B did not end"
        assert answer["result"]["revision"] == committed
        assert [e["name"] for e in answer["result"]["events"]] == ["bank"]
        assert answer["seconds"] < 2


def test_an_agent_report_to_one_replica_shows_in_another_s_status(
        replicas: tuple[list[RunningController], dict[str, str]]) -> None:
    (a, b), tokens = replicas
    with ControllerClient(a.url, tokens["agent-hv1"]) as agent_a, ControllerClient(b.url, tokens["alice"]) as admin_b:
        revision = admin_b.apply(shop(), "shop")["revision"]
        agent_a.report_status("hv1", revision=revision, program_hash="h", in_sync=True)
        wait_until(lambda: admin_b.status()["enforcedRevision"] == revision,
                   "replica B to see hv1's report to replica A", timeout=5, describe=admin_b.status)


def test_a_client_given_both_replicas_goes_on_when_one_stops(
        replicas: tuple[list[RunningController], dict[str, str]]) -> None:
    (a, b), tokens = replicas
    with ControllerClient(f"{a.url},{b.url}", tokens["alice"]) as admin:
        first = admin.apply([namespace("shop")], "through A")["revision"]
        a.stop()
        second = admin.apply([namespace("bank")], "through B")["revision"]
        assert second == first + 1  # no gap, no duplicate: one store
        assert admin.endpoint == b.url
        assert [r["revision"] for r in admin.revisions()][:2] == [second, first]
