"""A lab with upstream's conformance world, per test module (see world.py)."""

from __future__ import annotations

from typing import Iterator

import pytest
import yaml

from tests.e2e.conformance.world import HOUSES, Conformance, Servers, ns, world
from tests.e2e.conftest import make_lab


@pytest.fixture(scope="module")
def conformance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Conformance]:
    for lab in make_lab(tmp_path_factory.mktemp("cnplab"), 2):
        lab.apply_text(yaml.safe_dump_all(world()), "--wait", "--timeout", "60")
        client = lab.client()
        pods = {f"{ns(h)}/{w['metadata']['name']}": w
                for h in HOUSES for w in client.list("workload", namespace=ns(h))["items"]}
        servers = Servers(w["status"]["netns"] for w in pods.values())
        try:
            yield Conformance(lab, client, pods)
        finally:
            servers.close()
            client.close()


@pytest.fixture
def world_lab(conformance: Conformance) -> Iterator[Conformance]:
    """The world as upstream's suite leaves it between two tests: no policy, the houses' labels."""
    try:
        yield conformance
    finally:
        conformance.reset()
