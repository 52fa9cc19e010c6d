"""Auto-assign rules (reference section 4) against every store backend."""

from __future__ import annotations

import ipaddress

import pytest

from test_ipam_world import World
from topoipam.core import blockgen
from topoipam.errors import BlockLimitError, ExhaustedError, NoQualifiedPoolError, NotFoundError, ValidationError
from topoipam.ipam import StaticTopology
from topoipam.ipam.blocks import block_net_of
from topoipam.ipam.topology import StoreTopology


@pytest.fixture
def w(store):
    world = World(store)
    world.pool("rack-0-ippool", "10.0.0.0/24", node_selector='rack == "0"')
    world.pool("rack-1-ippool", "10.1.0.0/24", node_selector='rack == "1"')
    world.node("kube-node-0", rack="0")
    world.node("kube-node-2", rack="1")
    return world


def _host_order(pool_cidr, node, size=26) -> list:
    """The pool's blocks in the node's order (blockgen.host_order, which the service walks)."""
    pool = ipaddress.ip_network(pool_cidr)
    step = 1 << (pool.max_prefixlen - size)
    return [block_net_of(pool.network_address + i * step, size)
            for indices in blockgen.host_order(node, blockgen.num_blocks(pool, size)) for i in indices]


def _first_block(pool_cidr, node, size=26):
    return _host_order(pool_cidr, node, size)[0]


def test_node_gets_address_from_its_racks_pool_in_its_first_block(w):
    ip = ipaddress.ip_interface(w.ip4("kube-node-2"))
    block = _first_block("10.1.0.0/24", "kube-node-2")
    assert ip.network == block and ip.ip == block.network_address  # lowest ordinal first, block prefix
    assert w.block(block).affinity == "host:kube-node-2"


def test_affine_block_first_then_new_block_in_host_order(w):
    first = _first_block("10.0.0.0/24", "kube-node-0")
    ips = w.assign("kube-node-0", num4=70).ipv4
    assert [i.network for i in ips[:64]] == [first] * 64
    second = ips[64].network
    order = _host_order("10.0.0.0/24", "kube-node-0")
    assert second == order[1]
    assert str(ips[64]) == f"{second.network_address}/26"


def test_released_addresses_are_reused_last(w):
    a = w.ip4("kube-node-0", "a")
    w.ip4("kube-node-0", "b")
    w.svc.release_by_handle("a")
    assert w.ip4("kube-node-0", "c") != a


def test_pools_in_name_order(w):
    w.pool("a-all", "10.9.0.0/24")
    assert w.ip4("kube-node-0").startswith("10.9.")


def test_requested_pools_bypass_selectors(w):
    w.pool("manual", "10.7.0.0/24", assignment_mode="Manual")
    assert w.ip4("kube-node-0", pools4=["10.1.0.0/24"]).startswith("10.1.")
    assert w.ip4("kube-node-0", "h2", pools4=["manual"]).startswith("10.7.")
    assert not w.ip4("kube-node-0", "h3").startswith("10.7.")  # Manual is never picked automatically


def test_unknown_or_disabled_requested_pool_changes_nothing(w):
    w.pool("off", "10.8.0.0/24", disabled=True)
    before = w.ipam_state()
    for requested in (["nope"], ["off"], ["10.8.0.0/24"]):
        with pytest.raises(NoQualifiedPoolError, match="does not exist, or is not enabled"):
            w.assign("kube-node-0", pools4=requested)
    assert w.ipam_state() == before


def test_namespace_selector_uses_callers_namespace_labels(w):
    w.pool("a-team-x", "10.5.0.0/24", namespace_selector='team == "x"', allowed_uses=["Workload"])
    assert w.ip4("kube-node-0", namespace_labels={"team": "x"}).startswith("10.5.")
    assert w.ip4("kube-node-0", "h2", namespace_labels={"team": "y"}).startswith("10.0.")


def test_allowed_use(w):
    w.pool("a-tunnel", "10.6.0.0/24", allowed_uses=["Tunnel"])
    assert w.ip4("kube-node-0", "t", use="Tunnel").startswith("10.6.")  # name order: a-tunnel first
    assert w.ip4("kube-node-0").startswith("10.0.")  # a Workload never comes from a Tunnel-only pool


def test_no_qualified_pool_lists_pools_and_reasons(w):
    w.node("kube-node-9", rack="9")
    before = w.ipam_state()
    with pytest.raises(NoQualifiedPoolError) as err:
        w.assign("kube-node-9")
    msg = str(err.value)
    assert msg.startswith("no configured Calico pools for node kube-node-9")
    assert 'rack-0-ippool (10.0.0.0/24): node selector rack == "0" does not match node kube-node-9 labels' in msg
    assert w.ipam_state() == before


def test_unknown_node(w):
    before = w.ipam_state()
    with pytest.raises(NotFoundError, match="kube-node-7"):
        w.assign("kube-node-7")
    assert w.ipam_state() == before


def test_bad_input(w):
    with pytest.raises(ValidationError):
        w.assign("kube-node-0", handle="")
    with pytest.raises(ValidationError):
        w.assign("kube-node-0", num4=-1)
    with pytest.raises(ValidationError, match="intended use"):
        w.assign("kube-node-0", use="")


def test_partial_fulfilment_message_and_undo(store):
    w = World(store)
    w.pool("small", "10.0.0.0/26")
    w.node("n0")
    before = w.ipam_state()
    with pytest.raises(ExhaustedError) as err:
        w.assign("n0", num4=65)
    assert str(err.value) == ("Assigned 64 out of 65 requested IPv4 addresses; "
                              "No IPs available in pools: [10.0.0.0/26]")
    assert w.svc.check().ok and all(b.in_use == 0 for b in w.svc.block_usage())
    res = w.assign("n0", num4=65, allow_partial=True)
    assert len(res.ipv4) == 64 and res.messages[0].startswith("Assigned 64 out of 65")
    with pytest.raises(ExhaustedError, match="Assigned 0 out of 1 requested IPv4 addresses"):
        w.assign("n0", "other")
    assert before != w.ipam_state()


def test_block_limit(store):
    w = World(store)
    w.pool("p", "10.0.0.0/24")
    w.node("n0")
    w.config(strict_affinity=True, max_blocks_per_host=1)
    w.assign("n0", "a", num4=60)
    before = w.ipam_state()
    with pytest.raises(BlockLimitError) as err:
        w.assign("n0", "b", num4=5)
    assert "Assigned 4 out of 5 requested IPv4 addresses; " \
           "Need to allocate an IPAM block but could not - limit of 1 blocks reached for this node" == str(err.value)
    assert w.ipam_state().keys() == before.keys() and w.svc.check().ok
    assert len(w.assign("n0", "c", num4=4).ipv4) == 4


def test_request_block_limit_lowered_by_config(store):
    w = World(store)
    w.pool("p", "10.0.0.0/24")
    w.node("n0")
    with pytest.raises(BlockLimitError, match="limit of 1 blocks"):
        w.assign("n0", num4=65, max_blocks_per_host=1)


def test_borrowing_only_without_strict_affinity(store):
    w = World(store)
    w.pool("p", "10.0.0.0/26")
    w.node("a")
    w.node("b")
    w.ip4("a", "x")
    ip = ipaddress.ip_interface(w.ip4("b", "y"))
    assert w.block(ip.network).affinity == "host:a"  # borrowed, affinity unchanged
    check = w.svc.check()
    assert check.ok and [f.kind for f in check.findings] == []  # no node attr, so not flagged as borrowed
    w.config(strict_affinity=True)
    with pytest.raises(ExhaustedError, match="No more free affine blocks and strict affinity enabled"):
        w.assign("b", "z")


def test_reclaims_empty_block_held_over_a_minute(store):
    w = World(store)
    w.pool("p", "10.0.0.0/26")
    w.node("a")
    w.node("b")
    w.config(strict_affinity=True)
    w.ip4("a", "x")
    w.svc.release_by_handle("x")
    assert w.block("10.0.0.0/26").affinity == "host:a"  # empty, still affine
    w.now += 30
    with pytest.raises(ExhaustedError):
        w.assign("b", "y")
    w.now += 31
    assert w.ip4("b", "y").startswith("10.0.0.")
    assert w.block("10.0.0.0/26").affinity == "host:b"
    assert w.svc.check().ok


def test_reservations_never_handed_out(store):
    w = World(store)
    w.pool("p", "10.0.0.0/25")
    w.node("n0")
    first = _first_block("10.0.0.0/25", "n0")
    other = [b for b in ipaddress.ip_network("10.0.0.0/25").subnets(new_prefix=26) if b != first][0]
    w.reserve("r", str(first), f"{other.network_address}")  # whole first block, one address of the other
    ips = w.assign("n0", num4=63).ipv4
    assert all(i.network == other for i in ips) and other.network_address not in {i.ip for i in ips}
    with pytest.raises(ExhaustedError):
        w.assign("n0", "more")
    assert w.block(first) is None  # a fully reserved block is never claimed


def test_dual_stack_is_atomic(w):
    before = w.ipam_state()
    with pytest.raises(NoQualifiedPoolError, match="IPv6"):
        w.assign("kube-node-0", num4=1, num6=1)
    assert {k for k in w.ipam_state() if "/handle/" in k} == set()
    assert w.svc.check().ok and sum(b.in_use for b in w.svc.block_usage()) == 0
    assert before.keys() <= w.ipam_state().keys()
    w.pool("v6", "fd00:1::/120")
    res = w.assign("kube-node-0", num4=1, num6=1)
    assert str(res.ipv6[0]).endswith("/122") and res.ipv4[0].version == 4


def test_ipv6_block_keys_sort_by_address(store):
    w = World(store)
    w.pool("v6", "fd00::/120")
    w.node("n0")
    w.node("n1")
    w.assign("n0", num4=0, num6=1)
    w.assign("n1", "h2", num4=0, num6=1)
    nets = [u.cidr for u in w.svc.block_usage()]
    assert nets == sorted(nets) and len(nets) == 2


def test_static_topology_view(store):
    w = World(store)
    w.pool("p", "10.0.0.0/24")
    w.node("n0", rack="0")
    warm = StoreTopology(store)
    topo = StaticTopology(warm.pools(), {"n0": warm.node("n0")}, warm.ipam_config(), warm.reservations())
    w2 = World(store, topology=topo)
    assert w2.ip4("n0").startswith("10.0.0.")


def test_attributes_and_listing(w):
    w.assign("kube-node-0", "net.c1", attrs={"node": "kube-node-0", "pod": "nginx-1", "namespace": "default"})
    [alloc] = w.svc.allocations()
    assert alloc.handle == "net.c1" and alloc.attrs["pod"] == "nginx-1" and alloc.node == "kube-node-0"
    assert w.svc.allocations(prefix_handle="other") == []
    usage = {p.name: p for p in w.svc.pool_usage()}
    assert usage["rack-0-ippool"].in_use == 1 and usage["rack-0-ippool"].blocks == 1
    assert usage["rack-0-ippool"].free == 255 and usage["rack-1-ippool"].blocks == 0


def test_reservation_covering_most_of_a_huge_pool_is_jumped_over(store):
    w = World(store)
    w.pool("v6", "fd00::/48")
    w.node("n0")
    assert blockgen.start_index("n0", 1 << 74) < 1 << 73  # n0 starts inside the reserved half
    w.reserve("most", "fd00::/49")
    w.reserve("pieces", "fd00:0:0:8000::/122", "fd00:0:0:8000::40/123", "fd00:0:0:8000::60/123")
    ips = w.assign("n0", num4=0, num6=1).ipv6
    assert ips[0].ip not in ipaddress.ip_network("fd00::/49")
    assert ips[0].network not in {ipaddress.ip_network("fd00:0:0:8000::/122"),
                                  ipaddress.ip_network("fd00:0:0:8000::40/122")}


def test_attributes_live_on_the_handle_and_a_reused_handle_keeps_its_own(store):
    """A workload's attributes are written once, on its handle record: the block entries (rewritten on
    every assignment) carry only the handle. A request reusing a handle with other attributes, or one
    without a handle, keeps its own in the block entry; every reader sees each allocation's own."""
    import json

    from topoipam.ipam import keys

    world = World(store)
    world.pool("p0", "10.0.0.0/24")
    world.node("n0")
    a = world.assign("n0", "h1", num4=2, attrs={"pod": "web", "node": "n0"}).ipv4
    b = world.assign("n0", "h1", num4=1, attrs={"pod": "other"}).ipv4  # same handle, other attributes
    c = world.assign("n0", "h1", num4=1).ipv4  # same handle, no attributes
    ip = world.svc.assign_ip("10.0.0.200", None, {"pod": "bare"}, "n0")  # no handle
    handle = json.loads(store.get(keys.handle_key("h1")).value)
    net = str(a[0].network)
    assert handle == {"block": {net: 4}, "secondary": {"pod": "web", "node": "n0"}, "deleted": False}
    block = world.block(net)
    assert block.attributes[:3] == [{"handle_id": "h1"}, {"handle_id": "h1", "secondary": {"pod": "other"}},
                                    {"handle_id": "h1", "secondary": {}}]
    seen = {str(x.ip.ip): x.attrs for x in world.svc.allocations()}
    assert seen == {str(a[0].ip): {"pod": "web", "node": "n0"}, str(a[1].ip): {"pod": "web", "node": "n0"},
                    str(b[0].ip): {"pod": "other"}, str(c[0].ip): {}, str(ip.ip): {"pod": "bare"}}
    for addr, attrs in seen.items():
        assert world.svc.allocation_of(addr).attrs == attrs
