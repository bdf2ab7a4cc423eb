"""A workload's open connections carried to another host: conntrack entries out of one kernel, into another.

When a workload moves (live migration), the host it leaves holds the conntrack entries of its
open connections, and the host it arrives at has none: there, the next packet of an
established connection would be "new" (conntrack picks a TCP flow up mid-stream as a new one),
and a policy that no longer admits new connections would cut it. So the source host exports the
entries of the workload's addresses and the destination imports them before traffic is
switched; the packet then finds its entry, is `ct state established`, and passes as it did.
(Shown in the kernel: `tests/dataplane/test_conntrack_transfer.py`, which also shows the
connection breaking without the import.)

Through the `conntrack` tool (conntrack-tools, already the agent's: `dataplane.conntrack`):
`-L -o xml` to read (structured, both families), `-I` to create. Moves are rare, and a few
hundred entries a move; ctnetlink message building is not worth it here.

Invariants: an exported entry is a plain frozen value (`to_dict`/`from_dict`: JSON for the
controller to carry); an imported entry replaces one of the same tuple (an accident of the
move, see `import_connections`); only TCP and UDP entries are carried.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

from stockade.errors import DataplaneError

CARRIED = ("tcp", "udp")  # ICMP echo exchanges are short; a lost one is re-sent by its sender
# Imported entries live at least this long (s), so a connection idle during the move is not
# forgotten before its next packet; the kernel's own timeouts take over from that packet on.
MIN_TIMEOUT = 120


@dataclass(frozen=True)
class ConnectionState:
    """One conntrack entry: its two tuples, its TCP state, what the kernel knew of it."""

    family: str                 # ipv4 | ipv6
    protocol: str               # tcp | udp
    src: str
    dst: str
    sport: int | None
    dport: int | None
    reply_src: str
    reply_dst: str
    reply_sport: int | None
    reply_dport: int | None
    state: str | None           # TCP's (ESTABLISHED, ...), None for the others
    timeout: int
    assured: bool
    replied: bool
    mark: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ConnectionState:
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__})

    def touches(self, addresses: set[str]) -> bool:
        return bool({self.src, self.dst, self.reply_src, self.reply_dst} & addresses)


def _text(node: ET.Element | None, tag: str) -> str | None:
    found = node.find(tag) if node is not None else None
    return found.text if found is not None else None


def _port(node: ET.Element | None, tag: str) -> int | None:
    value = _text(node, tag)
    return int(value) if value is not None else None


def parse_xml(text: str) -> list[ConnectionState]:
    """The entries of `conntrack -L -o xml` that are carried (CARRIED protocols)."""
    out: list[ConnectionState] = []
    if not text.strip():
        return out  # no entry: the tool prints no document at all
    for flow in ET.fromstring(text).iter("flow"):
        metas = {m.get("direction"): m for m in flow.findall("meta")}
        orig, reply, info = metas.get("original"), metas.get("reply"), metas.get("independent")
        if orig is None or reply is None or info is None:
            continue
        l3, l4 = orig.find("layer3"), orig.find("layer4")
        rl3, rl4 = reply.find("layer3"), reply.find("layer4")
        if l3 is None or l4 is None or rl3 is None or rl4 is None or l4.get("protoname") not in CARRIED:
            continue
        out.append(ConnectionState(
            family=str(l3.get("protoname")), protocol=str(l4.get("protoname")),
            src=str(_text(l3, "src")), dst=str(_text(l3, "dst")), sport=_port(l4, "sport"), dport=_port(l4, "dport"),
            reply_src=str(_text(rl3, "src")), reply_dst=str(_text(rl3, "dst")),
            reply_sport=_port(rl4, "sport"), reply_dport=_port(rl4, "dport"),
            state=_text(info, "state"), timeout=int(_text(info, "timeout") or 0),
            assured=info.find("assured") is not None, replied=info.find("unreplied") is None,
            mark=int(_text(info, "mark") or 0)))
    return out


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)


def export_connections(addresses: Iterable[str]) -> list[ConnectionState]:
    """This netns's carried entries from or to any of `addresses` (a workload's)."""
    wanted = set(addresses)
    found: dict[tuple[Any, ...], ConnectionState] = {}
    for family in ("ipv4", "ipv6"):
        res = _run(["conntrack", "-L", "-f", family, "-o", "xml"])
        if res.returncode != 0:
            raise DataplaneError(["conntrack", "-L", "-f", family, "-o", "xml"], res.returncode, res.stderr)
        for entry in parse_xml(res.stdout):
            if entry.family == family and entry.touches(wanted):
                found[(entry.protocol, entry.src, entry.dst, entry.sport, entry.dport)] = entry
    return list(found.values())


def import_argv(entry: ConnectionState) -> list[str]:
    """The `conntrack -I` command that makes `entry` in this netns."""
    cmd = ["conntrack", "-I", "-p", entry.protocol, "-s", entry.src, "-d", entry.dst,
           "-r", entry.reply_src, "-q", entry.reply_dst, "-t", str(max(entry.timeout, MIN_TIMEOUT)),
           "--sport", str(entry.sport), "--dport", str(entry.dport),
           "--reply-port-src", str(entry.reply_sport), "--reply-port-dst", str(entry.reply_dport)]
    if entry.state:
        cmd += ["--state", entry.state]
    status = [flag for flag, on in (("ASSURED", entry.assured), ("SEEN_REPLY", entry.replied)) if on]
    if status:
        cmd += ["-u", ",".join(status)]
    if entry.mark:
        cmd += ["-m", str(entry.mark)]
    return cmd


def import_connections(entries: Iterable[ConnectionState]) -> int:
    """Create each entry in this netns, replacing one of the same tuple; returns how many were made.

    Replacing, because the entry this host may already hold for that tuple is not the
    connection's state but an accident of the move: while the routes change, a packet of the
    flow can pass through this host on its way to the old one and leave a fresh, unreplied
    entry here, which the sender's next packets keep alive; the flow would then stay "new"
    here, and a policy that admits no new connection would drop it for good."""
    made = 0
    for entry in entries:
        cmd = import_argv(entry)
        res = _run(cmd)
        if res.returncode != 0 and "exists" in res.stderr:
            _run(remove_argv(entry))
            res = _run(cmd)
        if res.returncode == 0 or "exists" in res.stderr:  # made, or made meanwhile by the flow itself
            made += 1
            continue
        raise DataplaneError(cmd, res.returncode, res.stderr)
    return made


def remove_argv(entry: ConnectionState) -> list[str]:
    """The `conntrack -D` command that deletes exactly `entry` (by its original tuple)."""
    return ["conntrack", "-D", "-p", entry.protocol, "-s", entry.src, "-d", entry.dst,
            "--sport", str(entry.sport), "--dport", str(entry.dport)]


def remove_connections(entries: Iterable[ConnectionState]) -> int:
    """Delete each entry in this netns; returns how many were deleted (one already gone is not)."""
    removed = 0
    for entry in entries:
        cmd = remove_argv(entry)
        res = _run(cmd)
        if res.returncode == 0:
            removed += 1
        elif "0 flow entries" not in res.stderr and "No such file" not in res.stderr:
            raise DataplaneError(cmd, res.returncode, res.stderr)
    return removed
