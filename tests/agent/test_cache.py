"""The agent's cache shares the equal parts of a full listing, and that changes nothing it serves."""

from __future__ import annotations

import json

import pytest

from bench import synthetic
from stockade.agent.cache import StateCache
from stockade.compile.host import compile_host
from stockade.listing import loads_with_lazy_array
from stockade.model.kinds import key_of, parse_stored
from stockade.model.state import DesiredState
from stockade.nft.render import to_json, full_replace


def _documents() -> list[dict]:
    return synthetic.documents(300, 60)


def test_a_shared_listing_equals_the_parsed_one_and_compiles_the_same() -> None:
    docs = _documents()
    plain = DesiredState.from_objects(5, [parse_stored(d) for d in docs])
    cache = StateCache()
    cache.replace(5, json.loads(json.dumps(docs)))
    shared = cache.state()
    assert sorted(map(key_of, shared.objects())) == sorted(map(key_of, plain.objects()))
    assert shared.objects() == plain.objects()
    for host in ("node-0", "node-7", synthetic.BENCH_HOSTS[0]):
        assert to_json(full_replace(compile_host(shared, host))) == to_json(full_replace(compile_host(plain, host)))


def test_equal_parts_are_one_object() -> None:
    cache = StateCache()
    cache.replace(1, _documents())
    workloads = list(cache.state().workloads.values())
    a, b = [w for w in workloads if w.metadata.namespace == workloads[0].metadata.namespace
            and w.metadata.labels == workloads[0].metadata.labels][:2]
    assert a is not b
    assert a.metadata.labels is b.metadata.labels
    assert a.metadata.namespace is b.metadata.namespace
    assert a.spec.ports is b.spec.ports
    assert a.metadata.annotations is b.metadata.annotations
    rules = [r for p in cache.state().policies.values() for r in p.spec.ingress]
    ports = [p for r in rules for p in r.ports or []]
    assert len({id(p) for p in ports}) < len(ports)


def test_a_lazily_parsed_listing_loads_the_same() -> None:
    docs = _documents()
    text = json.dumps({"revision": 9, "objects": docs})
    lazy = loads_with_lazy_array(text, "objects")
    assert len(lazy["objects"]) == len(docs)
    from_lazy, from_list = StateCache(), StateCache()
    from_lazy.replace(9, lazy["objects"])
    from_list.replace(9, docs)
    assert from_lazy.state().objects() == from_list.state().objects()


def test_a_listing_that_fails_half_way_leaves_the_previous_state_whole() -> None:
    docs = _documents()
    cache = StateCache()
    cache.replace(5, json.loads(json.dumps(docs)))
    before = cache.state()
    broken = json.loads(json.dumps(docs[:20])) + [{"apiVersion": "stockade.io/v1", "kind": "Workload",
                                                   "metadata": {"name": "x"}, "spec": {"nonsense": 1}}]
    with pytest.raises(Exception):
        cache.replace(9, broken)
    assert cache.revision == 5 and cache.synced
    assert cache.state().objects() == before.objects()  # not the 20 objects parsed before the bad one


def test_a_revision_without_events_for_this_host_is_taken_with_the_objects_kept() -> None:
    # The controller sends a host only what its view holds (controller.host_views): a revision
    # that changed another tenant's policy comes with no events, and is still the one to enforce.
    cache = StateCache()
    cache.replace(3, _documents())
    before = cache.state()
    cache.apply_events(5, [])
    after = cache.state()
    assert (cache.revision, after.revision) == (5, 5)
    assert after.objects() == before.objects()
    cache.apply_events(4, [])  # an older answer never moves it back
    assert cache.revision == 5
