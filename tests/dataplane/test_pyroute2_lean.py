"""The agent's netlink readers load pyroute2's netlink modules, not the whole package; the rest of
pyroute2 still appears on first use of a name only its __init__ defines."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_the_flow_readers_do_not_run_pyroute2s_package_init() -> None:
    out = _run("import sys, stockade.dataplane.conntrack, stockade.dataplane.nflog\n"
               "from stockade.dataplane.pyroute2_lean import is_lean\n"
               "print(is_lean(), *sorted(m for m in sys.modules if m.startswith(('pyroute2.ndb', 'pyroute2.iproute',"
               " 'sqlite3', 'unittest'))))")
    assert out == "True"


def test_the_rest_of_pyroute2_appears_on_first_use() -> None:
    out = _run("import stockade.dataplane.conntrack\n"
               "from pyroute2 import IPRoute, netns\n"
               "import pyroute2\n"
               "from stockade.dataplane.pyroute2_lean import is_lean\n"
               "print(is_lean(), IPRoute.__name__, netns.__name__, pyroute2.__version__ != 'unknown',"
               " hasattr(pyroute2, 'nope'))")
    assert out == "False IPRoute pyroute2.netns True False"
