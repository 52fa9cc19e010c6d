"""The assignment hot path: what the service keeps between calls, what fences it, and undoing a
rejected request completely (against every store backend)."""

from __future__ import annotations

import ipaddress

import pytest

from test_ipam_world import World
from topoipam.errors import BlockLimitError, ExhaustedError, NoQualifiedPoolError
from topoipam.ipam import AssignRequest, IpamService, keys
from topoipam.resources import repo
from topoipam.model.storage import to_storage
from topoipam.resources.keys import resource_key
from topoipam.resources.service import ResourceService
from topoipam.ipam.pool_blocks import PoolBlocks
from topoipam.store.base import Update
from topoipam.store.counting import CountingStore


def dump(store) -> dict:
    """Every record of the datastore: key -> (value, revision)."""
    return {r.key: (r.value, r.revision) for r in store.list("/")}


@pytest.fixture
def counting(tmp_path):
    """A CountingStore over a real SQLite file, closed in finally: what the hot path reads and writes."""
    from topoipam.store import open_store
    inner = open_store(f"sqlite://{tmp_path}/s.db")
    try:
        yield CountingStore(inner)
    finally:
        inner.close()


def warm_world(store) -> World:
    """Pool p (10.0.0.0/16) and node n0 holding one address: n0's block is claimed and kept."""
    w = World(store)
    w.pool("p", "10.0.0.0/16")
    w.node("n0")
    w.ip4("n0", "warm")
    return w


# -- a rejected request changes nothing (DESIGN invariant 5) -------------------------------------

def test_exhausted_request_gives_back_the_block_it_claimed(store):
    w = World(store)
    w.pool("small", "10.0.0.0/26")
    w.node("n0")
    before = dump(store)
    with pytest.raises(ExhaustedError, match="Assigned 64 out of 65"):
        w.assign("n0", "h", num4=65)
    assert dump(store) == before
    assert w.svc.check().ok
    assert w.ip4("n0", "again") == "10.0.0.0/26"  # the service's kept state did not go stale either


def test_block_limit_request_gives_back_the_block_it_claimed(store):
    w = World(store)
    w.pool("p", "10.0.0.0/24")
    w.node("n0")
    w.config(strict_affinity=True, max_blocks_per_host=1)
    before = dump(store)
    with pytest.raises(BlockLimitError):
        w.assign("n0", "h", num4=65)
    assert dump(store) == before


def test_failed_dual_stack_gives_back_the_ipv4_block(store):
    w = World(store)
    w.pool("v4", "10.0.0.0/24")
    w.node("n0")
    before = dump(store)
    with pytest.raises(NoQualifiedPoolError, match="IPv6"):
        w.assign("n0", "h", num4=1, num6=1)
    assert dump(store) == before


def test_block_used_meanwhile_is_kept_and_only_the_addresses_go(store):
    """A block claimed by the failing request but used by another request since is not deleted."""
    w = World(store)
    w.pool("p", "10.0.0.0/26")
    w.node("n0")
    other = IpamService(store, clock=lambda: w.now)
    w.assign("n0", "first", num4=1)  # claims the block
    blocks_before = {k for k in dump(store) if "/block/" in k}
    other.auto_assign(AssignRequest(node="n0", handle="second"))
    with pytest.raises(ExhaustedError):
        w.assign("n0", "big", num4=100)
    assert {k for k in dump(store) if "/block/" in k} == blocks_before
    assert sorted(a.handle for a in w.svc.allocations()) == ["first", "second"]
    assert w.svc.check().ok


def test_existing_block_stays_when_request_fails(store):
    w = World(store)
    w.pool("p", "10.0.0.0/26")
    w.node("n0")
    w.assign("n0", "a", num4=10)
    before = dump(store)
    with pytest.raises(ExhaustedError):
        w.assign("n0", "b", num4=60)
    after = dump(store)
    assert after.keys() == before.keys()
    assert [a.handle for a in w.svc.allocations()] == ["a"] * 10


# -- kept state is fenced ------------------------------------------------------------------------

def test_steady_state_reads_nothing_and_commits_once(counting):
    w = warm_world(counting)
    before = counting.counts()
    for i in range(20):
        w.ip4("n0", f"h{i}")
    c = counting.counts() - before
    assert (c.reads, c.writes, c.failed_writes) == (0, 20, 0)


def test_label_change_through_resources_takes_effect_at_once(store):
    w = World(store)
    w.pool("rack-0", "10.0.0.0/24", node_selector='rack == "0"')
    w.pool("rack-1", "10.1.0.0/24", node_selector='rack == "1"')
    w.node("n0", rack="0")
    assert w.ip4("n0", "a").startswith("10.0.0.")
    ResourceService(store, PoolBlocks(store)).label("Node", "n0", "rack", "1", overwrite=True)
    assert w.ip4("n0", "b").startswith("10.1.0.")
    assert w.ip4("n0", "a2").startswith("10.1.0.")


def test_node_written_directly_is_fenced_by_its_own_key(store):
    """The agent registers and updates its Node without the topology generation: the node's own
    revision in every assignment commit still catches it."""
    w = World(store)
    w.pool("rack-0", "10.0.0.0/24", node_selector='rack == "0"')
    w.pool("rack-1", "10.1.0.0/24", node_selector='rack == "1"')
    w.node("n0", rack="0")
    assert w.ip4("n0", "a").startswith("10.0.0.")
    node = repo.get_node(store, "n0")
    node.metadata.labels = {"rack": "1"}
    rec = store.get(resource_key("Node", "n0"))
    store.commit([Update(rec.key, to_storage(node), rec.revision)])  # no generation bump
    assert w.ip4("n0", "b").startswith("10.1.0.")


def test_pool_disabled_through_resources_is_not_used(store):
    w = World(store)
    w.pool("a", "10.0.0.0/24")
    w.pool("b", "10.1.0.0/24")
    w.node("n0")
    assert w.ip4("n0", "x").startswith("10.0.0.")
    pool = repo.get_pool(store, "a")
    pool.spec.disabled = True
    ResourceService(store, PoolBlocks(store)).apply([pool])
    assert w.ip4("n0", "y").startswith("10.1.0.")


def test_two_services_on_one_node_never_share_an_address(store):
    """Each service keeps the block it wrote last; the other's writes make that stale, the CAS fails,
    and the retry reads the block again."""
    w = World(store)
    w.pool("p", "10.0.0.0/24")
    w.node("n0")
    a, b = w.svc, IpamService(store, clock=lambda: w.now)
    got = []
    for i in range(70):
        svc = a if i % 3 else b
        got += [str(ip) for ip in svc.auto_assign(AssignRequest(node="n0", handle=f"h{i}")).ipv4]
    assert len(set(got)) == 70
    assert w.svc.check().ok


def test_existing_handle_is_read_after_its_create_fails(store):
    w = World(store)
    w.pool("p", "10.0.0.0/24")
    w.node("n0")
    w.assign("n0", "same")
    IpamService(store, clock=lambda: w.now).auto_assign(AssignRequest(node="n0", handle="same"))
    rec = store.get(keys.handle_key("same"))
    assert b'":2}' in rec.value
    assert len(w.svc.ips_by_handle("same")) == 2 and w.svc.check().ok


def test_release_then_assign_reuses_kept_block_without_conflict(counting):
    w = warm_world(counting)
    before = counting.counts()
    for i in range(10):
        ip = w.ip4("n0", f"h{i}")
        w.svc.release_ips([ipaddress.ip_interface(ip).ip], handle=f"h{i}")
    assert (counting.counts() - before).failed_writes == 0
    assert w.svc.check().ok


def test_specific_address_then_auto_assign_keeps_the_block_in_step(counting):
    w = World(counting)
    w.pool("p", "10.0.0.0/26")
    w.node("n0")
    w.ip4("n0", "a")
    before = counting.counts()
    w.svc.assign_ip("10.0.0.1", "b", {}, "n0")
    assert w.ip4("n0", "c") == "10.0.0.2/26"
    assert (counting.counts() - before).failed_writes == 0
    assert w.svc.check().ok


def test_full_hint_written_with_a_topology_given_by_the_caller(store):
    """The agent's way (no affinity list kept): filling a block from the kept block still marks its
    affinity full, so that later requests skip it unread."""
    from topoipam.ipam import StaticTopology
    from topoipam.ipam.topology import StoreTopology
    w = World(store)
    w.pool("p", "10.0.0.0/25")
    w.node("n0")
    st = StoreTopology(store)
    svc = IpamService(store, topology=StaticTopology(st.pools(), {"n0": st.node("n0")}, st.ipam_config(), []))
    for i in range(64):
        svc.auto_assign(AssignRequest(node="n0", handle=f"h{i}"))
    full = [r for r in store.list(keys.affinity_prefix("n0", 4)) if b'"full":true' in r.value]
    assert len(full) == 1
