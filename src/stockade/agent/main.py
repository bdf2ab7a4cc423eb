"""Build and run one agent process: `stockade agent run --host hv1 --controller URL ...`.

`build_agent` is where the whole agent graph is wired, in one place; `run_agent`
runs it. The command line is elsewhere (`agent.command`, argparse, which every entry
point uses), so that this module, which every agent process imports, does not load typer
(~7 MB resident, docs/performance.md).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from stockade.agent.dns_proxy import DnsProxy
from stockade.agent.fqdn_learning import DEFAULT_MAX_TTL, DEFAULT_MIN_TTL, Answer, LearnedNames
from stockade.agent.flows import CounterDelta, FlowPipeline, FlowRecorder, FlowShipper, FlowSink
from stockade.agent.loop import Agent, AgentConfig, EndpointDriver
from stockade.agent.memory import limit_arenas
from stockade.agent.metrics import AgentMetrics, serve
from stockade.agent.migration import ConnectionCarrier
from stockade.agent.reconciler import Reconciler
from stockade.agent.rule_counters import RuleCounterReader
from stockade.agent.saved_program import SavedProgram
from stockade.compile.host import LOG_SUPPRESSED, CompileOptions
from stockade.redaction import install_log_redaction
from stockade.dataplane.attach import HostAttachments
from stockade.dataplane.conntrack import ConntrackReader, forget_connections
from stockade.dataplane.link_events import LinkEventReader
from stockade.dataplane.nflog import NflogReader
from stockade.dataplane.nft_driver import NftDriver
from stockade.compile.dns import DnsInterception
from stockade.errors import DataplaneError
from stockade.nft.ir import FQDN_SET_PREFIX
from stockade.model.state import DesiredState

log = logging.getLogger(__name__)


@dataclass
class AgentSettings:
    host: str
    controller: str
    token: str
    table: str = "stockade"
    metrics_address: str | None = None
    flow_log_group: int | None = 100   # NFLOG group of flow records; None: no flow logging
    flow_queue: int = 10_000
    flow_conntrack: bool = True        # end records (packets, bytes) from conntrack DESTROY events
    # Where the last applied program is saved (agent-<host>.program.json) and put back at boot;
    # None: nothing is saved (the host is open after a reboot until the controller answers).
    state_dir: Path | None = None
    accept_new_store: bool = False     # take a store with another identity, or one behind us
    ca: Path | None = None             # PEM bundle the controller's certificate is verified against
    # Plumb the host side of local workloads on interfaces a hypervisor or runtime made
    # (dataplane.attach), woken by link events; off where the runtime does it, or in the lab,
    # whose driver plumbs its own and the marked ones (lab.agent).
    attach: bool = True
    # Live migration: hand a moving workload's open connections to its new host (agent.migration).
    carry_connections: bool = True
    # Egress by domain name (issue 18): workloads' DNS to these resolvers through this agent's
    # proxy (compile.dns, agent.dns_proxy); None: no interception.
    dns: DnsInterception | None = None
    dns_fail: str = "closed"           # the proxy cannot start: "closed" or "open" (agent.command)
    fqdn_ttl: tuple[int, int] = (DEFAULT_MIN_TTL, DEFAULT_MAX_TTL)  # learned addresses live within


def build_agent(settings: AgentSettings, endpoints: EndpointDriver | None = None) -> tuple[Agent, AgentMetrics]:
    """The agent's graph. `endpoints` realises local workloads' interfaces (the lab's driver,
    `stockade.lab.agent`, passed in, never imported); without one, the host side of interfaces a
    hypervisor or CNI made is plumbed by `dataplane.attach` (unless `settings.attach` is off)."""
    from stockade.client import ControllerClient

    class AgentClient(ControllerClient):
        """The controller as this agent sees it: its host's view of the state (the controller's
        `host_views`), named by the snapshot and sent back with every watch; a watch answered
        410 makes the loop list the (new) view again."""

        _view: str | None = None

        def snapshot(self) -> dict[str, Any]:
            # The full listing's objects parsed one at a time as the cache loads them (a
            # sequence, not a list): never the whole listing as dicts at once (docs/performance.md).
            answer = self.snapshot_lazy()
            self._view = answer.get("view")
            return answer

        def watch(self, since: int, timeout: float = 20.0, view: str | None = None) -> dict[str, Any]:
            answer = super().watch(since, timeout, view if view is not None else self._view)
            self._view = answer.get("view", self._view)
            return answer

    client = AgentClient(settings.controller, settings.token, timeout=60.0, ca=settings.ca)
    driver = NftDriver(table=settings.table)
    learned = LearnedNames(*settings.fqdn_ttl)
    take_back_learned(driver, learned)
    reconciler = Reconciler(driver, settings.host,
                            CompileOptions(table=settings.table, log_group=settings.flow_log_group, dns=settings.dns),
                            learned=learned)
    metrics = AgentMetrics(reconciler)
    flows = None
    if settings.flow_log_group is not None:
        flows = build_flows(settings, client, driver, metrics, learned.names_of if settings.dns else None)
    saved = SavedProgram(settings.state_dir / f"agent-{settings.host}.program.json") if settings.state_dir else None
    if endpoints is None and settings.attach:
        endpoints = HostAttachments(settings.host)
    agent = Agent(AgentConfig(host=settings.host, accept_new_store=settings.accept_new_store), client, reconciler, endpoints,
                  on_outcome=metrics.observe, on_failure=metrics.failed, flows=flows,
                  on_controller_error=metrics.controller_error, saved=saved,
                  forget_connections=forget_connections, link_events=LinkEventReader,
                  carrier=ConnectionCarrier(client, observe=metrics.moved) if settings.carry_connections else None,
                  rule_counters=RuleCounterReader(driver).read)
    metrics.watch_link(lambda: agent.status.controller_reachable)
    return agent, metrics


def build_flows(settings: AgentSettings, client: FlowSink, driver: NftDriver, metrics: AgentMetrics,
                names_of: Callable[[str], list[str]] | None = None) -> FlowPipeline:
    """NFLOG reader and conntrack DESTROY reader (this process's netns: the host's) → recorder →
    shipper → client.send_flows."""
    group = settings.flow_log_group
    assert group is not None
    recorder = FlowRecorder(settings.host, settings.flow_queue, metrics, names_of=names_of)
    suppressed = CounterDelta(lambda: driver.counter(LOG_SUPPRESSED), min_interval=2.0)
    pipeline: FlowPipeline

    def kernel_side() -> dict[str, int]:
        return {"kernel": pipeline.kernel_lost(), "ratelimit": suppressed()}

    shipper = FlowShipper(recorder, client, settings.host, poll_dropped=kernel_side)
    # ConntrackReader.open() sets net.netfilter.nf_conntrack_acct=1 in this (the agent's) netns,
    # at start, so connections tracked from then on carry packet and byte counters for end records.
    conntrack = ConntrackReader if settings.flow_conntrack else None
    pipeline = FlowPipeline(lambda: NflogReader(group), recorder, shipper, conntrack_factory=conntrack)
    return pipeline


def run_agent(settings: AgentSettings, verbose: bool = False, endpoints: EndpointDriver | None = None) -> None:
    """Run one agent until SIGTERM or SIGINT."""
    install_log_redaction()
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s agent[" + settings.host + "] %(name)s: %(message)s")
    limit_arenas()  # before any thread starts: see agent.memory
    agent, metrics = build_agent(settings, endpoints)
    proxy = start_dns_proxy(settings, agent.reconciler, metrics)
    if settings.metrics_address:
        serve(metrics, settings.metrics_address)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await agent.run(stop)
        finally:
            # The watch's long-poll blocks a worker thread, and asyncio.run waits for worker threads
            # before it returns: ending the poll lets a stopping agent exit at once, not up to
            # a watch timeout (20 s) later.
            agent.client.close()

    try:
        asyncio.run(main())
    finally:
        if proxy is not None:
            proxy.close()


def start_dns_proxy(settings: AgentSettings, reconciler: Reconciler, metrics: AgentMetrics) -> DnsProxy | None:
    """The DNS proxy of issue 18, when configured. If it cannot listen: with `dns_fail` closed the
    interception stays (workloads' lookups to the trusted resolvers get no answer), with open it is
    taken out of the program (lookups work, fqdn rules open nothing); logged either way."""
    if settings.dns is None:
        return None
    learned = reconciler.learned
    assert learned is not None

    def learn(answer: Answer) -> None:
        reconciler.add_learned(learned.learn(answer, reconciler.applied))

    proxy = DnsProxy(settings.dns.proxy_address, settings.dns.proxy_port, settings.dns.resolvers, learn)
    try:
        proxy.start()
    except OSError as e:
        log.error("DNS proxy cannot listen on %s:%d (%s); failing %s", settings.dns.proxy_address,
                  settings.dns.proxy_port, e, settings.dns_fail)
        metrics.dns_proxy_down(settings.dns_fail)
        if settings.dns_fail == "open":
            reconciler.options = replace(reconciler.options, dns=None)
        return None
    metrics.watch_dns(proxy, learned)
    return proxy


def take_back_learned(driver: NftDriver, learned: LearnedNames) -> None:
    """What an earlier agent learned is still in the kernel's fqdn sets: take it back, with the
    time each address has left, so that this agent's first full replace keeps it (a restart
    cuts no flow and forgets no name)."""
    try:
        listing = driver.list_table()
    except DataplaneError:
        return
    for item in (listing or {}).get("nftables", []):
        body = item.get("set") if isinstance(item, dict) else None
        if not isinstance(body, dict) or not str(body.get("name", "")).startswith(FQDN_SET_PREFIX):
            continue
        kept = [(e["elem"]["val"], int(e["elem"].get("expires", 0))) for e in body.get("elem", [])
                if isinstance(e, dict) and isinstance(e.get("elem"), dict) and e["elem"].get("expires")]
        if kept:
            learned.remember(str(body["name"]), kept)
