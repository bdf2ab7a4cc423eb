"""Figure 2 — compile: desired state of N workloads and P policies → one host's program.

Times `compile_host` + `full_replace` + JSON encoding (everything the agent does
between a new revision and the `nft` call) for several hosts, on one core (the
process is pinned to CPU 0 while it measures), at the base size and at ten
times the base size. The target: the base compiles in under 1 s, and ten times
the input costs at most twelve times the time (linear, not quadratic).
Building the DesiredState (parsing pydantic models) is not timed: the agent
keeps it between revisions.
"""

from __future__ import annotations

import gc
import os
import time

from bench import synthetic
from bench.common import Figure, median
from stockade.compile.host import CompileOptions, compile_host
from stockade.model.state import DesiredState
from stockade.nft.render import full_replace, to_json

OPTIONS = CompileOptions(log_group=100)  # as the agent compiles: flow logging on


def sample_hosts(workloads: int, count: int = 5) -> list[str]:
    """Synthetic hosts spread over the fleet (each holds WORKLOADS_PER_HOST workloads)."""
    hosts = max(1, workloads // synthetic.WORKLOADS_PER_HOST)
    return [synthetic.host_of(((i * 2 + 1) * hosts // (count * 2)) * synthetic.WORKLOADS_PER_HOST)
            for i in range(count)]


def time_host(state: DesiredState, host: str) -> tuple[float, int]:
    started = time.perf_counter()
    program = to_json(full_replace(compile_host(state, host, OPTIONS)))
    return time.perf_counter() - started, len(program)


def measure(workloads: int, policies: int, repeats: int = 2) -> dict[str, float]:
    state = synthetic.state(workloads, policies)
    gc.collect()
    times: list[float] = []
    sizes: list[int] = []
    for _ in range(repeats):
        for host in sample_hosts(workloads):
            t, size = time_host(state, host)
            times.append(t)
            sizes.append(size)
    del state
    gc.collect()
    return {"seconds": median(times), "max_seconds": max(times), "program_bytes": median([float(s) for s in sizes])}


def run(workloads: int = 10_000, policies: int = 2_000, factor: int = 10, repeats: int = 2) -> Figure:
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})  # one core, as the target says
    try:
        base = measure(workloads, policies, repeats)
        big = measure(workloads * factor, policies * factor, repeats)
    finally:
        os.sched_setaffinity(0, cpus)
    ratio = big["seconds"] / base["seconds"]
    met = base["seconds"] < 1.0 and ratio <= 1.2 * factor
    return Figure(
        name="compile",
        title=f"compile one host's program: {workloads:,} wl/{policies:,} pol vs {factor}x",
        values={"workloads": workloads, "policies": policies,
                "base_s": round(base["seconds"], 4), "base_max_s": round(base["max_seconds"], 4),
                "scaled_s": round(big["seconds"], 4), "scaled_max_s": round(big["max_seconds"], 4),
                "base_program_bytes": int(base["program_bytes"]),
                "scaled_program_bytes": int(big["program_bytes"]), "factor": factor},
        ratio=round(ratio, 2),
        target=f"base < 1 s; {factor}x input <= {1.2 * factor:g}x time",
        met=met,
        notes=[f"median over {repeats}x{len(sample_hosts(workloads))} hosts, pinned to one CPU"],
    )
