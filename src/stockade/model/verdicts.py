"""One vocabulary for what a rule asks and what was decided: every layer names them from here. Pure.

    Action          what a policy rule asks: allow, deny, reject, pass (to the next tier), log
    DECIDING        the actions that take the decision (pass and log hand it on)
    Verdict         what a flow record says was done: allow, deny, reject, log, and the audit-mode
                    forms would-allow, would-deny, would-reject (an audit-mode rule records what
                    it would have done and changes nothing)
    DENIED          the verdicts that count as denied (`flows --denied`)
    FinalVerdict    what a packet gets in the end (trace, policy tests): allow, deny, reject
"""

from __future__ import annotations

from typing import Literal, get_args

Action = Literal["allow", "deny", "reject", "pass", "log"]
ACTIONS: tuple[str, ...] = get_args(Action)
DECIDING: frozenset[str] = frozenset(ACTIONS) - {"pass", "log"}

FinalVerdict = Literal["allow", "deny", "reject"]
FINAL_VERDICTS: tuple[str, ...] = get_args(FinalVerdict)

Verdict = Literal["allow", "deny", "reject", "would-allow", "would-deny", "would-reject", "log"]
VERDICTS: tuple[str, ...] = get_args(Verdict)
AUDIT_VERDICTS: tuple[str, ...] = tuple(v for v in VERDICTS if v.startswith("would-"))
DENIED: frozenset[str] = frozenset({"deny", "reject"} | {f"would-{v}" for v in ("deny", "reject")})


def would(action: str) -> str:
    """The audit-mode verdict of `action`: what the rule would have done."""
    return f"would-{action}"


def is_denied(verdict: str) -> bool:
    return verdict in DENIED
