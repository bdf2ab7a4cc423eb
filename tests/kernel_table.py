"""Our nftables table in a scratch network namespace: the helpers of the real-kernel tests of the
driver (tests/dataplane/test_nft_driver.py) and of the reconciler (tests/agent/test_reconciler.py).

Root, nftables and `ip netns` are needed (marker `kernel`). Every namespace is uniquely named and
deleted when its context ends, also when the test fails. The driver runs inside it through an
injected runner (`ip netns exec NAME ...`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from typing import Any, Callable, Iterator, TypeVar

import pytest

from stockade.agent.reconciler import Reconciler
from stockade.dataplane.nft_driver import NftDriver, run_command
from stockade.nft.ir import Accept, Chain, Jump, Rule, Ruleset
from tests.golden_states import HOST

F = TypeVar("F", bound=Callable[..., Any])

needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ip"),
                                reason="needs root, nft and ip")
KERNEL = [pytest.mark.kernel, needs_root]  # a module's `pytestmark`


def kernel(test: F) -> F:
    """One test that needs the real kernel, in a module whose other tests do not."""
    return pytest.mark.kernel(needs_root(test))


OTHER_TABLE = """
table inet other {
    set keep { type ipv4_addr; elements = { 192.0.2.1 } }
    chain keep_chain {
        type filter hook forward priority 5; policy accept;
        ip saddr @keep counter accept comment "not ours"
    }
}
"""


class Netns:
    def __init__(self, name: str) -> None:
        self.name = name

    def runner(self, cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_command(["ip", "netns", "exec", self.name, *cmd], stdin)

    def nft(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = self.runner(["nft", *args], stdin)
        if check:
            assert res.returncode == 0, f"nft {' '.join(args)}: {res.stderr}"
        return res

    def listing(self, family: str, table: str) -> list[dict]:
        """The table's JSON listing without handles and metainfo (comparable across applies)."""
        out = json.loads(self.nft("-j", "list", "table", family, table).stdout)
        return _strip(out)["nftables"]


def _strip(node):
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k not in ("handle",)}
    if isinstance(node, list):
        return [_strip(x) for x in node if not (isinstance(x, dict) and "metainfo" in x)]
    return node


@contextlib.contextmanager
def scratch_netns(prefix: str = "stkt") -> Iterator[Netns]:
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        yield Netns(name)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


@contextlib.contextmanager
def another_programs_table(netns: Netns) -> Iterator[list[dict]]:
    """Another program's table, which must survive everything we do."""
    netns.nft("-f", "-", stdin=OTHER_TABLE)
    before = netns.listing("inet", "other")
    yield before
    assert netns.listing("inet", "other") == before, "the driver touched a table that is not its own"


def chains_in(listing: list[dict]) -> set[str]:
    return {item["chain"]["name"] for item in listing if "chain" in item}


def set_elements(listing: list[dict], set_name: str) -> set[str]:
    """Elements of one set in a listing, as `addr` or `addr/len` strings."""
    for item in listing:
        s = item.get("set")
        if s and s["name"] == set_name:
            out = set()
            for e in s.get("elem", []):
                if isinstance(e, dict) and "prefix" in e:
                    out.add(f"{e['prefix']['addr']}/{e['prefix']['len']}")
                elif isinstance(e, dict) and "range" in e:
                    out.add("-".join(e["range"]))
                else:
                    out.add(json.dumps(e) if not isinstance(e, str) else e)
            return out
    raise AssertionError(f"no set {set_name} in the listing")


def set_named(rs: Ruleset, prefix: str, family: int) -> str:
    (name,) = [s.name for s in rs.sets if s.name.startswith(prefix) and s.name.endswith(f"_{family}")]
    return name


def broken_ruleset(table: str = "stockade") -> Ruleset:
    """Valid IR, refused by the kernel: a jump to a chain that does not exist."""
    return Ruleset(table, chains=(Chain("egress", (Rule((), Jump("no_such_chain")),)),
                                  Chain("ok", (Rule((), Accept(), "fine"),))))


# ------------------------------------------------------------ fixtures both test modules import

@pytest.fixture
def netns() -> Iterator[Netns]:
    with scratch_netns("stkt") as ns:
        yield ns


@pytest.fixture
def other_table(netns: Netns) -> Iterator[list[dict]]:
    """Another program's table, which must survive everything we do."""
    with another_programs_table(netns) as before:
        yield before


@pytest.fixture
def driver(netns: Netns) -> NftDriver:
    return NftDriver(runner=netns.runner)


@pytest.fixture
def reconciler(driver: NftDriver) -> Reconciler:
    return Reconciler(driver, HOST)

