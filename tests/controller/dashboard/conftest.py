"""What the dashboard's HTTP tests share: a world of two tenants' namespaces, its tokens, a real
controller (uvicorn in a thread) and a browser-like client that logs in through the form."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import yaml

from stockade.controller.api import build_app
from stockade.controller.auth import create_token_file
from stockade.controller.config import ControllerConfig
from stockade.controller.main import RunningController, start_in_thread
from stockade.controller.ratelimit import AuthFailureLimits
from stockade.model.validation import ValidationSettings

HOSTS = frozenset({"hv1", "hv2"})

STATE = """
apiVersion: stockade.io/v1
kind: Namespace
metadata: {name: shop}
spec: {defaultAction: allowUntilSelected}
---
apiVersion: stockade.io/v1
kind: Namespace
metadata: {name: bank}
spec: {defaultAction: allowUntilSelected}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {name: web, namespace: shop, labels: {tier: web}}
spec: {host: hv1, ips: [198.18.10.1]}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {name: db, namespace: shop, labels: {tier: db}}
spec: {host: hv2, ips: [198.18.10.2]}
---
apiVersion: stockade.io/v1
kind: Workload
metadata: {name: vault, namespace: bank, labels: {tier: secret}}
spec: {host: hv2, ips: [198.18.10.3]}
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: db-in, namespace: shop}
spec:
  appliesTo: {selector: {matchLabels: {tier: db}}}
  ingress:
    - {id: from-web, action: allow, from: [{selector: {matchLabels: {tier: web}}}], ports: [{protocol: TCP, port: 5432}]}
---
apiVersion: stockade.io/v1
kind: Policy
metadata: {name: vault-in, namespace: bank}
spec:
  appliesTo: {selector: {matchLabels: {tier: secret}}}
  ingress:
    - {id: keep-shop-out, action: deny, from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}}]}
"""


@pytest.fixture
def tokens(tmp_path: Path) -> dict[str, str]:
    return create_token_file(tmp_path / "tokens.json", [
        {"name": "alice", "role": "admin"},
        {"name": "vera", "role": "viewer"},
        {"name": "tess", "role": "tenant", "namespaces": ["shop"]},
        {"name": "agent-hv1", "role": "agent", "host": "hv1"},
        {"name": "agent-hv2", "role": "agent", "host": "hv2"},
    ])


@pytest.fixture
def controller(tmp_path: Path, tokens: dict[str, str]) -> Iterator[RunningController]:
    config = ControllerConfig(db_path=tmp_path / "stockade.db", tokens_file=tmp_path / "tokens.json",
                              validation=ValidationSettings(known_hosts=HOSTS),
                              auth_failures=AuthFailureLimits(burst=3, refill_seconds=600))
    running = start_in_thread(config, app=build_app(config))
    try:
        yield running
    finally:
        running.stop()


def api(controller: RunningController, token: str) -> httpx.Client:
    return httpx.Client(base_url=controller.url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def browser(controller: RunningController) -> httpx.Client:
    return httpx.Client(base_url=controller.url, follow_redirects=False, timeout=10)


def login(controller: RunningController, token: str) -> tuple[httpx.Client, str]:
    """A client holding a session cookie, and the session's CSRF token (from the page)."""
    b = browser(controller)
    answer = b.post("/ui/login", data={"token": token, "next": "/ui/changes"})
    assert answer.status_code == 303, answer.text
    page = b.get("/ui/changes")
    assert page.status_code == 200
    csrf = page.text.split('data-csrf="', 1)[1].split('"', 1)[0]
    assert csrf
    return b, csrf


def apply(controller: RunningController, token: str, text: str) -> dict[str, Any]:
    with api(controller, token) as c:
        answer = c.post("/api/v1/apply", json={"documents": list(yaml.safe_load_all(text))})
        assert answer.status_code == 200, answer.text
        return dict(answer.json())
