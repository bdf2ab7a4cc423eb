"""The whole suite: refuse to start on a machine that lacks what the tests call (see preflight)."""

from __future__ import annotations

import pytest

from tests import preflight


def pytest_sessionstart(session: pytest.Session) -> None:
    # `-m "not kernel"` (make test-unit) needs neither root nor the kernel tools.
    kernel_tests = "not kernel" not in (session.config.getoption("markexpr") or "")
    found = preflight.problems(kernel_tests=kernel_tests)
    if found:
        pytest.exit("preflight: this machine cannot run the test suite:\n  - " + "\n  - ".join(found), returncode=3)
