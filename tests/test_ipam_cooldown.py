"""The release cooldown: an address just released is passed over while the node's blocks have others.

On a real SQLite file, with the service's clock given (no sleeping): a /29 pool of /30 blocks, so
that one block fills after four assignments and the next block is the alternative.
"""

from __future__ import annotations

import ipaddress

import pytest

from topoipam.core.block import Block
from topoipam.ipam import AssignRequest, IpamService, keys
from topoipam.ipam.pool_blocks import PoolBlocks
from topoipam.model.codec import decode_documents
from topoipam.resources.service import ResourceService
from topoipam.store import open_store

SETUP = """
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n0}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: small}
spec: {cidr: 10.9.0.0/29, blockSize: 30, nodeSelector: all()}
"""


def config(cooldown: str) -> str:
    return ("apiVersion: projectcalico.org/v3\nkind: IPAMConfiguration\nmetadata:\n  name: default\n"
            f"  annotations: {{topoipam.io/release-cooldown: '{cooldown}'}}\nspec: {{strictAffinity: true}}\n")


@pytest.fixture
def world(tmp_path):
    store = open_store(f"sqlite://{tmp_path}/cool.db")
    ResourceService(store, PoolBlocks(store)).create(decode_documents(SETUP, "test"))
    clock = [1_800_000_000.0]
    try:
        yield store, clock, IpamService(store, clock=lambda: clock[0])
    finally:
        store.close()


def one(svc, handle):
    return svc.auto_assign(AssignRequest(node="n0", handle=handle)).ipv4[0].ip


def fill_first_block(svc):
    return [one(svc, f"h{i}") for i in range(4)]


def test_a_just_released_address_is_not_handed_out_while_the_nodes_blocks_have_others(world):
    store, clock, svc = world
    first = fill_first_block(svc)
    second = one(svc, "b0")  # the node's second block
    assert second in ipaddress.ip_network("10.9.0.4/30")
    svc.release_by_handle("h1")
    clock[0] += 1
    got = one(svc, "new")
    assert got not in first and got in ipaddress.ip_network("10.9.0.4/30")
    block = Block.from_json(store.get(keys.block_key(ipaddress.ip_network("10.9.0.0/30"))).value)
    assert block.released_at == {1: 1_800_000_000}  # in the block record, whole seconds
    clock[0] += 5  # the default cooldown (5 s) has passed: the address is free to go again
    assert one(svc, "later") == first[1]


def test_with_nothing_else_free_in_the_nodes_blocks_the_cooling_address_is_handed_out(world):
    store, clock, svc = world
    first = fill_first_block(svc)
    svc.release_by_handle("h2")
    assert one(svc, "again") == first[2]  # no new block claimed for it, no failure
    assert len(store.list(keys.block_prefix(4))) == 1


def test_the_cooldown_is_an_ipamconfiguration_annotation(world):
    store, clock, svc = world
    ResourceService(store, PoolBlocks(store)).apply(decode_documents(config("0s"), "test"))
    first = fill_first_block(svc)
    one(svc, "b0")
    svc.release_by_handle("h1")
    assert one(svc, "new") == first[1]  # 0s: off, the free list's order as before
    ResourceService(store, PoolBlocks(store)).apply(decode_documents(config("1m"), "test"))
    svc.release_by_handle("new")
    clock[0] += 30
    assert one(svc, "x") in ipaddress.ip_network("10.9.0.4/30")  # 30 s < 1 min


def test_block_cooldown_value_semantics():
    b = Block.new(ipaddress.ip_network("10.0.0.0/30"), "host:n", None, 1)
    assert b.auto_assign(4, "h", None) == [0, 1, 2, 3]
    b.release([2], now=100.2, keep=60)
    assert b.released_at == {2: 101}  # rounded up: never shortens the cooldown
    assert b"releasedAt" in b.to_json() and Block.from_json(b.to_json()).released_at == {2: 101}
    assert b.auto_assign(1, "h", None, now=105.0, cooldown=5) == []
    assert b.auto_assign(1, "h", None, now=106.0, cooldown=5) == [2]
    assert b.released_at == {} and b"releasedAt" not in b.to_json()  # back to Calico's form
    b.release([0], now=200, keep=60)
    b.release([1], now=270, keep=60)
    assert b.released_at == {1: 270}  # records older than ``keep`` go at the next release


def test_churn_in_a_block_with_only_cooling_addresses_stays_at_no_read_and_one_commit(tmp_path):
    """ADD/DEL churn faster than the cooldown in the node's only block with room: the kept path sees,
    from the kept blocks alone, that nothing else is free, so it needs no read (as without cooldown)."""
    from topoipam.store.counting import CountingStore

    inner = open_store(f"sqlite://{tmp_path}/churn.db")
    try:
        ResourceService(inner, PoolBlocks(inner)).create(decode_documents(SETUP, "test"))
        store, clock = CountingStore(inner), [1_800_000_000.0]
        svc = IpamService(store, clock=lambda: clock[0])
        first = fill_first_block(svc)
        svc.release_by_handle("h3")
        one(svc, "warm")  # reads once: the cooling address, as nothing else is free in the node's blocks
        svc.release_by_handle("warm")
        for i in range(5):
            before = store.counts()
            assert one(svc, f"c{i}") == first[3]
            c = store.counts() - before
            assert (c.reads, c.writes, c.failed_writes) == (0, 1, 0)
            svc.release_by_handle(f"c{i}")
    finally:
        inner.close()


MIXED = """
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n0, labels: {rack: "0"}}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: a-host}
spec: {cidr: 10.9.1.0/30, blockSize: 30, nodeSelector: all()}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: b-rack
  annotations: {topoipam.io/affinity-label: rack}
spec: {cidr: 10.9.0.0/29, blockSize: 30, nodeSelector: all()}
"""


def test_the_cooldown_is_decided_per_holder_when_host_and_domain_pools_are_both_chosen(tmp_path):
    """The node's own block has only a cooling address (nothing else free: it is given out), then
    the request goes on to the rack's blocks, where the cooldown applies again: the rack's block
    with only a cooling address is passed over for its other block (docs/domain-affinity.md)."""
    store = open_store(f"sqlite://{tmp_path}/mixed.db")
    try:
        ResourceService(store, PoolBlocks(store)).create(decode_documents(MIXED + "---\n" + config("5s"), "test"))
        clock = [1_800_000_000.0]
        svc = IpamService(store, clock=lambda: clock[0])
        host = fill_first_block(svc)  # the node's block of a-host: its pool has no other
        assert all(ip in ipaddress.ip_network("10.9.1.0/30") for ip in host)
        rack = [one(svc, f"d{i}") for i in range(4)]  # then the rack's first block
        assert all(ip in ipaddress.ip_network("10.9.0.0/30") for ip in rack)
        assert one(svc, "e0") == ipaddress.ip_address("10.9.0.4")  # the rack's second block
        svc.release_by_handle("h1")
        svc.release_by_handle("d1")
        clock[0] += 1
        got = svc.auto_assign(AssignRequest(node="n0", handle="two", num4=2)).ipv4
        assert [i.ip for i in got] == [host[1], ipaddress.ip_address("10.9.0.5")]
        assert Block.from_json(store.get(keys.block_key(ipaddress.ip_network("10.9.0.0/30"))).value).released_at
    finally:
        store.close()
