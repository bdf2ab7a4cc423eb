"""What every component says of itself in its metrics: `stockade_build_info` and the process's own.

    add_process_metrics(registry, "agent")

`stockade_build_info{component,version,python}` is 1; `process_*` (CPU seconds, resident and
virtual memory, open file descriptors, start time) come from prometheus_client's process
collector, read from /proc at scrape time. Each component has its own registry, so each gets
its own copy, named alike on purpose: the same meaning in every component.
"""

from __future__ import annotations

import platform
from importlib import metadata

from prometheus_client import CollectorRegistry, Gauge, ProcessCollector


def version() -> str:
    try:
        return metadata.version("stockade")
    except metadata.PackageNotFoundError:  # run from a source tree that was not installed
        return "unknown"


def add_process_metrics(registry: CollectorRegistry, component: str) -> None:
    ProcessCollector(registry=registry)
    info = Gauge("stockade_build_info", "1; the labels say which Stockade this is",
                 ["component", "version", "python"], registry=registry)
    info.labels(component, version(), platform.python_version()).set(1)
