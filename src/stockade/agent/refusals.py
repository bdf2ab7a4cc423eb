"""Which local workloads' part of a program the kernel refuses: found by halving. Pure.

Validation and the compiler keep every refusal they know of from reaching the
kernel. This is the last line for the ones nobody foresaw (a kernel limit, an
object stored before a check existed): one refused object must not stop a host
from enforcing everyone else's changes. The agent asks the kernel (`nft --check`,
nothing committed) about programs that leave out some local workloads, and
finds a smallest set to leave out by halving: about 2·k·log2(n) checks for k
culprits among n workloads.

Invariant: a workload is reported only if the program with it, and without the
others reported, is refused; and the program without all of them is accepted.
"""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


def isolate_refused(candidates: Sequence[T], accepted: Callable[[frozenset[T]], bool]) -> list[T] | None:
    """The candidates to leave out so that `accepted(left_out)` holds, or None when leaving
    them all out is refused too (the refusal is not any workload's: the host keeps what it had).

    `accepted(left_out)` answers whether the program without `left_out` is accepted.
    """
    everything = frozenset(candidates)
    if not accepted(everything):
        return None

    def search(part: Sequence[T], others_left_out: frozenset[T]) -> list[T]:
        # Known: the program without `part` and `others_left_out` is accepted.
        if accepted(others_left_out):
            return []            # `part` may all go in
        if len(part) == 1:
            return list(part)    # with it in, refused; without it, accepted
        half = len(part) // 2
        left, right = part[:half], part[half:]
        bad_left = search(left, others_left_out | frozenset(right))
        return bad_left + search(right, others_left_out | frozenset(bad_left))

    return search(list(candidates), frozenset())
