"""Lab workloads resolve names with the lab's DNS server (issue 18): their `/etc/netns/<netns>/resolv.conf`.

`ip netns exec NETNS ...` bind-mounts /etc/netns/NETNS/resolv.conf over /etc/resolv.conf, so a
program run in a workload's namespace that way (getent, Python's socket.getaddrinfo) asks the
lab's resolver, as a VM or container would ask its configured nameserver. Only files of this
lab's netns names are ever written or removed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from stockade.lab import naming

ETC_NETNS = Path("/etc/netns")
RESOLV_CONF = f"nameserver {naming.DNS_SERVER_V4}\noptions timeout:1 attempts:2\n"


def write(netns: str) -> None:
    """The workload's resolv.conf, unless it is there already with this content."""
    path = ETC_NETNS / netns / "resolv.conf"
    if path.exists() and path.read_text() == RESOLV_CONF:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(RESOLV_CONF)


def remove(netns: str) -> None:
    shutil.rmtree(ETC_NETNS / netns, ignore_errors=True)


def remove_all(prefix: str) -> list[str]:
    """Every /etc/netns directory of this lab (`P-...`); what was removed."""
    if not ETC_NETNS.exists():
        return []
    gone = []
    for path in sorted(ETC_NETNS.glob(f"{naming.lab_netns_prefix(prefix)}*")):
        shutil.rmtree(path, ignore_errors=True)
        gone.append(str(path))
    return gone
