"""Compile the desired state into one host's Ruleset. Pure: same input, same bytes out.

Layout of the program (one `inet` table, owned by Stockade alone):

    chain guard    hook prerouting prio -300  iifname vmap @guard_dispatch (goto sp_<name>);
                                           iifname @workload_port_names drop: no program
    chain egress   hook forward prio -10   ct established,related accept; ct invalid drop;
                                           iifname vmap @egress_dispatch
    chain ingress  hook forward prio 0     oifname @workload_port_names oifname != @workload_ifaces drop;
                                           ct established,related accept; ct invalid drop;
                                           oifname vmap @ingress_dispatch
    chain input    hook input   prio 0     iifname @workload_ifaces jump from_workloads

    sp_<name>_<h>            one per local workload: its MAC (when known) and its
                             addresses, else drop; neighbour discovery goes on.
                             Before conntrack (-200), so a forged packet never
                             matches another workload's established flow.

    wl_<name>_<h>_eg / _in   one per local workload and direction:
                             per tier: clear the
                             pass mark, jump each policy chain of that tier in
                             order; then the namespace's default action
    pol_<name>_<h>_eg / _in  one per policy and direction, shared by every local
                             workload it applies to: `return` at once if an
                             earlier policy of the tier passed; then its rules
    rec_<name>_<h>_eg / _in  one per log or audit rule with peer x port alternatives
                             that one packet could match together: the first that
                             matches logs and returns, so a packet is recorded once

Fail closed: a port whose name is in the workload naming scheme
(`CompileOptions.workload_interface_prefixes`) but that has no program here (a VM
started before its object exists, or whose object was deleted while it runs) is
dropped in both directions, established flows included, and counted
(`unknown-interface`). The host's own interfaces are not touched.

Egress and ingress are separate base chains on the forward hook, so `accept`
in egress ends only the egress decision and the destination's ingress policy
still runs, also when both workloads share this host. Peers live in named sets
(interval sets of addresses), so a membership change is an element update.
Each policy rule becomes one or more kernel rules (peers × ports × family),
all carrying the rule's id in their comment and a counter.

Flow logging (`CompileOptions.log_group` set): every kernel rule that decides
(allow, deny, reject, a namespace default) or records (log, audit) logs to that
NFLOG group with the prefix `stk <verdict> <rule id> `. Only new connections
reach these chains, so that is one record per connection attempt. Logging is
rate-limited by one token bucket shared by the whole table (`flowlog_limit`):
each logging rule has an over-the-limit twin just before it, with the same
matches, comment, counter and verdict but no log, that also counts the packet
into the `flowlog_suppressed` counter. Exactly one of the two takes each packet,
so per-rule counters stay exact. Log and audit rules then always live in a
record chain (their twins need a verdict that ends the evaluation: `return`).
With `log_group=None`, log and audit rules use the kernel log and nothing else logs.

Bridged workloads (`spec.attachment: bridged`, ports of a Linux bridge): their ports are
invisible in the inet hooks (in and out are the bridge), so they are not in the ifname maps,
the guard or `workload_ifaces`. A bridge-family companion table (`Ruleset.ports`, built by
compile.bridge) checks what each port sends and names the ports in the packet mark; the forward
chains dispatch on it (`port_egress_dispatch`, `port_ingress_dispatch`), and on a bridged
workload's address for what this host routes into the bridge (`bridged_ingress_v4`/`_v6`); they
also accept neighbour discovery, which crosses the forward hook untracked. Nothing of this is
emitted for a host without bridged workloads.

Workloads that cannot be programmed: the dispatch maps are keyed by interface, and the
kernel refuses the whole transaction ("File exists") when two keys are equal, which would
leave every workload of the host without its new policy. So a local workload whose
interface another local workload already has (the first by namespace/name keeps it), or
that names an interface the host owns (`CompileOptions.reserved_interfaces`), is left out
of the program and listed in `HostProgram.not_programmed`, for the agent to report.
Validation refuses both; this guards states that predate it.
"""

from __future__ import annotations

from stockade.compile.addresses import family_of
from stockade.compile.bridge import BridgedPort, bridge_ruleset
from stockade.compile.chains import ChainBuilder, base_chains
from stockade.compile.dns import with_interception
from stockade.compile.host_view import HostView, build_host_view, programmable_workloads
from stockade.compile.program import (
    LOG_LIMIT,
    LOG_SUPPRESSED,
    MAX_BRIDGE_PORTS,
    PASS_BIT,
    BRIDGED_INGRESS_V4,
    BRIDGED_INGRESS_V6,
    PORT_EGRESS_DISPATCH,
    PORT_INGRESS_DISPATCH,
    PORT_OUT_SHIFT,
    TABLE,
    UNKNOWN_INTERFACE,
    WORKLOAD_PORT_NAMES,
    CompileOptions,
    HostProgram,
    NotProgrammed,
    ordered_policies,
    rule_ref,
)
from stockade.compile.rules import RuleBuilder
from stockade.compile.sets import SetBuilder
from stockade.model.state import DesiredState
from stockade.nft.ir import Goto, Jump, NamedCounter, NamedSet, RateLimit, Ruleset, Value, Verdict, VerdictMap

# The compile stage's public names, importable from here as before the split by concern.
__all__ = ["LOG_LIMIT", "LOG_SUPPRESSED", "PASS_BIT", "TABLE", "UNKNOWN_INTERFACE", "WORKLOAD_PORT_NAMES",
           "CompileOptions", "HostProgram", "NotProgrammed", "compile_host", "compile_host_program",
           "ordered_policies", "programmable_workloads", "rule_ref"]


def compile_host(state: DesiredState, host: str, options: CompileOptions = CompileOptions()) -> Ruleset:
    """The program that `host` must run for `state` (see `compile_host_program`)."""
    return compile_host_program(state, host, options).ruleset


def compile_host_program(state: DesiredState, host: str, options: CompileOptions = CompileOptions()) -> HostProgram:
    """The program that `host` must run for `state`, and the local workloads it leaves out."""
    return render_host_view(build_host_view(state, host, options), options)


def render_host_view(view: HostView, options: CompileOptions) -> HostProgram:
    """The Ruleset of a HostView: sets, then rules, then chains, each built by its own stage."""
    sets = SetBuilder(view.state, view.selection)
    rules = RuleBuilder(view.state, view.host, options, view.selection, sets)
    chains = ChainBuilder(view.state, options, view.tiers, rules)
    egress_map: list[tuple[str, Verdict]] = []
    ingress_map: list[tuple[str, Verdict]] = []
    guard_map: list[tuple[str, Verdict]] = []
    ifaces: list[str] = []
    routed_v4: list[tuple[str, str]] = []  # (interface, IPv4 address) of local routed workloads
    bridged, not_programmed = _bridged_ports(view)
    bridged_keys = {p.key for p in bridged}
    for key, iface in view.local:
        if key in bridged_keys or any(n.workload == f"{key[0]}/{key[1]}" for n in not_programmed):
            continue
        applicable = list(view.policies[key])
        ifaces.append(iface)
        routed_v4.extend((iface, ip) for ip in view.state.workload_ips(view.state.workloads[key]) if family_of(ip) == 4)
        guard_map.append((iface, Goto(chains.spoof_chain(key))))  # goto: its end accepts, no unknown-port drop
        egress_map.append((iface, Jump(chains.workload_chain(key, "egress", applicable))))
        ingress_map.append((iface, Jump(chains.workload_chain(key, "ingress", applicable))))
    # Bridged workloads: dispatched by the port ids the bridge table puts in the mark.
    port_egress: list[tuple[Value, Verdict]] = []
    port_ingress: list[tuple[Value, Verdict]] = []
    by_address: dict[int, list[tuple[Value, Verdict]]] = {4: [], 6: []}
    for port in bridged:
        applicable = list(view.policies[port.key])
        ingress = Jump(chains.workload_chain(port.key, "ingress", applicable))
        port_egress.append((port.port_id, Jump(chains.workload_chain(port.key, "egress", applicable))))
        port_ingress.append((port.port_id << PORT_OUT_SHIFT, ingress))
        for ip in view.state.workload_ips(view.state.workloads[port.key]):
            by_address[family_of(ip)].append((ip, ingress))
    all_chains = base_chains(options, bridged=bool(bridged)) + sorted(chains.chains.values(), key=lambda c: c.name)
    all_sets = sorted(sets.sets.values(), key=lambda s: s.name)
    all_sets.append(NamedSet("workload_ifaces", ("ifname",), tuple(sorted(ifaces)), False,
                             "local workload interfaces"))
    all_sets.append(NamedSet(WORKLOAD_PORT_NAMES, ("ifname",),
                             tuple(sorted(f"{p}*" for p in options.workload_interface_prefixes)), True,
                             "names of workload ports: one without a program is dropped"))
    maps = (
        VerdictMap("egress_dispatch", "ifname", tuple(sorted(egress_map, key=lambda e: e[0]))),
        VerdictMap("guard_dispatch", "ifname", tuple(sorted(guard_map, key=lambda e: e[0]))),
        VerdictMap("ingress_dispatch", "ifname", tuple(sorted(ingress_map, key=lambda e: e[0]))),
    )
    ports: Ruleset | None = None
    if bridged:
        maps += (
            VerdictMap(PORT_EGRESS_DISPATCH, "mark", tuple(port_egress)),
            VerdictMap(PORT_INGRESS_DISPATCH, "mark", tuple(port_ingress)),
            # Addresses are unique (validation); the first keeps one that an old state repeats.
            VerdictMap(BRIDGED_INGRESS_V4, "ipv4_addr", _first_per_key(by_address[4])),
            VerdictMap(BRIDGED_INGRESS_V6, "ipv6_addr", _first_per_key(by_address[6])),
        )
        ports = bridge_ruleset(view.state, bridged, options)
    limits: tuple[RateLimit, ...] = ()
    counters: tuple[NamedCounter, ...] = ()
    if options.log_group is not None:
        limits = (RateLimit(LOG_LIMIT, options.log_rate, "second", options.log_burst, over=True),)
        counters = (NamedCounter(LOG_SUPPRESSED),)
    ruleset = Ruleset(options.table, "inet", tuple(sorted(all_sets, key=lambda s: s.name)), maps,
                      tuple(all_chains), view.state.revision, limits=limits, counters=counters, ports=ports)
    if options.dns is not None:
        ruleset = with_interception(ruleset, routed_v4, options.dns)
    return HostProgram(ruleset, view.not_programmed + not_programmed)


def _first_per_key(elements: list[tuple[Value, Verdict]]) -> tuple[tuple[Value, Verdict], ...]:
    """Sorted by key, each key once (the kernel refuses a transaction that repeats a map key)."""
    kept: dict[str, tuple[Value, Verdict]] = {}
    for key, verdict in elements:
        kept.setdefault(str(key), (key, verdict))
    return tuple(kept[k] for k in sorted(kept))


def _bridged_ports(view: HostView) -> tuple[list[BridgedPort], tuple[NotProgrammed, ...]]:
    """The local bridged workloads with their port ids (by interface, from 1), and those left out
    because the mark has no room for their port id."""
    found = sorted(((iface, key) for key, iface in view.local
                    if view.state.workloads[key].spec.attachment == "bridged"))
    ports = [BridgedPort(key, iface, i + 1) for i, (iface, key) in enumerate(found[:MAX_BRIDGE_PORTS])]
    over = tuple(NotProgrammed(f"{key[0]}/{key[1]}", f"more than {MAX_BRIDGE_PORTS} bridged workloads on host "
                               f"{view.host}: no port id left for {iface}")
                 for iface, key in found[MAX_BRIDGE_PORTS:])
    return ports, over
