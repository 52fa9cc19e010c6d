"""Races and stale records the IPAM engine must survive: a claim that a pool delete overtakes, an
affinity left without its block, threads sharing one service."""

from __future__ import annotations

import ipaddress
import sys
import threading

import pytest

from test_ipam_world import World
from topoipam.errors import NotFoundError, ValidationError
from topoipam.ipam import AssignRequest, keys
from topoipam.ipam.blocks import AFFINITY_VALUE
from topoipam.ipam.topology import StoreTopology
from topoipam.store.base import Create
from topoipam.store.counting import CountingStore


class RacingTopology(StoreTopology):
    """The datastore's topology, with one concurrent write landing right after the service read the
    pools (the interleaving of a pool delete with an assignment, made deterministic)."""

    def __init__(self, store) -> None:
        super().__init__(store)
        self.after_pools = None

    def pools(self):
        pools = super().pools()
        action, self.after_pools = self.after_pools, None
        if action is not None:
            action()
        return pools


@pytest.fixture
def w(store):
    world = World(store)
    world.pool("p0", "10.0.0.0/24")
    world.node("n0")
    return world


@pytest.fixture
def racing(store):
    topo = RacingTopology(store)
    world = World(store, topology=topo)
    world.pool("p0", "10.0.0.0/24")
    world.node("n0")
    return world, topo


def test_assign_ip_into_block_whose_affinity_outlived_it(w):
    net = ipaddress.ip_network("10.0.0.64/26")
    w.store.commit([Create(keys.affinity_key("n0", net), AFFINITY_VALUE)])  # the block is missing
    assert str(w.svc.assign_ip("10.0.0.70", "h", None, "n0")) == "10.0.0.70/26"
    assert w.block("10.0.0.64/26").affinity == "host:n0"
    assert w.svc.ips_by_handle("h") == [ipaddress.ip_address("10.0.0.70")]
    assert w.svc.check().ok


def test_assign_ip_claim_does_not_land_after_the_pool_was_disabled(racing):
    w, topo = racing
    before = w.ipam_state()
    topo.after_pools = lambda: w.update_pool("p0", disabled=True)
    with pytest.raises(ValidationError, match="not in a configured pool"):
        w.svc.assign_ip("10.0.0.5", "h", None, "n0")
    assert w.ipam_state() == before


def test_claim_affinity_does_not_land_after_the_pool_was_disabled(racing):
    w, topo = racing
    before = w.ipam_state()
    topo.after_pools = lambda: w.update_pool("p0", disabled=True)
    with pytest.raises(ValidationError, match="not within any configured pools"):
        w.svc.claim_affinity("10.0.0.0/25", "n0")
    assert w.ipam_state() == before


def test_claim_lands_when_the_pool_changed_but_still_serves(racing):
    w, topo = racing
    topo.after_pools = lambda: w.update_pool("p0", nat_outgoing=True)
    assert str(w.svc.assign_ip("10.0.0.5", "h", None, "n0")) == "10.0.0.5/26"
    topo.after_pools = lambda: w.update_pool("p0", nat_outgoing=False)
    claimed, failed = w.svc.claim_affinity("10.0.0.128/26", "n0")
    assert [str(n) for n in claimed] == ["10.0.0.128/26"] and failed == []
    assert w.svc.check().ok


def test_threads_share_one_service(store):
    """The agent serves each connection on a thread of one IpamService: its kept affinity lists are
    read by assignments while other threads' commits change them (full-hints, releases, claims)."""
    world = World(store)
    world.pool("small", "10.2.0.0/20", block_size=30)  # 4 addresses a block: a long affinity list
    world.node("n0")
    svc, errors = world.svc, []
    svc.claim_affinity("10.2.0.0/21", "n0")
    # the window is a few bytecodes wide: many rounds where they are cheap
    threads_n, rounds = 6, {"MemoryStore": 150, "SqliteStore": 40}.get(type(store).__name__, 15)

    def worker(i):
        own, own_block = f"10.2.15.{4 * i + 1}", f"10.2.15.{4 * i}/30"  # outside the claimed half
        try:
            for r in range(rounds):
                res = svc.auto_assign(AssignRequest(node="n0", handle=f"h{i}-{r}", num4=4))
                svc.release_ips([ip.ip for ip in res.ipv4])
                svc.assign_ip(own, f"o{i}", None, "n0")
                svc.release_ips([own])
                svc.release_affinity(own_block, "n0", must_be_empty=True)
        except Exception as exc:  # noqa: BLE001 - any failure of a worker fails the test
            errors.append(exc)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: the unlocked window is a few bytecodes wide
    try:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert errors == []
    assert svc.allocations() == [] and svc.check().ok


@pytest.fixture
def racks(store):
    topo = RacingTopology(store)
    world = World(store, topology=topo)
    world.pool("rack-0", "10.0.0.0/24", node_selector='rack == "0"')
    world.node("n0", rack="0")
    return world, topo


def test_release_keeps_the_block_when_the_node_is_selected_again_meanwhile(racks):
    w, topo = racks
    iface = ipaddress.ip_interface(w.ip4("n0"))
    w.relabel("n0", rack="1")  # the pool no longer selects n0: an emptied block would be let go
    topo.after_pools = lambda: w.relabel("n0", rack="0")  # ... but n0 is selected again before that lands
    assert w.svc.release_ips([iface.ip]) == []
    assert w.block(str(iface.network)).affinity == "host:n0"
    assert w.store.get(keys.affinity_key("n0", iface.network)) is not None
    assert w.svc.check().ok


def test_release_keeps_the_block_when_its_pool_is_enabled_again_meanwhile(racks):
    w, topo = racks
    w.assign("n0", "h", num4=70)  # two blocks: both emptied and settled in one commit
    w.update_pool("rack-0", disabled=True)
    topo.after_pools = lambda: w.update_pool("rack-0", disabled=False)
    assert len(w.svc.release_by_handle("h")) == 70
    assert [b.affinity for b in w.svc.block_usage()] == ["host:n0", "host:n0"]
    assert w.svc.check().ok


def test_release_lets_go_of_the_block_of_a_dropped_node(racks):
    w, _ = racks
    w.assign("n0", "h", num4=70)
    w.relabel("n0", rack="1")
    assert len(w.svc.release_by_handle("h")) == 70
    assert w.svc.block_usage() == [] and w.store.list(keys.affinity_prefix("n0", 4)) == []


def test_one_answer_for_an_unknown_node_and_a_bad_address(w):
    before = w.ipam_state()
    for call in (lambda: w.assign("ghost"), lambda: w.svc.assign_ip("10.0.0.5", "h", None, "ghost"),
                 lambda: w.svc.claim_affinity("10.0.0.0/26", "ghost")):
        with pytest.raises(NotFoundError, match=r"^resource does not exist: Node\(ghost\): node ghost is not "
                                                r"registered$"):
            call()
    for call in (lambda: w.svc.release_ips(["10.0.0.5/26"]), lambda: w.svc.assign_ip("banana", None, None, "n0")):
        with pytest.raises(ValidationError, match=r"^invalid IP address specified: "):
            call()
    assert w.svc.release_ips([ipaddress.ip_interface("10.0.0.5/26")]) == [ipaddress.ip_address("10.0.0.5")]
    assert w.ipam_state() == before


def test_allocation_of_one_address_reads_only_its_candidate_blocks(store):
    counting = CountingStore(store)
    world = World(counting)
    world.pool("p0", "10.0.0.0/16")
    world.node("n0")
    res = world.assign("n0", "h", num4=130, attrs={"pod": "web"})  # three blocks
    ip = res.ipv4[129]
    before = counting.counts()
    found = world.svc.allocation_of(str(ip.ip))
    # one get_many, whatever the number of blocks, and one read of the handle that carries the attributes
    assert (counting.counts() - before).reads == 2
    assert (found.ip, found.handle, found.attrs, found.block, found.node) == (ip, "h", {"pod": "web"}, ip.network, "n0")
    assert found in world.svc.allocations()
    assert world.svc.allocation_of(ip.network.broadcast_address) is None  # in a block, not allocated
    assert world.svc.allocation_of("10.0.200.1") is None  # in no block
