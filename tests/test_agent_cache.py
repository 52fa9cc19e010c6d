"""The agent's optimistic block cache: a stale cached block costs a failed commit, never a wrong address.

Real SQLite files; a second, uncached IPAM service plays "another writer".
"""

from __future__ import annotations

from ipaddress import ip_interface

import pytest

from topoipam.agent.cache import BlockCacheStore
from topoipam.agent.node import register_node
from topoipam.ipam import AssignRequest, IpamService, StoreTopology
from topoipam.ipam import keys
from topoipam.model.codec import decode_documents
from topoipam.resources.service import ResourceService
from topoipam.store import open_store
from topoipam.store.counting import CountingStore

POOL = """
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: p}
spec: {cidr: 10.0.0.0/26}  # one block, so the addresses are predictable
"""


@pytest.fixture
def world(tmp_path):
    store = open_store(f"sqlite://{tmp_path}/cache.db")
    ResourceService(store).create(decode_documents(POOL, "test"))
    register_node(store, "n", {})
    counting = CountingStore(store)
    cache = BlockCacheStore(counting, "n", ttl=3600)
    try:
        # Topology reads (pools, node, config) go uncounted: the agent keeps them warm by watch.
        yield store, counting, cache, IpamService(cache, topology=StoreTopology(store)), IpamService(store)
    finally:
        store.close()


def assign(svc, handle):
    return svc.auto_assign(AssignRequest(node="n", handle=handle, attrs={"node": "n"})).ipv4[0]


def test_steady_state_reads_neither_block_nor_affinities(world):
    _, counting, cache, cached, _ = world
    assert assign(cached, "h0") == ip_interface("10.0.0.0/26")  # claims the block: the cache learns it
    before = counting.counts()
    for i in range(1, 11):
        assert assign(cached, f"h{i}") == ip_interface(f"10.0.0.{i}/26")
    spent = counting.counts() - before
    assert spent.writes == 10 and spent.failed_writes == 0
    assert spent.round_trips <= 20  # at most the handle read and the commit, per assignment


def test_a_block_changed_behind_the_cache_is_read_again_and_nothing_is_duplicated(world):
    store, counting, cache, cached, other = world
    assert assign(cached, "a") == ip_interface("10.0.0.0/26")
    assert assign(other, "b") == ip_interface("10.0.0.1/26")  # the cache still holds the block without .1
    before = counting.counts()
    assert assign(cached, "c") == ip_interface("10.0.0.2/26")
    spent = counting.counts() - before
    assert spent.failed_writes == 1  # planned .1 on the stale copy; the compare-and-swap refused it
    held = sorted(str(a.ip) for a in IpamService(store).allocations())
    assert held == ["10.0.0.0/26", "10.0.0.1/26", "10.0.0.2/26"]


def test_release_behind_the_cache_then_release_through_it(world):
    store, _, cache, cached, other = world
    assign(cached, "a")
    assign(cached, "b")
    other.release_by_handle("a")  # the cache's copy still shows .0 held
    assert [str(i) for i in cached.release_by_handle("b")] == ["10.0.0.1"]
    assert IpamService(store).allocations() == []
    assert IpamService(store).check().ok


def test_a_deleted_affinity_is_not_trusted(world):
    store, _, cache, cached, other = world
    assign(cached, "a")
    cached.release_by_handle("a")
    net = ip_interface("10.0.0.0/26").network
    other.release_affinity(str(net), "n")  # deletes the empty block and its affinity behind the cache
    assert store.get(keys.block_key(net)) is None
    got = assign(cached, "b")
    assert got.network == net  # claimed again, properly: the block and its affinity exist
    assert store.get(keys.block_key(net)) is not None and store.get(keys.affinity_key("n", net)) is not None
    assert IpamService(store).check().ok
