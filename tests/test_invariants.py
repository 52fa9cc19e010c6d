"""tests/invariants.py finds each kind of violation it claims to (damaged records written raw)."""

from __future__ import annotations

import json

import pytest

from invariants import check_invariants, store_dump, assert_unchanged
from storm import NODE, make_world
from topoipam.ipam import AssignRequest, IpamService, keys
from topoipam.store import Update, open_store


@pytest.fixture
def world():
    store = open_store("memory://")
    make_world(store)
    svc = IpamService(store)
    ips = [str(svc.auto_assign(AssignRequest(node=NODE, handle=f"h{i}", attrs={"node": NODE})).ipv4[0].ip)
           for i in range(3)]
    return store, [(ip, f"h{i}") for i, ip in enumerate(ips)]


def _edit(store, key, change):
    rec = store.get(key)
    value = json.loads(rec.value)
    change(value)
    store.commit([Update(key, json.dumps(value).encode(), rec.revision)])


def _block_key(store):
    return store.list(keys.block_prefix(4))[0].key


def test_a_consistent_store_has_no_violation(world):
    store, acks = world
    assert check_invariants(store, acks) == []


def test_an_address_free_and_allocated_at_once(world):
    store, acks = world
    _edit(store, _block_key(store), lambda b: b["unallocated"].append(0))
    assert any("both allocated and free" in p for p in check_invariants(store, acks))


def test_a_handle_count_that_disagrees(world):
    store, acks = world
    _edit(store, keys.handle_key("h1"), lambda h: h["block"].update({k: 2 for k in h["block"]}))
    assert any(p.startswith("handle h1: record says") for p in check_invariants(store, acks))


def test_an_affinity_without_its_block(world):
    store, acks = world
    from topoipam.store import Create

    store.commit([Create(keys.ROOT + f"host/{NODE}/ipv4/block/0a50ff00-26", b'{"state":"confirmed","deleted":false}')])
    assert any("which does not exist" in p for p in check_invariants(store, acks))


def test_an_acknowledged_address_lost_or_readdressed(world):
    store, acks = world
    IpamService(store).release_by_handle("h2")
    assert any("is not allocated: lost" in p for p in check_invariants(store, acks))
    IpamService(store).auto_assign(AssignRequest(node=NODE, handle="other", attrs={"node": NODE}))
    problems = check_invariants(store, acks)
    assert any("is held by other" in p for p in problems) or any("lost" in p for p in problems)


def test_store_dump_sees_any_change(world):
    store, _ = world
    before = store_dump(store)
    assert_unchanged(before, store)
    IpamService(store).release_by_handle("h0")
    with pytest.raises(AssertionError):
        assert_unchanged(before, store)
