"""Names and addresses of the lab: the conventions the agent and the compiler rely on.

Pure: no I/O. One lab is identified by a short prefix P (default "stk"):

    P-fab                              fabric netns: bridge `br0`, one port `hvN` per hypervisor
                                       and `cp` for the control plane
    P-cp                               control-plane netns: the controller (and the store's
                                       members) on the fabric, uplink `fab0`
    P-hv1 .. P-hvN                     hypervisor netns (host names hv1..hvN), uplink `fab0`
    P-<host>.<namespace>.<name>        a workload's netns, its NIC is `eth0`

Invariants:
- A prefix is 1-8 characters of [a-z0-9], so `P-` never is the start of another
  lab's prefix (no '-' inside a prefix) and `P-<host>.` names exactly the
  workloads of one hypervisor (object names cannot contain '.').
- Lab addresses come only from 198.18.0.0/15 and 2001:db8::/32: node addresses
  from 198.18.254.0/24 and 2001:db8:ffff::/64 (hypervisors .1-.240, the control
  plane .241-.254), the gateway 198.18.255.1.
- Every route the lab programs carries protocol `ROUTE_PROTO`, and only routes
  with that protocol are ever changed or deleted by the lab.
"""

from __future__ import annotations

import hashlib
import re

from stockade.errors import LabError

DEFAULT_PREFIX = "stk"
FABRIC_SUFFIX = "fab"
FABRIC_BRIDGE = "br0"
FABRIC_IFACE = "fab0"          # a hypervisor's uplink to the fabric
WORKLOAD_IFACE = "eth0"        # a workload's NIC, inside its own netns

GATEWAY_V4 = "198.18.255.1"    # on every hypervisor's lo: the next hop every workload ARPs for
GATEWAY_V6 = "fe80::1"         # on every workload's host-side veth
NODE_V4_NET = "198.18.254"     # hvN is 198.18.254.N/24 on fab0
NODE_V6_NET = "2001:db8:ffff"  # hvN is 2001:db8:ffff::N/64 on fab0
NODE_V4_PREFIXLEN = 24
NODE_V6_PREFIXLEN = 64
MAX_HOSTS = 240                # node addresses .1-.240; .241-.254 are the control plane's
CONTROL_SUFFIX = "cp"          # the control-plane netns, and its port on the fabric bridge
CONTROLLER_V4 = f"{NODE_V4_NET}.254"    # where agents reach the (first) controller, over TLS
CONTROLLER_V6 = f"{NODE_V6_NET}::254"
CONTROLLER_PORT = 7470
MAX_CONTROLLERS = 3            # replicas at .254, .253, .252
ETCD_MEMBERS = 3               # a lab's etcd cluster: members at .241, .242, .243
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380

# The outside world (lab/outside.py): what is beyond every workload, as the internet is, in
# 198.19.0.0/16 and 2001:db8:e::/48, on the fabric beside the hypervisors. The lab's DNS server
# (the workloads' nameserver and the agents' trusted resolver) at .0.53; external endpoints at
# 198.19.1.N and 2001:db8:e::1:N.
OUTSIDE_V4 = "198.19.0.0/16"
OUTSIDE_V6 = "2001:db8:e::/48"
DNS_SERVER_V4 = "198.19.0.53"
DNS_SERVER_V6 = "2001:db8:e::53"
DNS_SUFFIX = "dns"             # the DNS server's netns, and its port on the fabric bridge
EXTERNAL_SUFFIX = "ext"        # P-ext-NAME: an external endpoint's netns
MAX_EXTERNALS = 250
# Routes to and from the outside: their own protocol, which the agents' route sync (proto 201,
# below) never touches.
OUTSIDE_ROUTE_PROTO = 202
DNS_PROXY_PORT = 1053          # where each hypervisor's agent answers its workloads' DNS (compile.dns)

# 201 is unassigned in /etc/iproute2/rt_protos; readable in `ip route` as "proto 201".
ROUTE_PROTO = 201

# Written as the ifalias of a workload's host-side veth: marks the veth as the lab's,
# and records what the workload side was configured with (see endpoints.py).
ENDPOINT_ALIAS_TAG = "stockade-lab"

_PREFIX = re.compile(r"^[a-z0-9]{1,8}$")
_HOST = re.compile(r"^hv([1-9][0-9]{0,2})$")


def check_prefix(prefix: str) -> str:
    """Return `prefix`, or raise LabError when it could collide with other labs' names."""
    if not _PREFIX.match(prefix):
        raise LabError(f"lab prefix {prefix!r} must be 1-8 characters of a-z and 0-9 "
                       "(no '-' or '.', so one lab's names never look like another's)")
    return prefix


def host_name(index: int) -> str:
    """The name of the index-th hypervisor (1-based): `hv1`, `hv2`, ..."""
    if not 1 <= index <= MAX_HOSTS:
        raise LabError(f"hypervisor index {index} is outside 1..{MAX_HOSTS}")
    return f"hv{index}"


def host_index(host: str) -> int:
    """`hv3` → 3; LabError for a name that is not a lab hypervisor."""
    index = lab_host_index(host)
    if index is None:
        raise LabError(f"{host!r} is not a lab hypervisor name (hv1..hv{MAX_HOSTS})")
    return index


def lab_host_index(host: str) -> int | None:
    """`hv3` → 3; None for a host that is not a lab hypervisor (a real host, say)."""
    m = _HOST.match(host)
    if m is None or int(m.group(1)) > MAX_HOSTS:
        return None
    return int(m.group(1))


def is_lab_host(host: str) -> bool:
    return lab_host_index(host) is not None


def fabric_netns(prefix: str) -> str:
    return f"{prefix}-{FABRIC_SUFFIX}"


def control_netns(prefix: str) -> str:
    return f"{prefix}-{CONTROL_SUFFIX}"


def controller_addresses(replica: int) -> tuple[str, str]:
    """The fabric addresses (IPv4, IPv6) of controller replica 1..MAX_CONTROLLERS."""
    if not 1 <= replica <= MAX_CONTROLLERS:
        raise LabError(f"a lab runs 1 to {MAX_CONTROLLERS} controller replicas, not {replica}")
    last = 255 - replica
    return f"{NODE_V4_NET}.{last}", f"{NODE_V6_NET}::{last}"


def controller_url(replicas: int = 1) -> str:
    """The controllers on the fabric, as every agent is given them (comma-separated replicas)."""
    return ",".join(f"https://{controller_addresses(i)[0]}:{CONTROLLER_PORT}" for i in range(1, replicas + 1))


def etcd_address(member: int) -> str:
    """The fabric address of etcd member 1..ETCD_MEMBERS (in the control-plane netns)."""
    if not 1 <= member <= ETCD_MEMBERS:
        raise LabError(f"a lab's etcd cluster has members 1 to {ETCD_MEMBERS}, not {member}")
    return f"{NODE_V4_NET}.{240 + member}"


def host_netns(prefix: str, host: str) -> str:
    return f"{prefix}-{host}"


def workload_netns(prefix: str, host: str, namespace: str, name: str) -> str:
    return f"{prefix}-{host}.{namespace}.{name}"


def lab_netns_prefix(prefix: str) -> str:
    """Every netns of the lab, and nothing else, starts with this."""
    return f"{prefix}-"


def workload_netns_prefix(prefix: str, host: str) -> str:
    """Every workload netns of one hypervisor starts with this."""
    return f"{prefix}-{host}."


def fabric_port(host: str) -> str:
    """The fabric-side end of a hypervisor's uplink, a port of the fabric bridge."""
    return host


def node_addresses(host: str) -> tuple[str, str]:
    """The IPv4 and IPv6 node addresses of hypervisor `hvN` on the fabric (no prefix length)."""
    n = host_index(host)
    # The IPv6 host part is N written in decimal digits (hv12 → ::12), as people read it.
    return f"{NODE_V4_NET}.{n}", f"{NODE_V6_NET}::{n}"


def derived_mac(key: str) -> str:
    """A stable, locally administered unicast MAC for workload `ns/name` without spec.mac.

    Stable so that the agent knows a workload's MAC without reading it back from
    the workload's netns, and it survives a re-creation of the veth.
    """
    digest = hashlib.sha256(f"mac:{key}".encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in digest[:5])


def dns_netns(prefix: str) -> str:
    return f"{prefix}-{DNS_SUFFIX}"


def external_netns(prefix: str, name: str) -> str:
    return f"{prefix}-{EXTERNAL_SUFFIX}-{name}"


def external_port(index: int) -> str:
    """An external endpoint's port on the fabric bridge (interface names are at most 15 characters)."""
    return f"x{index}"


def external_addresses(index: int) -> tuple[str, str]:
    if not 1 <= index <= MAX_EXTERNALS:
        raise LabError(f"external endpoint {index}: the lab has room for {MAX_EXTERNALS}")
    return f"198.19.1.{index}", f"2001:db8:e::1:{index}"
