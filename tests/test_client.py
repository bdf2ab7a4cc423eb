"""The client's own behaviour: URLs, unreachable controllers, the async variant."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from stockade.client import AsyncControllerClient, ControllerClient
from stockade.controller.main import RunningController, bind_tcp
from stockade.errors import ControllerUnavailable, Forbidden, ValidationError
from tests.controller.controller_docs import shop
# The controller tests' fixtures: a real controller served from a thread, and its clients.
from tests.controller.conftest import admin, agent, config, controller, short_dir, tokens  # noqa: F401


def free_port_with_nothing_listening() -> int:
    sock = bind_tcp("127.0.0.1", 0)  # bound, never listening: connections are refused
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_unreachable_controller_is_controller_unavailable_naming_the_url(short_dir: Path) -> None:
    url = f"http://127.0.0.1:{free_port_with_nothing_listening()}"
    with ControllerClient(url, "secret-token", timeout=2) as client:
        with pytest.raises(ControllerUnavailable) as caught:
            client.healthz()
    assert url in caught.value.message and "secret-token" not in caught.value.message
    with ControllerClient(f"unix://{short_dir}/missing.sock", timeout=2) as client:
        with pytest.raises(ControllerUnavailable) as caught:
            client.status()
    assert "missing.sock" in caught.value.message


def test_bad_urls_are_refused() -> None:
    for url in ("ftp://x", "localhost:7470", "unix://"):
        with pytest.raises(ValidationError):
            ControllerClient(url)


def test_async_client_speaks_the_same_api(controller: RunningController, tokens: dict[str, str]) -> None:
    async def main() -> None:
        assert controller.unix_url is not None
        async with AsyncControllerClient(controller.url, tokens["alice"]) as admin, \
                AsyncControllerClient(controller.unix_url, tokens["agent-hv1"]) as agent:
            waiting = asyncio.create_task(agent.watch(since=0, timeout=10))
            await asyncio.sleep(0.1)
            assert not waiting.done()
            assert (await admin.apply(shop(), "async"))["revision"] == 1
            answer = await asyncio.wait_for(waiting, 5)
            assert len(answer["events"]) == 5
            await agent.report_status("hv1", revision=1, in_sync=True)
            with pytest.raises(Forbidden):
                await agent.delete([("workload", "shop", "web-1")])
            assert (await admin.status())["enforcedRevision"] == 1
            assert (await agent.snapshot_state()).revision == 1

    asyncio.run(main())


def test_status_report_in_wire_form_is_accepted(admin: ControllerClient, agent: ControllerClient) -> None:
    admin.apply(shop(), "")
    agent.report_status("hv1", {"revision": 1, "programHash": "h", "appliedAt": None, "inSync": True,
                                "error": None, "endpoints": {"shop/web-1": {"netns": "n1", "interface": "i1",
                                                                            "extra": "ignored"}}})
    [hv1] = admin.status()["agents"]
    assert (hv1["revision"], hv1["programHash"], hv1["inSync"]) == (1, "h", True)
    assert admin.list("workload", "shop", "web-1")["items"][0]["status"]["netns"] == "n1"
    with pytest.raises(ValidationError):
        agent.report_status("hv1")  # neither a report nor a revision


def test_a_lazy_snapshot_has_the_same_objects(admin: ControllerClient, agent: ControllerClient) -> None:
    admin.apply(shop(), "")
    eager, lazy = agent.snapshot(), agent.snapshot_lazy()
    assert lazy["revision"] == eager["revision"] == 1
    assert len(lazy["objects"]) == len(eager["objects"]) == 5
    assert list(lazy["objects"]) == eager["objects"]


def test_connections_are_kept_alive_and_shared_by_threads(admin: ControllerClient) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        assert all(r["ok"] for r in pool.map(lambda _: admin.healthz(), range(40)))
    idle = admin._transport._idle
    assert 1 <= len(idle) <= 4  # reused: at most one connection per thread at a time
    sockets = {id(c.sock) for c in idle}
    admin.healthz()
    assert {id(c.sock) for c in admin._transport._idle} <= sockets


def test_close_ends_a_long_poll_in_flight_at_once_and_does_not_retry_it(agent: ControllerClient) -> None:
    """What lets a stopping agent exit at once: its watch blocks a worker thread for up to 20 s."""
    import threading

    revision = int(agent.watch(0, 0)["revision"])
    outcome: dict[str, object] = {}

    def long_poll() -> None:
        try:
            outcome["answer"] = agent.watch(revision, 30)  # nothing changes: the controller holds it
        except Exception as e:  # noqa: BLE001 - the test looks at what was raised
            outcome["error"] = e

    thread = threading.Thread(target=long_poll, daemon=True)
    thread.start()
    for _ in range(200):
        if agent._transport._busy:
            break
        thread.join(0.01)
    assert agent._transport._busy, "the long-poll never went out"
    agent.close()
    thread.join(10)  # far less than the poll's 30 s, far more than the close needs
    assert not thread.is_alive()
    assert "answer" not in outcome and isinstance(outcome.get("error"), ControllerUnavailable)


# ------------------------------------------------------------ several replicas


class _Swallower:
    """A TCP server that reads a request and closes without answering: a replica that dies with
    the request in hand, so the client cannot know whether a write was done."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = bind_tcp("127.0.0.1", 0)
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        self._socket = socket
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                if conn.recv(65536):
                    self.requests += 1

    def close(self) -> None:
        self.sock.close()


def test_a_call_moves_to_the_next_replica_when_one_cannot_be_reached(controller: RunningController,
                                                                     tokens: dict[str, str]) -> None:
    down = f"http://127.0.0.1:{free_port_with_nothing_listening()}"
    with ControllerClient(f"{down},{controller.url}", tokens["alice"]) as client:
        # A write too: the refused connection never carried it.
        assert client.apply(shop(), "through the second replica")["revision"] == 1
        assert client.endpoint == controller.url  # and it stays there
        assert [r["revision"] for r in client.revisions()] == [1]


def test_a_write_whose_answer_was_lost_is_not_sent_again_elsewhere(controller: RunningController,
                                                                    tokens: dict[str, str]) -> None:
    lost = _Swallower()
    try:
        with ControllerClient(f"http://127.0.0.1:{lost.port},{controller.url}", tokens["alice"]) as client:
            with pytest.raises(ControllerUnavailable, match=f"127.0.0.1:{lost.port}"):
                client.apply(shop(), "may or may not be done")
            assert lost.requests >= 1
            # Nothing reached the other replica; a read may move on, and shows it.
            assert client.healthz()["revision"] == 0
            assert client.endpoint == controller.url
    finally:
        lost.close()


def test_when_no_replica_answers_each_is_named() -> None:
    ports = [free_port_with_nothing_listening() for _ in range(2)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    with ControllerClient(",".join(urls), timeout=2) as client:
        with pytest.raises(ControllerUnavailable) as caught:
            client.healthz()
    assert "no controller replica answered" in caught.value.message
    assert all(u in caught.value.message for u in urls)
