"""The lab's outside world (issue 18): a real DNS server and external endpoints with names.

    P-fab:  br0 ── dns ── x1 ── x2 ...                 (beside the hypervisors' ports)
    P-dns:  fab0 198.19.0.53/16  2001:db8:e::53/48       dnsmasq, the lab's resolver
    P-ext-NAME: fab0 198.19.1.N/16  2001:db8:e::1:N/48   an endpoint outside every workload

Outside endpoints do not know which hypervisor holds a workload, as the internet does not:
each hypervisor masquerades what its workloads send to the outside ranges to its node address
(its own table `inet stockade_lab_outside`, never the agent's; Stockade filters in the forward
hook, before that, on the workload's own address). Everything outside has on-link routes to the
node subnets, and each hypervisor on-link routes to the outside ranges.

The DNS server is Debian's dnsmasq, answering only from the records in its config file in the
lab's state directory (`host-record` with a TTL for every name of an external, `cname` for its
aliases), over UDP and TCP; a change of records restarts it (dnsmasq rereads no host-record on
SIGHUP) and waits until it answers. Workloads use it: the lab writes their
`/etc/netns/<netns>/resolv.conf` (lab/endpoints.py), and the agents trust it (`--dns-resolver`).

Invariants: `build` is idempotent and additive like the topology's; every netns here starts with
the lab's prefix, so `topology.teardown` removes them; externals live in `externals.json` in the
state directory and keep their addresses while they exist.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dns.message

from stockade.errors import DataplaneError, LabError, ValidationError
from stockade.dataplane.nft_driver import NftDriver
from stockade.lab import naming, processes, readiness, topology
from stockade.lab import netns as ns
from stockade.lab.rtnl import add_address, dump_addrs, dump_links, ensure_up
from stockade.lab.state import LabSettings
from stockade.model.fqdn import check_pattern

DNS_PROCESS = "dns"
_SCOPE_LINK = 253  # RT_SCOPE_LINK: a route with no gateway, the destination on the link
NAT_TABLE = "stockade_lab_outside"
DEFAULT_TTL = 300
READY_TIMEOUT = 5.0
_OUTSIDE_SYSCTLS = {"net.ipv6.conf.all.accept_dad": "0", "net.ipv6.conf.default.accept_dad": "0"}
# A DNS label, short: it names the netns P-ext-NAME and appears in `lab external list`.
_EXTERNAL_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,18}[a-z0-9])?")
_NODE_NETS = (f"{naming.NODE_V4_NET}.0/{naming.NODE_V4_PREFIXLEN}", f"{naming.NODE_V6_NET}::/{naming.NODE_V6_PREFIXLEN}")


@dataclass
class External:
    name: str
    index: int
    dns: list[str] = field(default_factory=list)
    ttl: int = DEFAULT_TTL
    cnames: list[str] = field(default_factory=list)

    def addresses(self) -> tuple[str, str]:
        return naming.external_addresses(self.index)

    def to_dict(self, prefix: str) -> dict[str, Any]:
        return {"name": self.name, "netns": naming.external_netns(prefix, self.name), "ips": list(self.addresses()),
                "dns": list(self.dns), "ttl": self.ttl, "cnames": list(self.cnames)}


# ------------------------------------------------------------------ the network

def build(settings: LabSettings, hosts: list[str]) -> None:
    """The DNS server's netns on the fabric, each hypervisor's way out, every external's netns, and
    dnsmasq running with the records of today's externals."""
    dns = naming.dns_netns(settings.prefix)
    _ensure_outside_netns(settings.prefix, dns, naming.DNS_SUFFIX,
                          (naming.DNS_SERVER_V4, naming.DNS_SERVER_V6))
    for host in hosts:
        _ensure_way_out(naming.host_netns(settings.prefix, host))
    for ext in read_externals(settings):
        _ensure_outside_netns(settings.prefix, naming.external_netns(settings.prefix, ext.name),
                              naming.external_port(ext.index), ext.addresses())
    ensure_dns(settings)


def _ensure_outside_netns(prefix: str, name: str, port: str, addresses: tuple[str, str]) -> None:
    if not ns.exists(name):
        ns.create(name)
    ns.write_sysctls(name, _OUTSIDE_SYSCTLS)
    topology.ensure_uplink(prefix, port, name)
    with ns.open_rtnl(name) as ipr:
        links = dump_links(ipr)
        ensure_up(ipr, links["lo"])
        uplink = links[naming.FABRIC_IFACE]
        have = dump_addrs(ipr).get(uplink.index, set())
        for address, plen in zip(addresses, (16, 48)):
            if (address, plen) not in have:
                add_address(ipr, uplink.index, naming.FABRIC_IFACE, address, plen)
        ensure_up(ipr, uplink)
        for net in _NODE_NETS:  # on-link: replies go straight back to the node that masqueraded
            ipr.route("replace", dst=net, oif=uplink.index, proto=naming.OUTSIDE_ROUTE_PROTO, scope=_SCOPE_LINK)
    topology.attach_to_bridge(prefix, port)


def _ensure_way_out(hv: str) -> None:
    """On-link routes to the outside ranges, and masquerading of workloads' traffic to them."""
    with ns.open_rtnl(hv) as ipr:
        uplink = dump_links(ipr)[naming.FABRIC_IFACE]
        for net in (naming.OUTSIDE_V4, naming.OUTSIDE_V6):
            ipr.route("replace", dst=net, oif=uplink.index, proto=naming.OUTSIDE_ROUTE_PROTO, scope=_SCOPE_LINK)
    program = {"nftables": [
        {"add": {"table": {"family": "inet", "name": NAT_TABLE}}},
        {"delete": {"table": {"family": "inet", "name": NAT_TABLE}}},
        {"add": {"table": {"family": "inet", "name": NAT_TABLE}}},
        {"add": {"chain": {"family": "inet", "table": NAT_TABLE, "name": "out", "type": "nat",
                           "hook": "postrouting", "prio": 100, "policy": "accept"}}},
        *[{"add": {"rule": {"family": "inet", "table": NAT_TABLE, "chain": "out", "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": naming.FABRIC_IFACE}},
            {"match": {"op": "==", "left": {"payload": {"protocol": proto, "field": "daddr"}},
                       "right": {"prefix": {"addr": net.split("/")[0], "len": int(net.split("/")[1])}}}},
            {"masquerade": None}]}}}
          for proto, net in (("ip", naming.OUTSIDE_V4), ("ip6", naming.OUTSIDE_V6))],
    ]}
    try:
        ns.run_in(hv, lambda: NftDriver(table=NAT_TABLE).apply(program))  # libnftables, in hv's netns
    except DataplaneError as e:
        raise LabError(f"the way out of {hv} (nft table {NAT_TABLE}): {e.message}") from e


# ------------------------------------------------------------------ externals

def externals_file(settings: LabSettings) -> Path:
    return settings.state_dir / "externals.json"


def read_externals(settings: LabSettings) -> list[External]:
    try:
        raw = json.loads(externals_file(settings).read_text())
    except FileNotFoundError:
        return []
    return [External(**e) for e in raw]


def _write_externals(settings: LabSettings, externals: list[External]) -> None:
    externals_file(settings).write_text(json.dumps([asdict(e) for e in externals], indent=1) + "\n")


def add_external(settings: LabSettings, name: str, dns: list[str], ttl: int, cnames: list[str]) -> External:
    """A new endpoint outside every workload, published under `dns` (and `cnames` to the first name)."""
    where = f"external {name}"
    if not _EXTERNAL_NAME.fullmatch(name):
        raise ValidationError.single(where, "NAME", f"{name!r} is not a DNS label of 1-20 lower-case letters, "
                                                    "digits or '-' (not first or last)")
    if not 1 <= ttl <= 86_400:
        raise ValidationError.single(where, "--ttl", f"{ttl} is not 1-86400 seconds")
    if cnames and not dns:
        raise ValidationError.single(where, "--cname", "an alias needs a --dns name to point at")
    for option, values in (("--dns", dns), ("--cname", cnames)):
        for value in values:
            try:
                check_pattern(value)
            except ValueError as e:
                raise ValidationError.single(where, option, str(e)) from None
            if value.startswith("*"):
                raise ValidationError.single(where, option, f"{value!r}: a name, not a pattern")
    externals = read_externals(settings)
    if any(e.name == name for e in externals):
        raise ValidationError.single(where, "NAME", "exists already (`lab external remove` it first)")
    taken = {n.lower().rstrip(".") for e in externals for n in (*e.dns, *e.cnames)}
    clash = sorted(taken & {n.lower().rstrip(".") for n in (*dns, *cnames)})
    if clash:
        raise ValidationError.single(where, "--dns", f"{clash[0]} is another external's name already")
    used = {e.index for e in externals}
    index = next((i for i in range(1, naming.MAX_EXTERNALS + 1) if i not in used), None)
    if index is None:
        raise ValidationError.single(where, "NAME", f"the lab has room for {naming.MAX_EXTERNALS} externals")
    ext = External(name, index, list(dns), ttl, list(cnames))
    _ensure_outside_netns(settings.prefix, naming.external_netns(settings.prefix, name),
                          naming.external_port(index), ext.addresses())
    _write_externals(settings, [*externals, ext])
    ensure_dns(settings, restart=True)
    return ext


def remove_external(settings: LabSettings, name: str) -> None:
    externals = read_externals(settings)
    if not any(e.name == name for e in externals):
        raise ValidationError.single(f"external {name}", "NAME", "no such external endpoint")
    _write_externals(settings, [e for e in externals if e.name != name])
    ensure_dns(settings, restart=True)
    netns = naming.external_netns(settings.prefix, name)
    if ns.exists(netns):
        ns.remove(netns)


# ------------------------------------------------------------------ the DNS server

def dns_config(settings: LabSettings) -> Path:
    return settings.state_dir / "dns" / "dnsmasq.conf"


def records_file(settings: LabSettings) -> Path:
    return settings.state_dir / "dns" / "records.json"


def publish(settings: LabSettings, records: list[tuple[str, str, str]], ttl: int = DEFAULT_TTL) -> None:
    """Names with addresses of no endpoint, (name, IPv4, IPv6) from the outside ranges: for a benchmark
    that needs many names with distinct addresses, where an endpoint each would be a netns each."""
    records_file(settings).parent.mkdir(parents=True, exist_ok=True)
    records_file(settings).write_text(json.dumps({"ttl": ttl, "records": records}))
    ensure_dns(settings, restart=True)


def render_config(externals: list[External], extra: dict[str, Any] | None = None) -> str:
    """dnsmasq's records: every name of every external, with its TTL; aliases as CNAMEs; `publish`ed ones."""
    lines = ["# Written by `stockade lab` (lab/outside.py): the lab's names, nothing else.",
             # Every other name does not exist (NXDOMAIN), as an authoritative server says; without
             # this, dnsmasq with no upstream REFUSEs them, which resolvers take as a server failure.
             "local=/#/"]
    for name, v4, v6 in (extra or {}).get("records", []):
        lines.append(f"host-record={name},{v4},{v6},{extra['ttl'] if extra else DEFAULT_TTL}")
    for ext in externals:
        v4, v6 = ext.addresses()
        for name in ext.dns:
            lines.append(f"host-record={name},{v4},{v6},{ext.ttl}")
        for alias in ext.cnames:
            lines.append(f"cname={alias},{ext.dns[0]},{ext.ttl}")
    return "\n".join(lines) + "\n"


def dns_argv(settings: LabSettings) -> list[str]:
    dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    return ["nsenter", f"--net=/run/netns/{naming.dns_netns(settings.prefix)}", dnsmasq,
            "--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces", "--pid-file=",
            f"--listen-address={naming.DNS_SERVER_V4}", f"--listen-address={naming.DNS_SERVER_V6}",
            "--log-facility=-", f"--conf-file={dns_config(settings)}"]


def ensure_dns(settings: LabSettings, restart: bool = False) -> None:
    """dnsmasq running with the current records (restarted when they changed or `restart`)."""
    config = dns_config(settings)
    config.parent.mkdir(parents=True, exist_ok=True)
    extra = json.loads(records_file(settings).read_text()) if records_file(settings).exists() else None
    text = render_config(read_externals(settings), extra)
    changed = not config.exists() or config.read_text() != text
    config.write_text(text)
    alive = processes.process_status(settings, DNS_PROCESS).alive
    if alive and not (changed or restart):
        return
    if alive:
        processes.stop(settings, [DNS_PROCESS])
    processes.start(settings, DNS_PROCESS, dns_argv(settings), program=dns_argv(settings)[2])
    _wait_answers(settings)


def _wait_answers(settings: LabSettings) -> None:
    """Until dnsmasq answers a query over UDP in its netns (or LabError with its log)."""
    query = dns.message.make_query("ready.stockade.test", "A").to_wire()

    def ask() -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            try:
                sock.sendto(query, (naming.DNS_SERVER_V4, 53))
                return sock.recv(512)[:2] == query[:2]
            except OSError:
                return False

    readiness.wait_answering(settings, DNS_PROCESS, naming.dns_netns(settings.prefix), ask,
                             "the lab's DNS server", READY_TIMEOUT)
