"""The dashboard's pages and what each page's template is told about its viewer.

A page is a template of the same name (templates/NAME.html) whose script asks the controller's
API for its data with the browser's session; so a page shows exactly what the viewer's token may
read, scoped by the same service code as the CLI (STYLE.md: use cases decide, every entry point
shares them). The context here only decides what to offer (a rollback button, the audit link),
never what to show: the API refuses what the role may not do, whatever a page offers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stockade.controller import rbac
from stockade.controller.auth import Principal
from stockade.controller.rbac import Permission


@dataclass(frozen=True)
class Page:
    name: str    # the path under /ui/ and the template's name
    title: str
    purpose: str  # one line under the title: what the page answers


PAGES: tuple[Page, ...] = (
    Page("overview", "Overview", "Is the firewall enforcing what was asked, everywhere, and what is it stopping?"),
    Page("topology", "Topology", "Hosts, their workloads, the groups and policies that select them, and who may reach whom."),
    Page("flows", "Flows", "Connections as the agents saw them, live, with the rule that decided each."),
    Page("policy", "Policy", "Tiers, policies and rules, with how often each rule matched."),
    Page("why", "Why", "Why is (or isn't) this flow allowed? The verdict, the rule, its counters and its flows."),
    Page("changes", "Changes", "Revisions, what changed between two, rolling back, and what each host enforces."),
)
PAGE_BY_NAME = {p.name: p for p in PAGES}


def holds(principal: Principal, permission: Permission) -> bool:
    return permission in rbac.ROLE_PERMISSIONS.get(principal.role, frozenset())


def page_context(page: Page, principal: Principal, csrf: str) -> dict[str, Any]:
    """What base.html and the page's template need to know about the viewer."""
    return {
        "page": page, "pages": PAGES, "principal": principal, "csrf": csrf,
        "scoped": rbac.is_scoped(principal),
        "namespaces": sorted(principal.namespaces),
        "may_write": holds(principal, Permission.WRITE_OBJECTS),
        "may_read_history": holds(principal, Permission.READ_HISTORY),
        "may_read_flows": holds(principal, Permission.READ_FLOWS),
    }
