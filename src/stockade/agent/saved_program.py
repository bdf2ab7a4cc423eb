"""The last program this agent applied, kept on local disk, so that a host enforces it again at
boot before the controller can be reached (fail closed across a reboot).

Written atomically and private (`private_files.write_private`, durable: fsync, rename, fsync of
the directory): after a power cut the file holds either the previous program or the new one. Only the
agent's loop writes it, off the path of a change (see `Agent._save_loop`). A file that cannot
be read back is ignored with a warning: the agent then waits for the controller, as before.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stockade.nft.ir import Ruleset
from stockade.nft.render import full_replace
from stockade.private_files import write_private

log = logging.getLogger(__name__)

FORMAT = 1


@dataclass(frozen=True)
class Saved:
    revision: int
    program_hash: str
    program: dict[str, Any]  # a full-replace transaction of our table (nft JSON)
    cluster_id: str | None   # the identity of the store the program came from


class SavedProgram:
    def __init__(self, path: Path) -> None:
        self.path = path

    def save(self, ruleset: Ruleset, program_hash: str, cluster_id: str | None) -> None:
        body = json.dumps({"format": FORMAT, "revision": ruleset.revision, "programHash": program_hash,
                           "clusterId": cluster_id, "program": full_replace(ruleset)}, separators=(",", ":"))
        write_private(self.path, body, durable=True)

    def load(self) -> Saved | None:
        try:
            doc = json.loads(self.path.read_text())
            if doc.get("format") != FORMAT or not isinstance(doc.get("program"), dict):
                raise ValueError(f"unknown format {doc.get('format')!r}")
            cluster = doc.get("clusterId")
            return Saved(int(doc["revision"]), str(doc["programHash"]), doc["program"],
                         str(cluster) if cluster else None)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("saved program %s cannot be read (%s): waiting for the controller instead", self.path, e)
            return None
