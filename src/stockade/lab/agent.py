"""`python -m stockade.lab.agent run ... --lab-prefix P`: an agent of a lab hypervisor.

The agent knows no endpoint driver; the lab gives it its own (`LabEndpoints`), which makes each
local workload's namespace, veth, addresses and routes, as a hypervisor or CNI would on a real
host. The command takes the agent's options (agent.command, their one definition), plus the
lab's prefix; the lab's supervisor starts one per hypervisor namespace.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable

from stockade.agent.command import parser as agent_parser
from stockade.agent.command import settings_from_args
from stockade.agent.main import run_agent
from stockade.dataplane.attach import HostAttachments
from stockade.lab.endpoints import plan_endpoints, reconcile_endpoints
from stockade.model.state import DesiredState


class LabEndpoints:
    """The lab's stand-in for a hypervisor or CNI: realises local workloads as namespaces + veths.

    A pass dumps the hypervisor's links, addresses and routes over netlink: the largest part
    of an agent's CPU for a change that leaves the endpoints as they were (a label, a policy),
    and with twenty lab agents on two CPUs it delayed every rollout (docs/performance.md). So
    a plan equal to the last one that was realised is checked again only once
    `recheck_interval` has passed: plumbing broken by hand is repaired within that time, and
    a new, moved or removed workload (a different plan) at once.
    """

    def __init__(self, prefix: str, host: str, recheck_interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.prefix = prefix
        self.host = host
        self.recheck_interval = recheck_interval
        self.clock = clock
        self._realised: tuple[Any, dict[str, dict[str, Any]], float] | None = None  # plan, statuses, when
        self.attachments = HostAttachments(host, only_marked=True)

    def reconcile(self, state: DesiredState) -> dict[str, dict[str, Any]]:
        # Workloads on interfaces a hypervisor or runtime made here (a lab VM's tap, a podman
        # container's veth through stockade-cni): plumbed as on a real host, not made by the lab.
        attached = self.attachments.reconcile(state)
        return {**self._lab_made(state), **attached}

    def _lab_made(self, state: DesiredState) -> dict[str, dict[str, Any]]:
        plan = plan_endpoints(state, self.host, self.prefix)
        if self._realised is not None:
            last_plan, statuses, checked_at = self._realised
            # Not while an endpoint of the plan is missing (one arriving from another host, whose
            # link the move brings: its arrival wakes the agent, and must be plumbed at once).
            complete = all(ep.key in statuses for ep in plan.local)
            if last_plan == plan and complete and self.clock() - checked_at < self.recheck_interval:
                return statuses
        realised = reconcile_endpoints(plan, self.prefix, self.host)  # raises when any part failed
        statuses = {key: {"netns": s.netns, "interface": s.interface, "mac": s.mac} for key, s in realised.items()}
        self._realised = (plan, statuses, self.clock())
        return statuses


def main(argv: list[str] | None = None) -> None:
    def lab_options(run: argparse.ArgumentParser) -> None:
        run.add_argument("--lab-prefix", required=True, help="The lab whose workloads this agent realises.")

    args = agent_parser("python -m stockade.lab.agent", lab_options).parse_args(argv)
    settings = settings_from_args(args)
    run_agent(settings, args.verbose, endpoints=LabEndpoints(args.lab_prefix, settings.host))


if __name__ == "__main__":
    main(sys.argv[1:])
