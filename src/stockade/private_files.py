"""Write a file that must never be readable by others, or half written: one way, used everywhere.

The bytes go to a fresh sibling made with its final mode by O_CREAT|O_EXCL (and fchmod'ed to it
before the first byte, so a umask can neither widen nor narrow it), which is then renamed over
the target. Never a truncation in place: a file left with wider rights (an older version, a hand
edit) would hold the new secret under its old mode until a chmod after the write, and a crash
mid-write would leave a torn file. With `durable`, the data and the rename are fsynced, so after
a power cut the file is the old one or the new one.

Used for tokens and CLI config (client_config, lab.state), keys and certificates (lab.pki), and
the agent's saved program (agent.saved_program).
"""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, data: str | bytes, mode: int = 0o600, durable: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data.encode() if isinstance(data, str) else data)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power cut
        finally:
            os.close(directory)
