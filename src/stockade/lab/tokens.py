"""The lab's tokens: the CLI's admin token and one agent token per hypervisor.

    ensure_tokens(settings, hosts)   make what is missing; the hosts whose agent token is new

Invariants:
- tokens.json holds hashes only; every plaintext is a 0600 file of the state directory
  (admin.token, agent-hvN.token), and an agent token may report for its own host only.
- The tokens are made by the controller's own bootstrap command (`controller init-tokens`,
  commands.init_tokens_argv), run as a process: the lab never imports the controller.
- Nothing here logs or prints a token.
"""

from __future__ import annotations

import os
import subprocess

from stockade.errors import LabError
from stockade.lab import commands
from stockade.lab.processes import agent_name, lab_process_env
from stockade.lab.state import LabSettings


def ensure_tokens(settings: LabSettings, hosts: list[str]) -> list[str]:
    """Make the tokens whose plaintext file is missing; the hosts whose agent token is new.

    Only hashes are in tokens.json, so a lost plaintext cannot be recovered: its
    entry is replaced by a new token. The controller re-reads the file by
    itself; an agent whose token changed must be restarted.
    """
    if not settings.tokens.exists() or not settings.admin_token.exists():
        specs = [f"lab-admin:admin={settings.admin_token}"]
        specs += [f"{agent_name(h)}:agent:{h}={settings.agent_token(h)}" for h in hosts]
        _init_tokens(settings, specs, fresh=True)
        return list(hosts)
    renewed = [h for h in hosts if not settings.agent_token(h).exists()]
    if renewed:
        _init_tokens(settings, [f"{agent_name(h)}:agent:{h}={settings.agent_token(h)}" for h in renewed])
    return renewed


def _init_tokens(settings: LabSettings, specs: list[str], fresh: bool = False) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(commands.init_tokens_argv(settings, specs, fresh), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, env=lab_process_env(os.environ), timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise LabError(f"cannot make the lab's tokens: {e}") from e
    if done.returncode != 0:
        raise LabError(f"cannot make the lab's tokens: {done.stderr.strip() or f'exit {done.returncode}'}")
