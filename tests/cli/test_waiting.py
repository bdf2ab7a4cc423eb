"""`--wait` (cli.waiting) reads the controller's `enforcedRevision` and every reporting agent's
`inSync`; when time runs out it names the agents that lag."""

from __future__ import annotations

from typing import Any

import pytest

from stockade.cli.waiting import wait_for_revision
from stockade.errors import TimeoutError_


class Statuses:
    """A client whose status answers come from a list (the last one repeats)."""

    def __init__(self, *answers: dict[str, Any]) -> None:
        self.answers = list(answers)
        self.asked = 0

    def status(self) -> dict[str, Any]:
        self.asked += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def _agent(host: str, revision: int, in_sync: bool = True, reporting: bool = True, error: str | None = None) -> dict[str, Any]:
    return {"host": host, "revision": revision, "inSync": in_sync, "reporting": reporting, "error": error}


def test_returns_once_the_enforced_revision_reaches_the_write() -> None:
    client = Statuses({"revision": 5, "enforcedRevision": 4, "agents": [_agent("hv1", 4), _agent("hv2", 5)]},
                      {"revision": 5, "enforcedRevision": 5, "agents": [_agent("hv1", 5), _agent("hv2", 5)]})
    status = wait_for_revision(client, 5, timeout=5, sleep=lambda s: None)
    assert status["enforcedRevision"] == 5 and client.asked == 2


def test_reads_the_controllers_enforced_revision_not_the_agents_list() -> None:
    # The list alone would say "done"; the controller's enforcedRevision says "not yet".
    client = Statuses({"revision": 5, "enforcedRevision": 4, "agents": [_agent("hv1", 5)]},
                      {"revision": 5, "enforcedRevision": 5, "agents": [_agent("hv1", 5)]})
    wait_for_revision(client, 5, timeout=5, sleep=lambda s: None)
    assert client.asked == 2


def test_an_agent_whose_kernel_does_not_match_is_not_done() -> None:
    client = Statuses({"revision": 5, "enforcedRevision": 5, "agents": [_agent("hv1", 5, in_sync=False)]},
                      {"revision": 5, "enforcedRevision": 5, "agents": [_agent("hv1", 5)]})
    wait_for_revision(client, 5, timeout=5, sleep=lambda s: None)
    assert client.asked == 2


def test_a_timeout_names_the_laggards_and_ignores_silent_agents() -> None:
    client = Statuses({"revision": 5, "enforcedRevision": 4,
                       "agents": [_agent("hv1", 5), _agent("hv2", 4, error="nft: boom"), _agent("hv3", 5, in_sync=False),
                                  _agent("hv4", 1, reporting=False)]})
    with pytest.raises(TimeoutError_) as e:
        wait_for_revision(client, 5, timeout=0, sleep=lambda s: None)
    assert e.value.message == ("revision 5 is stored, but after 0s these agents do not enforce it yet: "
                               "hv2 (at revision 4, error: nft: boom), hv3 (at revision 5)")
    assert e.value.exit_code == 7


def test_a_timeout_with_no_reporting_agent_says_so() -> None:
    client = Statuses({"revision": 5, "enforcedRevision": None, "agents": [_agent("hv1", 5, reporting=False)]})
    with pytest.raises(TimeoutError_, match=r"^revision 5 is stored, but no agent is reporting$"):
        wait_for_revision(client, 5, timeout=0, sleep=lambda s: None)
