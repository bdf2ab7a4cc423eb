"""The only code that programs the kernel's nftables: one `nft -j -f -` transaction at a time.

Thin on purpose: it runs what `nft.render` produced, lists our table back,
and fingerprints the listing so the agent can tell drift from its own work.
It never touches a table other than the one it is given and that table's bridge-family
companion (`nft.ir.ports_table`: the bridge ports of bridged workloads), which it lists and
fingerprints with it, absent or not.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from dataclasses import dataclass
from typing import Any, Callable

from stockade.dataplane import libnft
from stockade.dataplane.nft_generation import ruleset_generation
from stockade.errors import DataplaneError
from stockade.nft.ir import FQDN_SET_PREFIX, ports_table
from stockade.nft.render import Json, delete_table, to_json


def run_command(cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `cmd`; `nft -j ...` runs in-process through libnftables when it is there (see
    `dataplane.libnft`: the same library, without a process per call), anything else as a process."""
    nft_args = _libnft_args(cmd, stdin)
    if nft_args is not None:
        code, out, err = libnft.run(*nft_args)
        return subprocess.CompletedProcess(cmd, code, out, err)
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30, check=False)


def _libnft_args(cmd: list[str], stdin: str | None) -> tuple[str, bool] | None:
    """(command buffer, JSON output) for the two shapes the driver uses, when libnftables is loaded."""
    if len(cmd) < 3 or cmd[0] != "nft" or cmd[1] != "-j" or not libnft.available():
        return None
    if cmd[2:] == ["-f", "-"] and stdin is not None:
        return stdin, True
    if cmd[2] == "list" and stdin is None:
        return " ".join(cmd[2:]), True
    return None


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

    def check(self, program: Json) -> None:
        """Ask the kernel whether it would take `program` (`nft --check`: nothing is committed);
        DataplaneError with its answer when not."""
        cmd = [self.nft, "-c", "-j", "-f", "-"]
        res = self.runner(cmd, to_json(program))
        if res.returncode != 0:
            raise DataplaneError(cmd, res.returncode, res.stderr)

    def list_table(self) -> dict[str, Any] | None:
        """Our table as libnftables JSON, or None when it does not exist."""
        return self._list(self.family, self.table)

    def list_ports_table(self) -> dict[str, Any] | None:
        """Our bridge-family table (bridged workloads' ports) as libnftables JSON, or None."""
        return self._list("bridge", ports_table(self.table))

    def _list(self, family: str, table: str) -> dict[str, Any] | None:
        cmd = [self.nft, "-j", "list", "table", family, table]
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
        text = _canonical_text(listing)
        # The bridge table is part of the program: its drift (or its removal, or one left over
        # by a program that no longer has bridged workloads) must change the fingerprint too.
        ports = self.list_ports_table()
        if ports is not None:
            text += "\0bridge\0" + _canonical_text(ports)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def generation(self) -> int | None:
        """The netns's nftables ruleset generation (bumped by every committed transaction, to any
        table), or None when it cannot be read here: only with the default runner, whose
        libnftables runs in this thread's netns (a runner that enters another netns would make
        this thread's generation meaningless)."""
        if self.runner is not run_command or not libnft.available():
            return None
        try:
            return ruleset_generation()
        except OSError:
            return None

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
        program = delete_table(self.table, self.family)
        program["nftables"] += delete_table(ports_table(self.table), "bridge")["nftables"]
        res = self.runner(cmd, to_json(program))
        if res.returncode != 0:
            raise DataplaneError(cmd, res.returncode, res.stderr)


# In the JSON text (keys sorted), a handle and a counter's values; inside a string every quote
# is escaped, so these patterns only ever match keys.
_HANDLE = re.compile(r'"handle": \d+(, )?')
_COUNTS = re.compile(r'"(bytes|packets)": \d+')


def _canonical_text(listing: dict[str, Any]) -> str:
    """The listing as text blind to handles, counter values and metainfo, made by the C JSON
    encoder and regular expressions: the drift check runs every second, and walking the listing
    in Python was most of an idle agent's CPU."""
    items = [_without_learned(i) for i in listing.get("nftables", []) if not (isinstance(i, dict) and "metainfo" in i)]
    text = json.dumps(items, sort_keys=True)
    return _COUNTS.sub(r'"\1": 0', _HANDLE.sub("", text))


def _without_learned(item: Any) -> Any:
    """A set of addresses learned from DNS (`fqdn_*`, see nft.ir.NamedSet) without its elements:
    they come and go with DNS answers and TTLs, which is not drift."""
    body = item.get("set") if isinstance(item, dict) else None
    if isinstance(body, dict) and str(body.get("name", "")).startswith(FQDN_SET_PREFIX) and "elem" in body:
        return {"set": {k: v for k, v in body.items() if k != "elem"}}
    return item


_CHAIN_DIRECTIONS = {"_eg": "egress", "_in": "ingress"}  # compile.program.DIR_SUFFIX, as chain names end


def counters_by_rule(listing: dict[str, Any]) -> dict[tuple[str, str], tuple[int, int]]:
    """Packets and bytes per (rule id, direction): the direction from the chain the kernel rule is
    in (policy, record and workload chains end `_eg`/`_in`), else from an id that says it
    (`ns/default-deny/egress`), else ""."""
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for item in listing.get("nftables", []):
        rule = item.get("rule")
        if not rule or "comment" not in rule:
            continue
        comment = rule["comment"]
        chain = str(rule.get("chain", ""))
        direction = _CHAIN_DIRECTIONS.get(chain[-3:]) or next(
            (d for d in ("egress", "ingress") if comment.endswith("/" + d)), "")
        for expr in rule.get("expr", []):
            counter = expr.get("counter") if isinstance(expr, dict) else None
            if isinstance(counter, dict):
                p, b = out.get((comment, direction), (0, 0))
                out[(comment, direction)] = (p + counter.get("packets", 0), b + counter.get("bytes", 0))
    return out


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
