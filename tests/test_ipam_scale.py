"""Datastore operations per assignment do not grow with nodes or blocks (CountingStore)."""

from __future__ import annotations

import ipaddress

import pytest

from test_ipam_world import World
from topoipam.core import blockgen
from topoipam.ipam.blocks import block_net_of
from topoipam.store import open_store
from topoipam.store.counting import CountingStore


def _ops(world, fn):
    before = world.store.counts()
    fn()
    return world.store.counts() - before


def _world(nodes):
    w = World(CountingStore(open_store("memory://")))
    w.pool("pool", "10.0.0.0/12")
    for i in range(nodes):
        w.node(f"node-{i}", rack=str(i % 4))
        w.assign(f"node-{i}", f"warm-{i}")
    return w


@pytest.mark.parametrize("kind", ["in affine block", "new block"])
def test_ops_per_assignment_equal_at_10_and_1000_nodes(kind):
    figures = []
    for nodes in (10, 1000):
        w = _world(nodes)
        if kind == "new block":
            w.assign("node-0", "fill", num4=63)  # node-0's block is full now
        figures.append(_ops(w, lambda: w.assign("node-0", "probe")))
    assert figures[0] == figures[1]
    assert figures[0].writes == 1 and figures[0].reads <= 8


def test_claiming_a_new_block_in_a_crowded_pool_takes_bounded_reads():
    """20,000 blocks claimed from exactly where the new node starts: the claim still reads one
    summary page, as in an empty pool (Calico's findUsableBlock lists every block)."""
    def claim_ops(claimed):
        w = World(CountingStore(open_store("memory://")))
        w.pool("big", "10.0.0.0/8")
        w.node("owner")
        w.node("newcomer")
        pool = ipaddress.ip_network("10.0.0.0/8")
        start = blockgen.start_index("newcomer", blockgen.num_blocks(pool, 26))
        if claimed:
            first = pool.network_address + (start << 6)  # /26 blocks: 64 addresses each
            last = pool.network_address + ((start + claimed) << 6) - 1
            for cidr in ipaddress.summarize_address_range(first, last):
                w.svc.claim_affinity(str(cidr), "owner")
        ops = _ops(w, lambda: w.assign("newcomer", "probe"))
        [alloc] = w.svc.allocations()
        assert alloc.block == block_net_of(pool.network_address + ((start + claimed) << 6), 26)  # next in host order
        return ops

    assert claim_ops(20_000) == claim_ops(0)
