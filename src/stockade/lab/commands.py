"""The command line of each lab process: controller replicas, etcd members, agents, `init-tokens`.

    controller_argv   a controller replica, in the control-plane netns, serving HTTPS on the fabric
    etcd_argv         one member of the lab's 3-member etcd cluster (etcd_store_url: the controllers' --store)
    agent_argv        one agent, in its hypervisor's netns
    init_tokens_argv  the controller's own bootstrap command that makes the lab's tokens

Invariants:
- Pure: builds lists of strings from the settings and the lab's naming; starts, reads and
  writes nothing.
- Every setting a process needs is on its command line, its token in a 0600 file the line
  names: nothing is passed through the environment (processes.lab_process_env).
- The command line of every long-running process names the state directory, which is how
  `processes` tells our processes from others.
"""

from __future__ import annotations

import sys

from stockade.lab import naming
from stockade.lab.state import LabSettings

AGENT_METRICS_PORT = 9301
PROMETHEUS_PORT = 9090  # the lab's Prometheus (lab.prometheus), on the control plane's first address


def controller_argv(settings: LabSettings, cli_fd: int, hosts: list[str], replica: int = 1,
                    store: str = "sqlite", with_prometheus: bool = False) -> list[str]:
    """A controller replica runs in the control-plane netns and listens on the fabric, where
    agents reach it over TLS as on real hosts; the CLI's socket (127.0.0.1:port, in the host's
    own netns, bound by the supervisor) is handed to it as file descriptor `cli_fd`."""
    cp = naming.control_netns(settings.prefix)
    where = ["--db", str(settings.db)] if store == "sqlite" else ["--store", etcd_store_url()]
    return ["nsenter", f"--net=/run/netns/{cp}", sys.executable, "-m", "stockade", "controller", "serve",
            *where, "--listen", f"{naming.controller_addresses(replica)[0]}:{naming.CONTROLLER_PORT}",
            "--listen-fd", str(cli_fd),
            "--tokens", str(settings.tokens), "--known-hosts", ",".join(hosts),
            "--tls-cert", str(settings.tls_cert), "--tls-key", str(settings.tls_key),
            *(["--prometheus", f"http://{naming.CONTROLLER_V4}:{PROMETHEUS_PORT}"] if with_prometheus else [])]


def etcd_store_url() -> str:
    return "etcd://" + ",".join(f"{naming.etcd_address(j)}:{naming.ETCD_CLIENT_PORT}"
                                for j in range(1, naming.ETCD_MEMBERS + 1))


def etcd_argv(settings: LabSettings, member: int) -> list[str]:
    """One member of the lab's 3-member etcd cluster, in the control-plane netns on the fabric
    (plain HTTP: it never leaves the lab's namespaces). Transaction limits raised so that one
    revision of 10,000 objects is one transaction (docs/operations.md)."""
    cp = naming.control_netns(settings.prefix)
    address = naming.etcd_address(member)
    cluster = ",".join(f"etcd-{j}=http://{naming.etcd_address(j)}:{naming.ETCD_PEER_PORT}"
                       for j in range(1, naming.ETCD_MEMBERS + 1))
    return ["nsenter", f"--net=/run/netns/{cp}", "etcd", "--name", f"etcd-{member}",
            "--data-dir", str(settings.etcd_dir(member)),
            "--listen-client-urls", f"http://{address}:{naming.ETCD_CLIENT_PORT}",
            "--advertise-client-urls", f"http://{address}:{naming.ETCD_CLIENT_PORT}",
            "--listen-peer-urls", f"http://{address}:{naming.ETCD_PEER_PORT}",
            "--initial-advertise-peer-urls", f"http://{address}:{naming.ETCD_PEER_PORT}",
            "--initial-cluster", cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", f"stockade-{settings.prefix}",
            "--max-txn-ops", "60000", "--max-request-bytes", "67108864", "--log-level", "warn", "--logger", "zap"]


def agent_argv(settings: LabSettings, host: str, controllers: int = 1) -> list[str]:
    # nsenter --net only: the agent's own netns is the hypervisor's, while it still
    # shares the mount namespace, so it sees /run/netns and can make workload netns.
    # `python -m stockade.lab.agent`: the agent with the lab's endpoint driver, without the rest
    # of the CLI (~35 MB less resident memory per lab host, docs/performance.md); the options of
    # `python -m stockade.agent run` and the lab's prefix.
    hv = naming.host_netns(settings.prefix, host)
    return ["nsenter", f"--net=/run/netns/{hv}", sys.executable, "-m", "stockade.lab.agent", "run",
            "--host", host, "--controller", naming.controller_url(controllers), "--ca", str(settings.ca_cert),
            "--token-file", str(settings.agent_token(host)), "--lab-prefix", settings.prefix,
            "--state-dir", str(settings.state_dir),
            # Each agent serves /metrics inside its own hypervisor's namespace, as on a real host.
            "--metrics-address", f"{naming.node_addresses(host)[0]}:{AGENT_METRICS_PORT}",
            # Its workloads' DNS to the lab's resolver goes through its proxy (issue 18); learned
            # addresses live at least a second, so that tests can watch a TTL run out.
            "--dns-resolver", naming.DNS_SERVER_V4, "--dns-proxy", f"{naming.GATEWAY_V4}:{naming.DNS_PROXY_PORT}",
            "--fqdn-min-ttl", "1"]


def init_tokens_argv(settings: LabSettings, specs: list[str], fresh: bool = False) -> list[str]:
    argv = [sys.executable, "-m", "stockade.controller", "init-tokens", "--tokens", str(settings.tokens)]
    for spec in specs:
        argv += ["--token", spec]
    return argv + (["--fresh"] if fresh else [])
