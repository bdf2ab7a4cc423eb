"""compile.bridge and the bridged half of compile.host: the bridge-family table of a host with
bridged workloads, the inet chains' dispatch on its port marks, and what stays as it was for a
host without bridged workloads. Pure (the real kernel: tests/dataplane/test_bridged_attachment.py).
"""

from __future__ import annotations

from typing import Any

from stockade.compile.host import compile_host, compile_host_program
from stockade.compile.program import (
    BRIDGED_INGRESS_V4,
    BRIDGED_INGRESS_V6,
    PASS_BIT,
    PORT_EGRESS_DISPATCH,
    PORT_IN_MASK,
    PORT_INGRESS_DISPATCH,
    PORT_OUT_MASK,
    PORT_OUT_SHIFT,
    CompileOptions,
)
from stockade.model.kinds import parse_object
from stockade.model.state import DesiredState
from stockade.nft import render
from stockade.nft.interpret import Interpreter, Packet
from stockade.nft.ir import (
    ARP_SADDR_ETHER,
    ARP_SADDR_IP,
    ETHER_SADDR,
    IP6_DADDR,
    IP6_SADDR,
    IP_DADDR,
    IP_SADDR,
    META_MARK,
    Accept,
    Chain,
    Cmp,
    Dispatch,
    Drop,
    Goto,
    InAnon,
    Jump,
    MarkSet,
    Ruleset,
)
from tests.golden_states import HOST, load_state

MAC = "02:b6:00:00:00:0a"


def workload(name: str, ip4: str, ip6: str, interface: str | None = None, bridged: bool = True,
             mac: str | None = MAC, role: str = "vm") -> dict[str, Any]:
    spec: dict[str, Any] = {"host": HOST, "ips": [ip4, ip6]}
    if interface:
        spec["interface"] = interface
    if bridged:
        spec["attachment"] = "bridged"
    if mac:
        spec["mac"] = mac
    return {"apiVersion": "stockade.io/v1", "kind": "Workload",
            "metadata": {"name": name, "namespace": "vms", "labels": {"role": role}}, "spec": spec}


def state(*workloads: dict[str, Any], revision: int = 1) -> DesiredState:
    docs: list[dict[str, Any]] = [
        {"apiVersion": "stockade.io/v1", "kind": "Namespace", "metadata": {"name": "vms"},
         "spec": {"defaultAction": "deny"}},
        {"apiVersion": "stockade.io/v1", "kind": "Group", "metadata": {"name": "web", "namespace": "vms"},
         "spec": {"selector": {"matchLabels": {"role": "web"}}}},
        {"apiVersion": "stockade.io/v1", "kind": "Policy", "metadata": {"name": "web", "namespace": "vms"},
         "spec": {"appliesTo": {"group": "web"},
                  "ingress": [{"id": "http", "action": "allow", "ports": [{"protocol": "TCP", "port": 80}]}]}},
        *workloads,
    ]
    return DesiredState.from_objects(revision, [parse_object(d) for d in docs])


TWO_VMS = (workload("b", "198.18.66.11", "2001:db8:66::11", "vnet7", mac="02:b6:00:00:00:0b", role="web"),
           workload("a", "198.18.66.10", "2001:db8:66::10", "vnet3"),
           workload("r", "198.18.67.10", "2001:db8:67::10", "tapr", bridged=False))


def ports_of(rs: Ruleset) -> Ruleset:
    assert rs.ports is not None, "no bridge table"
    return rs.ports


def test_a_host_without_bridged_workloads_has_no_bridge_table_and_the_program_it_had() -> None:
    rs = compile_host(load_state(), HOST)
    assert rs.ports is None
    program = render.full_replace(rs)
    assert {c[verb].get("table", {}).get("family") for c in program["nftables"] for verb in c
            if "table" in c[verb]} == {"inet"}
    assert not any(isinstance(r.verdict, Dispatch) and r.verdict.field == META_MARK
                   for c in rs.chains for r in c.rules)


def test_bridged_workloads_get_port_ids_by_interface_and_a_bridge_table_named_after_the_inet_one() -> None:
    rs = compile_host(state(*TWO_VMS), HOST, CompileOptions(table="stk_t1"))
    ports = ports_of(rs)
    assert (ports.table, ports.family, ports.revision) == ("stk_t1_ports", "bridge", 0)
    # Port ids: 1, 2 in interface order (vnet3 is a, vnet7 is b); the routed one has none.
    port_in = dict(ports.vmap("port_in_dispatch").elements)
    port_out = dict(ports.vmap("port_out_dispatch").elements)
    assert set(port_in) == set(port_out) == {"vnet3", "vnet7"}
    marks_in = {k: ports.chain(v.target).rules for k, v in port_in.items() if isinstance(v, Goto)}
    assert [r.mark for r in marks_in["vnet3"] if r.mark] == [MarkSet(1)]
    assert [r.mark for r in marks_in["vnet7"] if r.mark] == [MarkSet(2)]
    out_a = port_out["vnet3"]
    assert isinstance(out_a, Goto) and ports.chain(out_a.target).rules[0].mark == MarkSet(1 << PORT_OUT_SHIFT)
    # The inet side: bridged workloads dispatch by mark, the routed one by name, as before.
    egress, ingress = dict(rs.vmap(PORT_EGRESS_DISPATCH).elements), dict(rs.vmap(PORT_INGRESS_DISPATCH).elements)
    assert set(egress) == {1, 2} and set(ingress) == {1 << PORT_OUT_SHIFT, 2 << PORT_OUT_SHIFT}
    assert {k for k, _ in rs.vmap("egress_dispatch").elements} == {"tapr"}
    assert {k for k, _ in rs.vmap("guard_dispatch").elements} == {"tapr"}
    assert rs.set("workload_ifaces").elements == ("tapr",)
    assert [r.verdict for r in rs.chain("egress").rules][-1] == Dispatch(META_MARK, PORT_EGRESS_DISPATCH, PORT_IN_MASK)
    assert [r.verdict for r in rs.chain("ingress").rules][-3:] == [
        Dispatch(META_MARK, PORT_INGRESS_DISPATCH, PORT_OUT_MASK),
        Dispatch(IP_DADDR, BRIDGED_INGRESS_V4), Dispatch(IP6_DADDR, BRIDGED_INGRESS_V6)]
    # What the host routes into the bridge meets the ingress chain of the workload it is for.
    assert dict(rs.vmap(BRIDGED_INGRESS_V4).elements) == {"198.18.66.10": ingress[1 << PORT_OUT_SHIFT],
                                                          "198.18.66.11": ingress[2 << PORT_OUT_SHIFT]}
    assert set(dict(rs.vmap(BRIDGED_INGRESS_V6).elements)) == {"2001:db8:66::10", "2001:db8:66::11"}


def test_the_mark_bits_never_touch_the_pass_bit_nor_each_other() -> None:
    assert PORT_IN_MASK & PORT_OUT_MASK == 0
    assert (PORT_IN_MASK | PORT_OUT_MASK) & PASS_BIT == 0
    assert PORT_IN_MASK << PORT_OUT_SHIFT == PORT_OUT_MASK
    assert (PORT_IN_MASK | PORT_OUT_MASK) & 0xC000 == 0  # kube-proxy's bits


def test_a_bridge_port_sends_as_its_workload_at_layer_2_and_3() -> None:
    ports = ports_of(compile_host(state(*TWO_VMS), HOST))
    goto = dict(ports.vmap("port_in_dispatch").elements)["vnet3"]
    assert isinstance(goto, Goto)
    rules = ports.chain(goto.target).rules
    drops = [r.matches for r in rules if isinstance(r.verdict, Drop)]
    assert all(r.comment == "antispoof" and r.counter for r in rules if isinstance(r.verdict, Drop))
    assert (Cmp(ETHER_SADDR, MAC, negate=True),) in drops
    assert (Cmp(ARP_SADDR_ETHER, MAC, negate=True),) in drops
    assert (InAnon(ARP_SADDR_IP, ("0.0.0.0", "198.18.66.10"), negate=True),) in drops
    assert (Cmp(IP_SADDR, "198.18.66.10", negate=True),) in drops
    assert (Cmp(IP6_SADDR, "2001:db8:66::10", negate=True),) in drops
    assert (InAnon(("ether", "type"), ("ip", "ip6", "arp"), negate=True),) in drops  # no VLAN tag past us
    # The MAC check comes before anything that accepts (neighbour discovery, a DHCP request).
    first_accept = next(i for i, r in enumerate(rules) if isinstance(r.verdict, Accept))
    assert rules.index(next(r for r in rules if r.matches == (Cmp(ETHER_SADDR, MAC, negate=True),))) < first_accept


def test_a_port_without_mac_or_ipv6_checks_what_it_has_and_drops_the_family_it_lacks() -> None:
    vm = workload("a", "198.18.66.10", "2001:db8:66::10", "vnet3", mac=None)
    vm["spec"]["ips"] = ["198.18.66.10"]
    ports = ports_of(compile_host(state(vm), HOST))
    goto = dict(ports.vmap("port_in_dispatch").elements)["vnet3"]
    assert isinstance(goto, Goto)
    matches = [r.matches for r in ports.chain(goto.target).rules]
    assert not any(m.field in (ETHER_SADDR, ARP_SADDR_ETHER) for ms in matches for m in ms if isinstance(m, Cmp))
    assert (Cmp(("ether", "type"), "ip6"),) in matches


def test_unknown_ports_of_the_naming_scheme_are_dropped_on_the_bridge_too() -> None:
    ports = ports_of(compile_host(state(*TWO_VMS), HOST))
    assert [r.comment for r in ports.chain("ports_in").rules] == [None, "unknown-interface"]
    assert [r.comment for r in ports.chain("ports_out").rules] == [None, "unknown-interface"]
    assert "vnet*" in ports.set("workload_port_names").elements


def test_trace_follows_the_marks_to_the_bridged_workloads_chains() -> None:
    """A new TCP connection from a (port 1) to b's port 80 (port 2): a's egress is the namespace's
    default deny; b's ingress allows it. The interpreter runs the very program."""
    rs = compile_host(state(*TWO_VMS), HOST)
    packet = Packet(4, "198.18.66.10", "198.18.66.11", "tcp", 80, iifname="br0", oifname="br0",
                    mark=1 | (2 << PORT_OUT_SHIFT))
    egress = Interpreter(rs).run_base_chain(packet, "egress")
    ingress = Interpreter(rs).run_base_chain(packet, "ingress")
    assert (egress.verdict, egress.steps[-1].comment) == ("drop", "vms/default-deny/egress")
    assert ingress.verdict == "accept" and ingress.steps[-1].comment == "vms/web/http"
    # Routed into the bridge by the host (no out-port id): b's ingress, by its address.
    routed_in = Packet(4, "198.18.68.2", "198.18.66.11", "tcp", 80, iifname="up0", oifname="br0")
    assert Interpreter(rs).run_base_chain(routed_in, "ingress").steps[-1].comment == "vms/web/http"
    # No mark (a packet the bridge table did not see): neither dispatch matches.
    assert Interpreter(rs).run_base_chain(Packet(4, "198.18.66.10", "198.18.66.11", "tcp", 80, "br0", "br0"),
                                          "egress").steps == []


def test_both_tables_change_in_one_transaction_and_the_hash_covers_the_bridge_table() -> None:
    with_vms = compile_host(state(*TWO_VMS), HOST)
    program = render.full_replace(with_vms)
    families = [c["add"]["table"]["family"] for c in program["nftables"] if "add" in c and "table" in c["add"]]
    assert families == ["inet", "inet", "bridge", "bridge"]
    # The same ports in a newer revision: a delta of nothing. Another MAC: a full replace, another hash.
    same = compile_host(state(*TWO_VMS, revision=2), HOST)
    assert render.set_delta(with_vms, same) == {"nftables": []}
    changed_vm = workload("a", "198.18.66.10", "2001:db8:66::10", "vnet3", mac="02:b6:00:00:00:99")
    changed = compile_host(state(TWO_VMS[0], changed_vm, TWO_VMS[2]), HOST)
    assert render.set_delta(with_vms, changed) is None
    assert render.program_hash(changed) != render.program_hash(with_vms)


def test_bridged_traffic_is_mark_dispatched_and_its_neighbour_discovery_passes_forward() -> None:
    rs = compile_host(state(*TWO_VMS), HOST)
    for name in ("egress", "ingress"):
        comments = [r.comment for r in rs.chain(name).rules]
        assert comments.index("neighbour-discovery") < comments.index("invalid")
    # From a bridged workload to this host: what it may send is what a routed one may, and DHCP.
    rules = rs.chain("input").rules
    assert rules[-1].verdict == Jump("from_workloads") and any(r.comment == "dhcp-request" for r in rules)


def test_a_workload_of_the_wrong_host_or_left_out_gets_no_port() -> None:
    vms = state(*TWO_VMS)
    compiled = compile_host_program(vms, HOST, CompileOptions(left_out=(("vms/a", "refused"),)))
    ports = ports_of(compiled.ruleset)
    assert set(dict(ports.vmap("port_in_dispatch").elements)) == {"vnet7"}
    assert [n.workload for n in compiled.not_programmed] == ["vms/a"]
    assert compile_host(vms, "hv2").ports is None


def test_chains_of_the_bridge_table_are_each_workloads_own() -> None:
    ports = ports_of(compile_host(state(*TWO_VMS), HOST))
    names = [c.name for c in ports.chains if isinstance(c, Chain) and c.base is None]
    assert len(names) == 4 and len(set(names)) == 4 and all(n.startswith(("bin_", "bout_")) for n in names)
