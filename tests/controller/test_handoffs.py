"""Who may hand a moving workload's open connections over (issue 16, live migration), over real
HTTP against the real controller.

An entry imported into a host's conntrack admits packets no policy is asked about, so the
handoff is an attack surface: only the agent of the host the workload moved from may give, only
entries with an end on the workload's own addresses, and only the agent of the host it is on now
may take. Every attack below is refused and leaves what is held as it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from stockade.client import ControllerClient
from stockade.controller.main import RunningController
from stockade.errors import Forbidden, NotFoundError, ValidationError
from tests.controller.conftest import admin, config, controller, short_dir  # noqa: F401 (fixtures)
from tests.waiting import wait_until
from stockade.controller.auth import create_token_file

W_IP, X_IP, PEER = "198.18.30.5", "198.18.30.6", "198.18.30.9"


@pytest.fixture
def tokens(tmp_path: Path) -> dict[str, str]:
    return create_token_file(tmp_path / "tokens.json", [
        {"name": "alice", "role": "admin"},
        *({"name": f"agent-{h}", "role": "agent", "host": h} for h in ("hv1", "hv2", "hv3")),
        {"name": "viewer", "role": "viewer"},
    ])


def workload(name: str, host: str, ip: str) -> dict[str, Any]:
    return {"apiVersion": "stockade.io/v1", "kind": "Workload",
            "metadata": {"name": name, "namespace": "mig", "labels": {"app": name}},
            "spec": {"host": host, "ips": [ip]}}


def entry(src: str, dst: str) -> dict[str, Any]:
    return {"family": "ipv4", "protocol": "tcp", "src": src, "dst": dst, "sport": 40000, "dport": 7000,
            "reply_src": dst, "reply_dst": src, "reply_sport": 7000, "reply_dport": 40000,
            "state": "ESTABLISHED", "timeout": 300, "assured": True, "replied": True, "mark": 0}


@pytest.fixture
def agents(controller: RunningController, tokens: dict[str, str],  # noqa: F811
           admin: ControllerClient) -> Iterator[dict[str, ControllerClient]]:  # noqa: F811
    admin.apply([{"apiVersion": "stockade.io/v1", "kind": "Namespace", "metadata": {"name": "mig"}},
                 workload("w", "hv1", W_IP), workload("x", "hv2", X_IP)])
    clients = {h: ControllerClient(controller.url, tokens[f"agent-{h}"]) for h in ("hv1", "hv2", "hv3")}
    clients["viewer"] = ControllerClient(controller.url, tokens["viewer"])
    try:
        yield clients
    finally:
        for c in clients.values():
            c.close()


def test_the_move_is_recorded_and_re_applying_it_changes_nothing(admin: ControllerClient,  # noqa: F811
                                                                 agents: dict[str, ControllerClient]) -> None:
    moved = admin.apply([workload("w", "hv2", W_IP)])
    status = admin.list("Workload", "mig", "w")["items"][0]["status"]
    assert (status["host"], status["movedFrom"]) == ("hv2", "hv1") and status["movedAt"]
    again = admin.apply([workload("w", "hv2", W_IP)])
    assert again["results"][0]["action"] == "unchanged" and again["revision"] == moved["revision"]
    assert admin.list("Workload", "mig", "w")["items"][0]["status"]["movedAt"] == status["movedAt"]
    admin.apply([workload("w", "hv2", W_IP) | {"metadata": {"name": "w", "namespace": "mig", "labels": {"a": "b"}}}])
    assert admin.list("Workload", "mig", "w")["items"][0]["status"]["movedFrom"] == "hv1"  # kept by later writes


def test_the_host_it_left_gives_and_the_host_it_is_on_takes(admin: ControllerClient,  # noqa: F811
                                                            agents: dict[str, ControllerClient]) -> None:
    revision = admin.apply([workload("w", "hv2", W_IP)])["revision"]
    agents["hv1"].give_connections("mig", "w", revision, [entry(PEER, W_IP)])
    taken = agents["hv2"].take_connections("mig", "w")
    assert (taken["from"], taken["revision"], taken["entries"]) == ("hv1", revision, [entry(PEER, W_IP)])
    wait_until(lambda: any(e["action"] == "connections.handoff" for e in admin.audit()), "the handoff's audit entry")
    given = next(e for e in admin.audit() if e["action"] == "connections.handoff")
    assert given["actor"]["name"] == "agent-hv1" and "1 open connections of Workload mig/w" in given["reason"]


def test_every_other_handoff_is_refused_and_changes_nothing(admin: ControllerClient,  # noqa: F811
                                                            agents: dict[str, ControllerClient]) -> None:
    revision = admin.apply([workload("w", "hv2", W_IP)])["revision"]
    with pytest.raises(NotFoundError):
        agents["hv2"].take_connections("mig", "w")   # nothing given yet
    agents["hv1"].give_connections("mig", "w", revision, [entry(PEER, W_IP)])
    attacks = [
        # A host the workload never left opens a door on the host it is on now.
        (lambda: agents["hv3"].give_connections("mig", "w", revision, [entry(PEER, W_IP)]), Forbidden,
         "moved from hv1"),
        (lambda: agents["hv2"].give_connections("mig", "w", revision, [entry(PEER, W_IP)]), Forbidden,
         "moved from hv1"),
        # The host it left slips in a connection of another workload's addresses.
        (lambda: agents["hv1"].give_connections("mig", "w", revision, [entry(PEER, X_IP)]), ValidationError,
         "no end on the workload's addresses"),
        # A workload that never moved.
        (lambda: agents["hv2"].give_connections("mig", "x", revision, [entry(PEER, X_IP)]), Forbidden,
         "never moved"),
        # Reading another host's handoff: the connections of a workload that is not here.
        (lambda: agents["hv3"].take_connections("mig", "w"), Forbidden, "it is on 'hv2'"),
        (lambda: agents["hv1"].take_connections("mig", "w"), Forbidden, "it is on 'hv2'"),
        (lambda: agents["viewer"].take_connections("mig", "w"), Forbidden, "may not hand a moving"),
    ]
    for attack, error, words in attacks:
        with pytest.raises(error, match=words):
            attack()
    assert agents["hv2"].take_connections("mig", "w")["entries"] == [entry(PEER, W_IP)]
    assert admin.take_connections("mig", "w")["from"] == "hv1"  # an administrator may look
