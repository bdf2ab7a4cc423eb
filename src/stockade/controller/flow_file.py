"""The flow records' JSON-lines file: what makes the controller's flow history outlive it, and
what a SIEM's shipper (Vector, Fluent Bit, Filebeat) tails. Schema: docs/flows.md.

One line per accepted record: the record as `GET /api/v1/flows` returns it (with its `seq`),
plus `received`, the controller's UTC time when it accepted the record. The file grows to
`max_bytes`, then is rotated: PATH.N is removed, PATH.i becomes PATH.i+1, PATH becomes PATH.1
and a new PATH is started (the scheme logrotate's and every shipper's "rotated by rename" mode
follow). So the disk holds at most about (keep + 1) × max_bytes, whatever the flow rate.

On start the controller reads the newest `limit` records back (`read_newest`), newest file
first, into its in-memory ring, and numbers on after the highest seq found.

Invariants:
- Lines are written whole and in seq order (the caller serialises `write`; `FlowLog` does).
- A line that cannot be parsed (a crash tore the last one, or a disk filled mid-line) is
  skipped on reading, and counted; reading never fails because of one. Appending to a file
  whose last line is torn first ends that line, so the torn one is the only one lost.
- A write that fails (disk full, read-only, a file removed underneath) never fails the caller:
  the records stay in memory, the failure is counted in `dropped`, logged once until a write
  succeeds again, and the next write opens the file anew.
- Records carry no secret (agents send addresses, ports, names, verdicts and rule ids only),
  so nothing here needs redacting.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator, Sequence

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_KEEP = 4


def rotated(path: Path, i: int) -> Path:
    """The i-th rotated file of `path` (0: the file being written)."""
    return path if i == 0 else path.with_name(f"{path.name}.{i}")


@dataclass(frozen=True)
class ReadBack:
    """What `read_newest` found: the lines (oldest first) and how many lines it skipped."""

    lines: tuple[dict[str, Any], ...]
    skipped: int


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("seq"), int) or isinstance(doc.get("seq"), bool):
        return None
    return doc


def read_newest(path: Path, keep: int, limit: int) -> ReadBack:
    """The newest `limit` well-formed lines of `path` and its `keep` rotated files, oldest first
    (by seq). Missing files are no error; unparsable lines are skipped and counted."""
    found: list[dict[str, Any]] = []
    skipped = 0
    for i in range(keep + 1):
        if len(found) >= limit:
            break
        try:
            data = rotated(path, i).read_bytes()
        except FileNotFoundError:
            continue
        # Newest line first, and only as many as wanted: a start parses `limit` lines, not the disk.
        for raw in reversed(data.splitlines()):
            if len(found) >= limit:
                break
            if not raw.strip():
                continue
            doc = _parse(raw)
            if doc is None:
                skipped += 1
            else:
                found.append(doc)
    found.sort(key=lambda d: d["seq"])
    return ReadBack(tuple(found[-limit:]) if limit > 0 else (), skipped)


def _ends_a_line(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


class FlowFile:
    """Appends flow records as JSON lines to `path`, rotating by size. Not thread-safe on its own:
    one writer at a time (FlowLog holds its sink lock around `write`)."""

    name = "file"

    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES, keep: int = DEFAULT_KEEP) -> None:
        if max_bytes < 1024:
            raise ValueError(f"flow log {path}: max_bytes must be at least 1024 (got {max_bytes})")
        if keep < 0:
            raise ValueError(f"flow log {path}: keep must not be negative (got {keep})")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = keep
        self.written = 0
        self.dropped = 0
        self._file: IO[bytes] | None = None
        self._size = 0
        self._failing = False
        self._lock = threading.Lock()  # counters are read by the metrics scrape

    def write(self, lines: Sequence[dict[str, Any]]) -> None:
        """Append `lines` (each one JSON object); rotate first when they would overflow the file."""
        if not lines:
            return
        data = b"".join(json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode() + b"\n" for d in lines)
        try:
            for chunk in self._chunks(data):
                self._append(chunk)
        except OSError as e:
            self._close_quietly()
            with self._lock:
                self.dropped += len(lines)
            if not self._failing:
                self._failing = True
                log.error("flow log %s: cannot write (%s); flow records stay in memory only until it can", self.path, e)
            return
        with self._lock:
            self.written += len(lines)
        if self._failing:
            self._failing = False
            log.warning("flow log %s: writing again", self.path)

    def counts(self) -> tuple[int, int]:
        """(records written, records the file could not take)."""
        with self._lock:
            return self.written, self.dropped

    def close(self) -> None:
        self._close_quietly()

    def _chunks(self, data: bytes) -> Iterator[bytes]:
        """`data` cut at line ends into pieces of at most max_bytes (a batch bigger than a whole file
        still rotates between lines, never inside one)."""
        while len(data) > self.max_bytes:
            cut = data.rfind(b"\n", 0, self.max_bytes) + 1
            if cut <= 0:  # one line longer than a file: it gets a file of its own
                cut = data.find(b"\n") + 1
            yield data[:cut]
            data = data[cut:]
        if data:
            yield data

    def _append(self, chunk: bytes) -> None:
        f = self._open()
        if self._size and self._size + len(chunk) > self.max_bytes:
            self._rotate()
            f = self._open()
        f.write(chunk)
        f.flush()  # to the kernel: a shipper tailing the file sees whole lines at once
        self._size += len(chunk)

    def _open(self) -> IO[bytes]:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")
            os.chmod(self.path, 0o640)  # addresses and names of workloads: not for every local user
            self._size = self._file.tell()
            if self._size and not _ends_a_line(self.path):
                # A crash tore the last line: end it, so that only it is lost, not the next one too.
                self._file.write(b"\n")
                self._size += 1
        return self._file

    def _rotate(self) -> None:
        self._close_quietly()
        if self.keep == 0:
            self.path.unlink(missing_ok=True)
            return
        rotated(self.path, self.keep).unlink(missing_ok=True)
        for i in range(self.keep - 1, -1, -1):
            src = rotated(self.path, i)
            if src.exists():
                os.replace(src, rotated(self.path, i + 1))

    def _close_quietly(self) -> None:
        f, self._file, self._size = self._file, None, 0
        if f is not None:
            try:
                f.close()
            except OSError:
                pass
