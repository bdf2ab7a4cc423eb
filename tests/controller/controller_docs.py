"""Small builders of raw documents, as a user would write them in YAML, for the controller tests."""

from __future__ import annotations

from typing import Any

API = "stockade.io/v1"


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def workload(name: str, ns: str = "shop", host: str = "hv1", ips: list[str] | None = None,
             **labels: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"host": host}
    if ips is not None:
        spec["ips"] = ips
    return {"apiVersion": API, "kind": "Workload", "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": spec}


def group(name: str, ns: str = "shop", **match: str) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Group", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"matchLabels": match}}}


def policy(name: str, ns: str = "shop", applies_to: str = "web", from_group: str | None = None,
           port: int = 443) -> dict[str, Any]:
    rule: dict[str, Any] = {"action": "allow", "ports": [{"protocol": "TCP", "port": port}]}
    if from_group is not None:
        rule["from"] = [{"group": from_group}]
    return {"apiVersion": API, "kind": "Policy", "metadata": {"name": name, "namespace": ns},
            "spec": {"appliesTo": {"group": applies_to}, "ingress": [rule]}}


def shop() -> list[dict[str, Any]]:
    """A namespace, two workloads, a group and a policy that uses it."""
    return [namespace("shop", team="retail"), workload("web-1", tier="web"), workload("db-1", tier="db"),
            group("web", tier="web"), policy("web-ingress")]
