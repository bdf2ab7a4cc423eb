"""Shared test helpers for the lab: desired states from plain tuples, shell-outs into a netns."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any, Iterable

import pytest

from stockade.model.kinds import parse_object
from stockade.model.state import DesiredState

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("nsenter", "ip", "nft", "ping")),
    reason="needs root and nsenter, ip, nft, ping")
kernel = [pytest.mark.kernel, needs_root]


def workload(name: str, host: str, ips: Iterable[str] = (), namespace: str = "shop",
             **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "stockade.io/v1", "kind": "Workload",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"host": host, "ips": list(ips), **spec}}


def state(revision: int, *workloads: dict[str, Any]) -> DesiredState:
    namespaces = sorted({w["metadata"]["namespace"] for w in workloads})
    docs = [{"apiVersion": "stockade.io/v1", "kind": "Namespace", "metadata": {"name": n}} for n in namespaces]
    return DesiredState.from_objects(revision, [parse_object(d) for d in [*docs, *workloads]])


# The lab every kernel test module starts from: two workloads on hv1, one on hv2.
WEB1 = workload("web-1", "hv1", ["198.18.10.11", "2001:db8:10::11"])
WEB2 = workload("web-2", "hv1", ["198.18.10.12", "2001:db8:10::12"], mac="02:00:00:00:10:12")
DB1 = workload("db-1", "hv2", ["198.18.10.21", "2001:db8:10::21"])
SHOP = (WEB1, WEB2, DB1)


def sh(netns: str, *argv: str, input: str | None = None, check: bool = True) -> str:
    """Run a command inside `netns`; its stdout."""
    res = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", *argv], input=input,
                         capture_output=True, text=True, timeout=30)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} in {netns} exited {res.returncode}: {res.stderr}")
    return res.stdout
