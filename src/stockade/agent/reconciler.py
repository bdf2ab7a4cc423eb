"""Make the kernel equal to the program of the desired state; the decision of how.

Called only from the agent's loop. Each call compiles the host program (pure),
reads the kernel's fingerprint, and applies the smallest correct transaction:
- nothing, when the kernel already holds exactly this program;
- set-element changes, when only group membership moved and the kernel is untouched;
- a full atomic replacement of our table otherwise (first run, drift, structure change).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

from stockade.compile.host import CompileOptions, compile_host
from stockade.dataplane.nft_driver import NftDriver
from stockade.model.state import DesiredState
from stockade.nft.ir import Ruleset
from stockade.nft.render import count_objects, full_replace, program_hash, set_delta

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    kind: Literal["none", "delta", "full"]
    revision: int
    program_hash: str
    objects_sent: int
    seconds: float
    drift_repaired: bool


class Reconciler:
    def __init__(self, driver: NftDriver, host: str, options: CompileOptions | None = None) -> None:
        self.driver = driver
        self.host = host
        self.options = options or CompileOptions(table=driver.table)
        self.applied: Ruleset | None = None
        self.applied_hash: str | None = None
        self.expected_fingerprint: str | None = None

    def reconcile(self, state: DesiredState) -> Outcome:
        started = time.monotonic()
        ruleset = compile_host(state, self.host, self.options)
        new_hash = program_hash(ruleset)
        kernel = self.driver.fingerprint()
        drifted = self.applied is not None and kernel != self.expected_fingerprint
        if drifted:
            log.warning("kernel table %s differs from the program we applied: repairing", self.driver.table)
        if not drifted and self.applied is not None and new_hash == self.applied_hash:
            self.applied = ruleset  # same program; keep the newer revision
            return Outcome("none", state.revision, new_hash, 0, time.monotonic() - started, False)
        program = None
        kind: Literal["delta", "full"] = "full"
        if not drifted and self.applied is not None:
            program = set_delta(self.applied, ruleset)
            kind = "delta"
        if program is None:
            program = full_replace(ruleset)
            kind = "full"
        self.driver.apply(program)
        self.applied, self.applied_hash = ruleset, new_hash
        self.expected_fingerprint = self.driver.fingerprint()
        return Outcome(kind, state.revision, new_hash, count_objects(program), time.monotonic() - started,
                       drifted)

    def in_sync(self) -> bool:
        """Does the kernel still hold what we applied? (False before the first apply.)"""
        return self.applied is not None and self.driver.fingerprint() == self.expected_fingerprint
