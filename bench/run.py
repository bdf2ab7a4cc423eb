"""`make bench`: run every figure, print the table, write bench/results.json.

    python -m bench.run [--quick] [--only packets,compile,...] [--output PATH]

Each figure runs in turn with its own time limit (SIGALRM) and cleans up its
namespaces and processes itself, also when it fails; a failed figure is
recorded as missed with its error and the run goes on. `--quick` runs every
figure at tiny sizes (what the smoke test does).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from bench import compile as compile_bench
from bench import fqdn, memory, migration, packets, replicated, rollout, txsize
from bench.common import REPO, Figure

# name → (full run, quick run, time limit in seconds of the full run)
FIGURES: dict[str, tuple[Callable[[], Figure], Callable[[], Figure], int]] = {
    "packets": (lambda: packets.run(rounds=5, seconds=4.0),
                lambda: packets.run(large=(200, 40), rounds=1, seconds=1.0, naive_cap=500), 420),
    "compile": (lambda: compile_bench.run(10_000, 2_000, 10),
                lambda: compile_bench.run(100, 20, 10, repeats=1), 300),
    "rollout": (lambda: rollout.run(20, 30, 100),
                lambda: rollout.run(2, 3, 3, small_hosts=0), 600),
    "txsize": (lambda: txsize.run((1_000, 200), (10_000, 2_000)),
               lambda: txsize.run((50, 10), (500, 100)), 180),
    "memory": (lambda: memory.run(10_000, 2_000),
               lambda: memory.run(200, 40), 300),
    "replicated": (lambda: replicated.run(4, 20, 20),
                   lambda: replicated.run(2, 2, 2), 600),
    "migration": (lambda: migration.run(6, 10),
                  lambda: migration.run(1, 2), 300),
    "fqdn": (lambda: fqdn.run(10_000, 300, 2000),
             lambda: fqdn.run(20, 10, 100), 300),
}


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise _Timeout()


def run_one(name: str, quick: bool) -> Figure:
    full, small, limit = FIGURES[name]
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(limit if not quick else max(60, limit // 3))
    started = time.monotonic()
    try:
        fig = (small if quick else full)()
    except _Timeout:
        fig = Figure(name, name, {}, None, "-", False, [f"timed out after {limit} s"])
    except Exception as e:  # noqa: BLE001 - one broken figure must not hide the others
        traceback.print_exc()
        fig = Figure(name, name, {}, None, "-", False, [f"failed: {e!r}"[:500]])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    fig.values["bench_seconds"] = round(time.monotonic() - started, 1)
    return fig


def machine() -> dict[str, Any]:
    mem_kib = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                    if line.startswith("MemTotal")), 0)
    return {"cpus": os.cpu_count(), "memory_gib": round(mem_kib / 1024 / 1024, 1), "kernel": platform.release(),
            "python": platform.python_version()}


def render(figures: list[Figure], console: Console) -> None:
    table = Table(title="Stockade benchmarks: ratios measured in one run")
    for col in ("figure", "measured", "ratio", "target", "met"):
        table.add_column(col, overflow="fold")
    for f in figures:
        shown = ", ".join(f"{k}={v}" for k, v in f.values.items() if not isinstance(v, dict))
        table.add_row(f"{f.name}\n[dim]{f.title}[/dim]", shown, "-" if f.ratio is None else f"{f.ratio:g}",
                      f.target, "[green]yes[/green]" if f.met else "[red]no[/red]")
    console.print(table)
    for f in figures:
        for note in f.notes:
            console.print(f"[dim]{f.name}: {note}[/dim]", highlight=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    parser.add_argument("--only", default="", help="comma-separated figures: " + ",".join(FIGURES))
    parser.add_argument("--output", default=str(REPO / "bench" / "results.json"))
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(FIGURES)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        parser.error(f"unknown figures: {', '.join(unknown)}")
    if os.geteuid() != 0:
        print("make bench needs root (network namespaces, nftables)", file=sys.stderr)
        return 2
    console = Console(width=None if sys.stdout.isatty() else 160)
    started = time.monotonic()
    figures = []
    for name in names:
        console.print(f"[bold]{name}[/bold] ...", highlight=False)
        fig = run_one(name, args.quick)
        console.print(f"  {name}: ratio {fig.ratio} target {fig.target} met {fig.met} "
                      f"({fig.values.get('bench_seconds')} s)", highlight=False)
        figures.append(fig)
    total = time.monotonic() - started
    render(figures, console)
    console.print(f"total {total:.0f} s", highlight=False)
    result = {"date": dt.date.today().isoformat(), "machine": machine(), "quick": args.quick,
              "total_seconds": round(total, 1), "figures": [f.to_dict() for f in figures]}
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.output}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
