"""Make the kernel equal to the program of the desired state; the decision of how.

Called only from the agent's loop (reconcile and the drift check may run in two worker
threads at once; a lock keeps them apart). Each call compiles the host program (pure),
checks that the kernel still holds what was applied last, and applies the smallest
correct transaction:
- nothing, when the kernel already holds exactly this program;
- set-element changes, when only group membership moved and the kernel is untouched;
- a full atomic replacement of our table otherwise (first run, drift, structure change), and
  of its bridge-family companion in the same transaction (bridged workloads: compile.bridge),
  or that companion's removal when the program has none;
- when the kernel refuses the program, the same without the local workloads whose part it
  refuses (agent.refusals), which are reported as not programmed: one object never stops a
  host from enforcing the rest.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Literal, Protocol

from stockade.agent.fqdn_learning import LearnedNames, fqdn_set_names
from stockade.agent.refusals import isolate_refused
from stockade.compile.host import (
    CompileOptions,
    HostProgram,
    NotProgrammed,
    compile_host_program,
    programmable_workloads,
)
from stockade.errors import DataplaneError
from stockade.model.state import DesiredState
from stockade.nft.ir import Ruleset, ports_table
from stockade.nft.render import (
    count_objects,
    delete_table,
    full_replace,
    learned_elements,
    program_hash,
    set_delta,
    structure_digest,
)

log = logging.getLogger(__name__)


class TableDriver(Protocol):
    """What the agent needs of the kernel's copy of our table. The real one is
    `dataplane.nft_driver.NftDriver`; tests of the agent's decisions pass a fake whose "kernel"
    they control (the real-kernel tests use the real one)."""

    table: str

    def apply(self, program: dict[str, Any]) -> None: ...
    def check(self, program: dict[str, Any]) -> None: ...  # raises DataplaneError where apply would
    def list_table(self) -> dict[str, Any] | None: ...
    def fingerprint(self) -> str | None: ...
    def generation(self) -> int | None: ...


@dataclass(frozen=True)
class Outcome:
    kind: Literal["none", "delta", "full"]
    revision: int
    program_hash: str
    objects_sent: int
    seconds: float
    drift_repaired: bool
    # Local workloads the program leaves out (an interface taken twice, or the host's own).
    not_programmed: tuple[NotProgrammed, ...] = ()


class Reconciler:
    """Knows what it applied and how to tell whether the kernel still holds it.

    The kernel's table is known to be ours at a ruleset generation (`driver.generation()`:
    the netns's count of committed nftables transactions) or, where the generation cannot be
    read, by the fingerprint of its listing. While the generation is unchanged nothing can
    have changed the table, so neither the drift check nor a reconcile lists it: a label
    change costs its delta transaction and two tiny netlink reads instead of two dumps of the
    table (docs/performance.md). The fingerprint of what we applied is taken by a drift check
    instead, off the path of the change, once the table has gone `fingerprint_quiet` seconds
    without a change of ours: listing the table costs ~2 ms for a lab host and far more at
    scale, and while policy churns each listing would be outdated by the next change (and
    would compete with it for the CPU). From then on a transaction by someone else is told
    from a change to our table by comparing fingerprints. A transaction by someone else
    before that fingerprint was taken counts as drift (a full replace: safe).
    """

    def __init__(self, driver: TableDriver, host: str, options: CompileOptions | None = None,
                 fingerprint_quiet: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 learned: LearnedNames | None = None) -> None:
        self.driver = driver
        self.learned = learned  # addresses learned from DNS, put back by every full replace
        self.host = host
        self.options = options or CompileOptions(table=driver.table)
        self.fingerprint_quiet = fingerprint_quiet
        self.clock = clock
        self.applied_at: float | None = None  # clock() when our last transaction committed
        self.applied: Ruleset | None = None
        self.applied_hash: str | None = None
        self.expected_fingerprint: str | None = None
        self.expected_generation: int | None = None
        self.applied_structure: str | None = None  # digest of the applied program without set elements
        self._lock = threading.Lock()

    def reconcile(self, state: DesiredState) -> Outcome:
        with self._lock:
            return self._reconcile(state)

    def in_sync(self) -> bool:
        """Does the kernel still hold what we applied? (False before the first apply.)"""
        with self._lock:
            return self._in_sync(take_fingerprint=True)

    def _reconcile(self, state: DesiredState) -> Outcome:
        started = time.monotonic()
        compiled = compile_host_program(state, self.host, self.options)
        ruleset = compiled.ruleset
        drifted = self.applied is not None and not self._in_sync(take_fingerprint=False)
        if drifted:
            log.warning("kernel table %s differs from the program we applied: repairing", self.driver.table)
        delta = set_delta(self.applied, ruleset) if self.applied is not None and not drifted else None
        # A delta exists only when the structure is the applied one, so its digest is known.
        structure = (self.applied_structure if delta is not None else None) or structure_digest(ruleset)
        new_hash = program_hash(ruleset, structure)
        if delta is not None and new_hash == self.applied_hash:
            self.applied = ruleset  # same program; keep the newer revision
            return Outcome("none", state.revision, new_hash, 0, time.monotonic() - started, False,
                           compiled.not_programmed)
        program, kind = (delta, "delta") if delta is not None else (self._full(ruleset), "full")
        try:
            self.driver.apply(program)
        except DataplaneError as refusal:
            # One object the kernel will not take must not stop this host from enforcing the
            # others: program everything else, and report the workloads left out.
            compiled = self._without_refused(state, refusal)
            ruleset, kind = compiled.ruleset, "full"
            structure = structure_digest(ruleset)
            new_hash = program_hash(ruleset, structure)
            program = self._full(ruleset)
            self.driver.apply(program)
        self.applied, self.applied_hash, self.applied_structure = ruleset, new_hash, structure
        self.applied_at = self.clock()
        self.expected_generation = self.driver.generation()
        # Without a generation, the listing is the only way to know the table later; with one,
        # the next drift check takes it (see the class docstring).
        self.expected_fingerprint = self.driver.fingerprint() if self.expected_generation is None else None
        return Outcome(kind, state.revision, new_hash, count_objects(program), time.monotonic() - started,
                       drifted, compiled.not_programmed)

    def _full(self, ruleset: Ruleset) -> dict[str, Any]:
        """The full replace of `ruleset`; when it has no bridge table (no bridged workloads) and
        one may be in the kernel (ours from the last program, or left by an agent before this
        one), also its removal: a leftover would still mark and check the ports it names."""
        program = full_replace(ruleset, self.learned.elements_for(ruleset) if self.learned is not None else None)
        if ruleset.ports is None and (self.applied.ports is not None if self.applied is not None
                                      else self._kernel_has_ports_table()):
            program["nftables"] += delete_table(ports_table(self.driver.table), "bridge")["nftables"]
        return program

    def add_learned(self, elements: list[tuple[str, str, int]]) -> bool:
        """Put addresses learned from DNS into the fqdn sets of the applied program: (set, address,
        timeout). Under the reconcile lock, so that no full replace built before them can commit
        after them and drop them; and not drift: when the kernel held exactly our program before
        this write, it still does after it. False when there is no applied program (nothing to add to)."""
        with self._lock:
            if self.applied is None:
                return False
            known = fqdn_set_names(self.applied)
            by_set: dict[str, list[tuple[str, int]]] = {}
            for name, ip, timeout in elements:
                if name in known:
                    by_set.setdefault(name, []).append((ip, timeout))
            if not by_set:
                return False
            before = self.driver.generation()
            ours = before is not None and before == self.expected_generation
            self.driver.apply({"nftables": [learned_elements(self.applied, n, a) for n, a in sorted(by_set.items())]})
            if ours:
                self.expected_generation = self.driver.generation()
            return True

    def _kernel_has_ports_table(self) -> bool:
        """Is a bridge table of ours in the kernel before our first apply? Asked of drivers that
        can list it (the real one; the agent's decision tests' fakes hold the inet table only)."""
        lister = getattr(self.driver, "list_ports_table", None)
        return lister is not None and lister() is not None

    def _without_refused(self, state: DesiredState, refusal: DataplaneError) -> HostProgram:
        """The host's program without the local workloads whose part the kernel refuses (found
        with `nft --check`, see agent.refusals); re-raises `refusal` when the refusal is no
        workload's, so that the kernel keeps what it had."""
        local, _ = programmable_workloads(state, self.host, self.options.reserved_interfaces)
        reason = f"the kernel refused this workload's part of the program: {_kernel_message(refusal)}"

        def options_without(left_out: Iterable[str]) -> CompileOptions:
            return replace(self.options, left_out=tuple((name, reason) for name in sorted(left_out)))

        def accepted(left_out: frozenset[str]) -> bool:
            try:
                self.driver.check(full_replace(
                    compile_host_program(state, self.host, options_without(left_out)).ruleset))
            except DataplaneError:
                return False
            return True

        refused = isolate_refused([f"{ns}/{name}" for (ns, name), _ in local], accepted)
        if refused is None:
            raise refusal
        log.error("the kernel refused the program of revision %d because of %s: enforcing everything else (%s)",
                  state.revision, ", ".join(refused), _kernel_message(refusal))
        return compile_host_program(state, self.host, options_without(refused))

    def _in_sync(self, take_fingerprint: bool) -> bool:
        """`take_fingerprint`: when our table's fingerprint is still to be taken and the table
        has been quiet long enough (see the class docstring), take it now; the drift check does,
        a reconcile does not (a burst of changes would list the table once each)."""
        if self.applied is None:
            return False
        generation = self.driver.generation() if self.expected_generation is not None else None
        if generation is not None and generation == self.expected_generation:
            if self.expected_fingerprint is None and take_fingerprint and self._quiet():
                self.expected_fingerprint = self.driver.fingerprint()
            return True
        if self.expected_fingerprint is None:
            return False  # someone committed before we knew our table's fingerprint: repair
        if self.driver.fingerprint() != self.expected_fingerprint:
            return False
        self.expected_generation = generation  # another table changed, ours did not
        return True

    def _quiet(self) -> bool:
        return self.applied_at is None or self.clock() - self.applied_at >= self.fingerprint_quiet


def _kernel_message(refusal: DataplaneError) -> str:
    """The kernel's one-line reason (nft's `Error: ...` line), without the program it quotes."""
    lines = [line.strip() for line in (refusal.stderr or "").splitlines() if line.strip()]
    for line in lines:
        if line.startswith("Error:"):
            return line[:200]
    return (lines[0] if lines else f"exit status {refusal.returncode}")[:200]
