"""Flow records from logged packets: pure, no kernel.

Behaviours: a logged packet becomes one record naming the verdict, the rule id, the
direction of the chain that decided, and the workloads on both ends; a prefix that is
not ours makes no record; the queue is bounded and what it refuses is counted; the
shipper sends batches with the dropped count and keeps a batch the controller refused.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml

from stockade.agent.flows import (
    CounterDelta,
    FlowRecorder,
    FlowShipper,
    LogSite,
    Resolver,
    log_index,
    parse_prefix,
    to_record,
)
from stockade.compile.host import CompileOptions, compile_host
from stockade.dataplane.conntrack import ConntrackEnd
from stockade.dataplane.nflog import LoggedPacket
from stockade.model.kinds import parse_object
from stockade.model.state import DesiredState

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
NOW = 1_700_000_000.25


def shop() -> DesiredState:
    docs = [d for d in yaml.safe_load_all((GOLDEN / "shop.yaml").read_text()) if d]
    return DesiredState.from_objects(1, [parse_object(d) for d in docs])


def ips_of(state: DesiredState, ns: str, name: str) -> list[str]:
    return state.workload_ips(state.workloads[(ns, name)])


def pkt(prefix: str, src: str, dst: str, **kw) -> LoggedPacket:
    fam = 6 if ":" in src else 4
    return LoggedPacket(prefix=prefix, family=fam, protocol=kw.pop("protocol", "tcp"), src=src, dst=dst,
                        sport=kw.pop("sport", 40000), dport=kw.pop("dport", 443), **kw)


class Metrics:
    def __init__(self) -> None:
        self.recorded: dict[str, int] = {}
        self.dropped: dict[str, int] = {}

    def flow_recorded(self, verdict: str) -> None:
        self.recorded[verdict] = self.recorded.get(verdict, 0) + 1

    def flow_dropped(self, reason: str, count: int) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + count


def test_log_index_gives_every_logging_rule_its_direction_and_full_rule_id() -> None:
    state = shop()
    rs = compile_host(state, "hv1", CompileOptions(log_group=100))
    index = log_index(rs)
    assert index, "with a log group every decision logs"
    for prefix, site in index.items():
        assert prefix.startswith(f"stk {site.verdict} ")
        assert site.direction in ("egress", "ingress")
    # Every policy-rule comment that decides appears as a log site, in the direction of its chain.
    for chain in rs.chains:
        for rule in chain.rules:
            if rule.log is not None:
                want = "egress" if chain.name.endswith("_eg") else "ingress"
                assert index[rule.log.prefix].direction == want, (chain.name, rule.comment)
                assert index[rule.log.prefix].rule == rule.comment


def test_logged_packet_becomes_record_with_workloads_verdict_rule_and_direction() -> None:
    state = shop()
    keys = sorted(state.workloads)
    (sns, sname), (dns, dname) = keys[0], keys[1]
    src, dst = ips_of(state, sns, sname)[0], ips_of(state, dns, dname)[0]
    index = {"stk deny shop/web/ssh ": LogSite("deny", "ingress", "shop/web/ssh")}
    rec = to_record(pkt("stk deny shop/web/ssh ", src, dst, dport=22, timestamp=NOW), "hv1", index,
                    Resolver.from_state(state), now=0)
    assert rec is not None and rec.to_dict() == {
        "time": "2023-11-14T22:13:20.250Z", "host": "hv1", "direction": "ingress", "verdict": "deny",
        "rule": "shop/web/ssh", "protocol": "tcp", "family": 4 if "." in src else 6,
        "src": {"ip": src, "port": 40000, "workload": f"{sns}/{sname}", "namespace": sns},
        "dst": {"ip": dst, "port": 22, "workload": f"{dns}/{dname}", "namespace": dns},
        "icmpType": None, "event": "start",
    }


def test_outside_peer_and_icmp_have_no_workload_and_an_icmp_type() -> None:
    rec = to_record(pkt("stk would-deny shop/default-deny/egress ", "198.18.10.11", "198.19.0.9",
                        protocol="icmp", sport=None, dport=None, icmp_type=8),
                    "hv1", {}, Resolver(), now=NOW)
    assert rec is not None
    wire = rec.to_dict()  # the wire form, as the controller gets it
    # A namespace default names its direction in its id, so it needs no index.
    assert (wire["direction"], wire["verdict"], wire["rule"]) == ("egress", "would-deny", "shop/default-deny/egress")
    assert wire["dst"] == {"ip": "198.19.0.9", "port": None, "workload": None, "namespace": None}
    assert wire["icmpType"] == 8 and wire["protocol"] == "icmp"


def test_an_outside_address_learned_from_dns_names_its_domain_names() -> None:
    """Issue 18: a record of traffic to an address an fqdn rule opened says which names it has."""
    learned = {"198.19.1.7": ["api.partner.example", "lb.hosting.example"]}
    rec = to_record(pkt("stk allow shop/out/partner-api ", "198.18.10.11", "198.19.1.7"), "hv1",
                    {"stk allow shop/out/partner-api ": LogSite("allow", "egress", "shop/out/partner-api")},
                    Resolver(), now=NOW, names_of=lambda ip: learned.get(ip, []))
    assert rec is not None
    wire = rec.to_dict()
    assert wire["dst"]["names"] == ["api.partner.example", "lb.hosting.example"] and wire["dst"]["workload"] is None
    assert "names" not in wire["src"] and rec.to_dict(counts=True)["src"]["names"] == []
    assert type(rec).from_dict(wire) == rec


def test_foreign_or_unplaceable_prefix_makes_no_record() -> None:
    r = Resolver()
    assert to_record(pkt("someone else ", "198.18.0.1", "198.18.0.2"), "hv1", {}, r, NOW) is None
    # A policy rule id whose direction only the program knows: without the index, no guess.
    assert to_record(pkt("stk allow shop/web/https ", "198.18.0.1", "198.18.0.2"), "hv1", {}, r, NOW) is None
    assert parse_prefix("stk allow shop/web/https ") == LogSite("allow", None, "shop/web/https")


def test_ipv6_addresses_resolve_whatever_their_spelling() -> None:
    state = shop()
    v6 = [(k, ip) for k in sorted(state.workloads) for ip in ips_of(state, *k) if ":" in ip]
    assert v6
    key, ip = v6[0]
    import ipaddress

    exploded = ipaddress.IPv6Address(ip).exploded
    assert Resolver.from_state(state).endpoint(exploded, 1).workload == f"{key[0]}/{key[1]}"


def test_queue_is_bounded_and_counts_what_it_refuses() -> None:
    metrics = Metrics()
    rec = FlowRecorder("hv1", capacity=3, metrics=metrics, clock=lambda: NOW)
    for sport in range(40000, 40005):  # five different connection attempts
        rec.offer(pkt("stk deny ns/default-deny/ingress ", "198.18.0.1", "198.18.0.2", sport=sport))
    rec.offer(pkt("not ours", "198.18.0.1", "198.18.0.2"))
    assert len(rec) == 3 and rec.unknown == 1
    assert metrics.recorded == {"deny": 3} and metrics.dropped == {"queue": 2}
    rec.count_dropped("ratelimit", 7)
    batch, dropped = rec.take(10)
    assert len(batch) == 3 and dropped == 9
    assert rec.take(10) == ([], 0)  # counted once


class FakeClient:
    def __init__(self, fail: int = 0) -> None:
        self.calls: list[tuple[str, int, int]] = []
        self.fail = fail

    def send_flows(self, host: str, records: list, dropped: int) -> dict:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("controller down")
        self.calls.append((host, len(records), dropped))
        return {}


def test_shipper_sends_batches_with_dropped_count_and_retries_a_refused_batch() -> None:
    rec = FlowRecorder("hv1", capacity=100, clock=lambda: NOW)
    for i in range(25):
        rec.offer(pkt("stk allow ns/default-allow/egress ", "198.18.0.1", "198.18.0.2", sport=1000 + i))
    client = FakeClient(fail=1)
    kernel = iter([{"kernel": 2, "ratelimit": 3}, {}, {}])
    shipper = FlowShipper(rec, client, "hv1", batch=10, poll_dropped=lambda: next(kernel))

    assert asyncio.run(shipper.ship_once()) == 0       # the controller is down: nothing lost
    assert len(rec) == 25 and client.calls == []
    assert asyncio.run(shipper.ship_once()) == 25      # then: batches of at most 10, drops once
    assert client.calls == [("hv1", 10, 5), ("hv1", 10, 0), ("hv1", 5, 0)]
    assert asyncio.run(shipper.ship_once()) == 0 and len(client.calls) == 3  # nothing to send


def test_shipper_reads_kernel_drop_counts_at_most_once_per_poll_interval() -> None:
    rec = FlowRecorder("hv1", clock=lambda: NOW)
    client = FakeClient()
    polls: list[float] = []
    now = [100.0]

    def poll() -> dict[str, int]:
        polls.append(now[0])
        return {"kernel": 1}

    shipper = FlowShipper(rec, client, "hv1", poll_dropped=poll, poll_interval=1.0, clock=lambda: now[0])
    for step in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 2.1):
        now[0] = 100.0 + step
        asyncio.run(shipper.ship_once())
    assert polls == [100.0, 101.0, 102.1]
    assert sum(dropped for _, _, dropped in client.calls) == 3  # every count read is shipped


def test_shipper_runs_on_its_interval_until_stopped() -> None:
    rec = FlowRecorder("hv1", clock=lambda: NOW)
    client = FakeClient()
    shipper = FlowShipper(rec, client, "hv1", interval=0.05)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(shipper.run(stop))
        rec.offer(pkt("stk deny ns/default-deny/ingress ", "198.18.0.1", "198.18.0.2"))
        for _ in range(40):
            await asyncio.sleep(0.025)
            if client.calls:
                break
        stop.set()
        await asyncio.wait_for(task, 2)

    asyncio.run(main())
    assert client.calls == [("hv1", 1, 0)]


def test_counter_delta_survives_table_replacement() -> None:
    values = iter([5, 9, 2, None])
    delta = CounterDelta(lambda: next(values))
    assert [delta(), delta(), delta(), delta()] == [5, 4, 2, 0]


def test_pipeline_reads_in_a_thread_ships_and_counts_kernel_losses_then_stops() -> None:
    from stockade.agent.flows import FlowPipeline

    class FakeReader:
        lost = 0

        def open(self):
            return self

        def run(self, stop, sink):
            self.lost = 4
            sink(pkt("stk deny ns/default-deny/ingress ", "198.18.0.1", "198.18.0.2"))
            stop.wait()

        def close(self):
            self.closed = True

    reader = FakeReader()
    rec = FlowRecorder("hv1", clock=lambda: NOW)
    client = FakeClient()
    pipeline: FlowPipeline
    shipper = FlowShipper(rec, client, "hv1", interval=0.05, poll_dropped=lambda: {"kernel": pipeline.kernel_lost()},
                          poll_interval=0.0)
    pipeline = FlowPipeline(lambda: reader, rec, shipper)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(pipeline.run(stop))
        for _ in range(80):
            await asyncio.sleep(0.025)
            if client.calls:
                break
        stop.set()
        await asyncio.wait_for(task, 3)

    asyncio.run(main())
    assert client.calls[0] == ("hv1", 1, 4)
    assert reader.closed


def test_a_retransmitted_attempt_is_one_record_but_a_new_attempt_is_another() -> None:
    now = [NOW]
    rec = FlowRecorder("hv1", clock=lambda: now[0])
    syn = pkt("stk deny ns/default-deny/ingress ", "198.18.0.1", "198.18.0.2", sport=41000)
    rec.offer(syn)
    now[0] += 1.0
    rec.offer(syn)          # the SYN retransmitted: the same connection
    now[0] += 3.0
    rec.offer(syn)
    assert len(rec) == 1 and rec.repeats == 2
    rec.offer(pkt("stk deny ns/default-deny/ingress ", "198.18.0.1", "198.18.0.2", sport=41001))
    assert len(rec) == 2    # another source port: another connection
    now[0] += 60.0
    rec.offer(syn)          # long after: a new attempt that reuses the port
    assert len(rec) == 3


# ------------------------------------------------------------------ connection ends

ALLOW = "stk allow ns/default-allow/egress "   # the direction is in the rule id: no index needed


def ended(src: str, dst: str, sport: int = 40000, dport: int = 443, protocol: str = "tcp", **kw) -> ConntrackEnd:
    return ConntrackEnd(family=6 if ":" in src else 4, protocol=protocol, src=src, dst=dst, sport=sport, dport=dport,
                        **{"packets": 7, "bytes": 1500, "reply_packets": 5, "reply_bytes": 9000, **kw})


def test_an_allowed_start_and_its_destroy_make_one_end_record_with_counts() -> None:
    now = [NOW]
    metrics = Metrics()
    rec = FlowRecorder("hv1", metrics=metrics, clock=lambda: now[0])
    rec.offer(pkt(ALLOW, "198.18.0.1", "198.18.0.2", dport=443))
    now[0] += 10.0
    rec.offer_end(ended("198.18.0.1", "198.18.0.2"))
    rec.offer_end(ended("198.18.0.1", "198.18.0.2"))   # a second destroy of the same tuple: already ended
    taken, _ = rec.take(10)
    start, end = (r.to_dict() for r in taken)  # the wire form, as the controller gets it
    assert start["event"] == "start" and start.get("packets") is None
    assert end == {**start, "event": "end", "time": "2023-11-14T22:13:30.250Z",
                   "packets": 12, "bytes": 10500, "replyPackets": 5, "replyBytes": 9000}
    assert rec.unmatched_ends == 1 and rec.open_connections() == 0
    assert metrics.recorded == {"allow": 2}


def test_an_unknown_or_denied_connection_ends_without_a_record() -> None:
    rec = FlowRecorder("hv1", clock=lambda: NOW)
    rec.offer(pkt("stk deny ns/default-deny/ingress ", "198.18.0.1", "198.18.0.2", sport=41000))
    rec.offer(pkt("stk would-deny ns/audit/x ", "198.18.0.1", "198.18.0.2", sport=41001))
    rec.offer(pkt(ALLOW, "198.18.0.1", "198.18.0.2", sport=41002))
    rec.take(10)
    for sport in (41000, 41001, 41003):                  # denied, audit-only, never seen
        rec.offer_end(ended("198.18.0.1", "198.18.0.2", sport=sport))
    rec.offer_end(ended("198.18.0.2", "198.18.0.1", sport=443, dport=41002))   # the reply tuple is not the key
    rec.offer_end(ended("198.18.0.1", "198.18.0.2", sport=41002, protocol="udp"))
    assert rec.take(10) == ([], 0)
    assert rec.unmatched_ends == 5 and rec.open_connections() == 1


def test_a_connection_recorded_in_both_directions_ends_in_both_without_counters_if_none() -> None:
    rec = FlowRecorder("hv1", clock=lambda: NOW)
    rec.update(shop(), None)
    # both ends on this host: recorded leaving one workload and entering the other
    rec.offer(pkt("stk allow ns/default-allow/ingress ", "2001:db8::1", "2001:db8::2"))
    rec.offer(pkt("stk allow ns/default-allow/egress ", "2001:db8::1", "2001:db8::2"))
    rec.take(10)
    rec.offer_end(ended("2001:db8:0::1", "2001:0db8::2", packets=None, bytes=None, reply_packets=None,
                        reply_bytes=None, timestamp=NOW + 1))
    ends = [r.to_dict() for r in rec.take(10)[0]]
    assert [(e["direction"], e["event"], e["packets"], e["bytes"]) for e in ends] == [
        ("egress", "end", None, None), ("ingress", "end", None, None)]
    assert all(e["time"] == "2023-11-14T22:13:21.250Z" for e in ends)


def test_open_connections_are_bounded_oldest_first(monkeypatch) -> None:
    import stockade.agent.flows as flows

    monkeypatch.setattr(flows, "RECENT_KEYS", 3)
    rec = FlowRecorder("hv1", clock=lambda: NOW)
    for sport in range(5):
        rec.offer(pkt(ALLOW, "198.18.0.1", "198.18.0.2", sport=sport))
    rec.take(10)
    assert rec.open_connections() == 3
    rec.offer_end(ended("198.18.0.1", "198.18.0.2", sport=0))   # forgotten
    rec.offer_end(ended("198.18.0.1", "198.18.0.2", sport=4))
    ends = [r.to_dict() for r in rec.take(10)[0]]
    assert [e["src"]["port"] for e in ends] == [4]


def test_an_end_that_does_not_fit_the_queue_is_counted() -> None:
    metrics = Metrics()
    rec = FlowRecorder("hv1", capacity=1, metrics=metrics, clock=lambda: NOW)
    rec.offer(pkt(ALLOW, "198.18.0.1", "198.18.0.2"))
    rec.offer_end(ended("198.18.0.1", "198.18.0.2"))
    assert len(rec) == 1 and metrics.dropped == {"queue": 1}


def test_pipeline_reads_conntrack_in_its_own_thread_and_counts_its_overruns_as_kernel_losses() -> None:
    from stockade.agent.flows import FlowPipeline

    class FakeNflog:
        lost = 0

        def open(self):
            return self

        def run(self, stop, sink):
            sink(pkt(ALLOW, "198.18.0.1", "198.18.0.2"))
            started.set()
            stop.wait()

        def close(self):
            pass

    class FakeConntrack:
        lost = 0
        opens = 0

        def open(self):
            FakeConntrack.opens += 1
            if FakeConntrack.opens == 1:
                raise OSError("not yet")       # retried on its own; NFLOG goes on meanwhile
            return self

        def run(self, stop, sink):
            started.wait(2)
            self.lost = 2
            sink(ended("198.18.0.1", "198.18.0.2"))
            stop.wait()

        def close(self):
            self.closed = True

    import threading

    started = threading.Event()
    ct = FakeConntrack()
    rec = FlowRecorder("hv1", clock=lambda: NOW)
    client = FakeClient()
    pipeline: FlowPipeline
    shipper = FlowShipper(rec, client, "hv1", interval=0.05, poll_dropped=lambda: {"kernel": pipeline.kernel_lost()},
                          poll_interval=0.0)
    pipeline = FlowPipeline(FakeNflog, rec, shipper, retry_interval=0.05, conntrack_factory=lambda: ct)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(pipeline.run(stop))
        for _ in range(120):
            await asyncio.sleep(0.025)
            if sum(n for _, n, _ in client.calls) >= 2:
                break
        stop.set()
        await asyncio.wait_for(task, 3)

    asyncio.run(main())
    assert sum(n for _, n, _ in client.calls) == 2 and sum(d for _, _, d in client.calls) == 2
    assert ct.closed and FakeConntrack.opens == 2
