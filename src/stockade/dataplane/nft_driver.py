"""The only code that programs the kernel's nftables: one `nft -j -f -` transaction at a time.

Thin on purpose: it runs what `nft.render` produced, lists our table back,
and fingerprints the listing so the agent can tell drift from its own work.
It never touches a table other than the one it is given.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from stockade.errors import DataplaneError
from stockade.nft.render import Json, delete_table, to_json


class CommandRunner(Protocol):
    def __call__(self, cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]: ...


def run_command(cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30, check=False)


@dataclass
class NftDriver:
    table: str = "stockade"
    family: str = "inet"
    runner: Callable[..., subprocess.CompletedProcess[str]] = run_command
    nft: str = "nft"

    def apply(self, program: Json) -> None:
        """Run one transaction; on any error the kernel keeps what it had (nft is atomic)."""
        cmd = [self.nft, "-j", "-f", "-"]
        res = self.runner(cmd, to_json(program))
        if res.returncode != 0:
            raise DataplaneError(cmd, res.returncode, res.stderr)

    def list_table(self) -> dict[str, Any] | None:
        """Our table as libnftables JSON, or None when it does not exist."""
        cmd = [self.nft, "-j", "list", "table", self.family, self.table]
        res = self.runner(cmd)
        if res.returncode != 0:
            if "No such file" in res.stderr or "does not exist" in res.stderr:
                return None
            raise DataplaneError(cmd, res.returncode, res.stderr)
        return json.loads(res.stdout)

    def fingerprint(self) -> str | None:
        """A hash of what the kernel holds, blind to handles and counter values."""
        listing = self.list_table()
        if listing is None:
            return None
        return hashlib.sha256(json.dumps(_canonical(listing), sort_keys=True).encode()).hexdigest()[:16]

    def counter(self, name: str) -> int | None:
        """Packets of a named counter object of our table, or None when it does not exist."""
        cmd = [self.nft, "-j", "list", "counter", self.family, self.table, name]
        res = self.runner(cmd)
        if res.returncode != 0:
            return None
        for item in json.loads(res.stdout).get("nftables", []):
            if isinstance(item.get("counter"), dict) and item["counter"].get("name") == name:
                return int(item["counter"].get("packets", 0))
        return None

    def delete(self) -> None:
        cmd = [self.nft, "-j", "-f", "-"]
        res = self.runner(cmd, to_json(delete_table(self.table, self.family)))
        if res.returncode != 0:
            raise DataplaneError(cmd, res.returncode, res.stderr)


def _canonical(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k in ("handle", "metainfo"):
                continue
            if k == "counter" and isinstance(v, dict):
                v = {"packets": 0, "bytes": 0}
            out[k] = _canonical(v)
        return out
    if isinstance(node, list):
        return [_canonical(x) for x in node if not (isinstance(x, dict) and "metainfo" in x)]
    return node


def counters_by_comment(listing: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Packets and bytes per rule comment (rule id), summed over the kernel rules of one policy rule."""
    out: dict[str, tuple[int, int]] = {}
    for item in listing.get("nftables", []):
        rule = item.get("rule")
        if not rule or "comment" not in rule:
            continue
        for expr in rule.get("expr", []):
            counter = expr.get("counter") if isinstance(expr, dict) else None
            if isinstance(counter, dict):
                p, b = out.get(rule["comment"], (0, 0))
                out[rule["comment"]] = (p + counter.get("packets", 0), b + counter.get("bytes", 0))
    return out
