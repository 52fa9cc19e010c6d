"""assign_ip, releases, handles, affinities, pool deletion (1.3), node-label changes, check findings."""

from __future__ import annotations

import ipaddress

import pytest

from test_ipam_world import World
from topoipam.errors import AllocationError, AlreadyExistsError, NoQualifiedPoolError, NotFoundError, ValidationError
from topoipam.ipam import keys


@pytest.fixture
def w(store):
    world = World(store)
    world.pool("rack-0-ippool", "10.0.0.0/24", node_selector='rack == "0"')
    world.pool("rack-1-ippool", "10.1.0.0/24", node_selector='rack == "1"')
    world.node("n0", rack="0")
    world.node("n1", rack="1")
    return world


def test_assign_ip_claims_block_and_ignores_selectors(w):
    ip = w.svc.assign_ip("10.1.0.77", "h", {"pod": "p"}, "n0")
    assert str(ip) == "10.1.0.77/26"
    assert w.block("10.1.0.64/26").affinity == "host:n0"
    assert w.svc.ips_by_handle("h") == [ipaddress.ip_address("10.1.0.77")]
    assert w.svc.check().ok


def test_assign_ip_errors_change_nothing(w):
    w.svc.assign_ip("10.0.0.5", "h", None, "n0")
    w.pool("off", "10.3.0.0/24", disabled=True)
    before = w.ipam_state()
    with pytest.raises(AlreadyExistsError, match="resource already exists: 10.0.0.5"):
        w.svc.assign_ip("10.0.0.5", "h2", None, "n0")
    with pytest.raises(ValidationError, match="not in a configured pool"):
        w.svc.assign_ip("192.168.9.9", "h2", None, "n0")
    with pytest.raises(ValidationError, match="not in a configured pool"):
        w.svc.assign_ip("10.3.0.1", "h2", None, "n0")
    with pytest.raises(ValidationError, match="invalid IP address"):
        w.svc.assign_ip("10.0.0.300", "h2", None, "n0")
    with pytest.raises(NotFoundError):
        w.svc.assign_ip("10.0.0.6", "h2", None, "ghost")
    assert w.ipam_state() == before


def test_assign_ip_strict_affinity(w):
    w.svc.assign_ip("10.0.0.5", "h", None, "n0")
    w.config(strict_affinity=True)
    with pytest.raises(AllocationError, match="Block host affinity does not match"):
        w.svc.assign_ip("10.0.0.6", "h", None, "n1")
    assert str(w.svc.assign_ip("10.0.0.6", "h", None, "n0")) == "10.0.0.6/26"


def test_release_ips_and_release_again(w):
    ip = w.ip4("n0", "h").split("/")[0]
    assert w.svc.release_ips([ip]) == []
    assert w.svc.release_ips([ip]) == [ipaddress.ip_address(ip)]  # CLI: IP address <ip> is not assigned
    assert w.svc.release_ips(["192.168.1.1"]) == [ipaddress.ip_address("192.168.1.1")]
    assert store_has_no_handles(w)
    with pytest.raises(ValidationError):
        w.svc.release_ips(["nonsense"])


def store_has_no_handles(w):
    return not w.store.list(keys.HANDLE_PREFIX)


def test_release_fenced_by_handle_and_sequence(w):
    ip = w.ip4("n0", "h").split("/")[0]
    [alloc] = w.svc.allocations()
    assert w.svc.release_ips([ip], handle="other") == [ipaddress.ip_address(ip)]
    assert w.svc.release_ips([ip], seq=alloc.sequence_number + 1) == [ipaddress.ip_address(ip)]
    assert len(w.svc.allocations()) == 1
    assert w.svc.release_ips([ip], handle="h", seq=alloc.sequence_number) == []
    assert w.svc.allocations() == []


def test_release_by_handle_counts_and_not_found(w):
    res = w.assign("n0", "h", num4=70)
    assert len({i.network for i in res.ipv4}) == 2
    released = w.svc.release_by_handle("h")
    assert released == sorted(i.ip for i in res.ipv4)
    assert store_has_no_handles(w)
    with pytest.raises(NotFoundError, match=r"IPAMHandleKey\(id=h\)"):
        w.svc.release_by_handle("h")
    with pytest.raises(NotFoundError):
        w.svc.ips_by_handle("h")
    assert all(b.affinity == "host:n0" for b in w.svc.block_usage())  # affine empty blocks stay
    assert w.svc.check().ok


def test_handle_counts_follow_allocations(w):
    w.assign("n0", "h", num4=3)
    hrec = w.store.get(keys.handle_key("h"))
    assert b'":3}' in hrec.value
    w.svc.release_ips([w.svc.ips_by_handle("h")[0]])
    assert b'":2}' in w.store.get(keys.handle_key("h")).value


def test_claim_and_release_affinity(w):
    claimed, failed = w.svc.claim_affinity("10.0.0.0/25", "n0")
    assert [str(n) for n in claimed] == ["10.0.0.0/26", "10.0.0.64/26"] and failed == []
    claimed, failed = w.svc.claim_affinity("10.0.0.0/26", "n1")
    assert claimed == [] and [str(n) for n in failed] == ["10.0.0.0/26"]
    with pytest.raises(ValidationError, match="not within any configured pools"):
        w.svc.claim_affinity("10.9.0.0/26", "n0")
    with pytest.raises(ValidationError, match="smaller than the minimum"):
        w.svc.claim_affinity("10.0.0.0/28", "n0")
    w.svc.assign_ip("10.0.0.70", "h", None, "n0")
    assert [str(n) for n in w.svc.release_affinity("10.0.0.0/25", "n0", must_be_empty=True)] == ["10.0.0.0/26"]
    assert w.block("10.0.0.0/26") is None and w.block("10.0.0.64/26").affinity == "host:n0"
    assert w.svc.check().ok


def test_release_host_affinities(w):
    w.assign("n0", "a")
    w.svc.claim_affinity("10.0.0.0/24", "n0")
    done = w.svc.release_host_affinities("n0")
    assert len(done) == 4
    assert [b.affinity for b in w.svc.block_usage()] == [None]  # only the non-empty block survives
    assert w.svc.check().ok
    w.svc.release_by_handle("a")
    assert w.svc.block_usage() == []  # empty and affinity-less: deleted


def test_pool_delete_keeps_allocations_until_released(w):
    ip = w.ip4("n0", "a").split("/")[0]
    w.svc.claim_affinity("10.0.0.0/24", "n0")
    w.delete_pool("rack-0-ippool")
    usage = w.svc.block_usage()
    assert len(usage) == 1 and usage[0].affinity is None and usage[0].in_use == 1
    assert not w.store.list(keys.affinity_prefix("n0", 4))
    w.svc.release_ips([ip])
    assert w.svc.block_usage() == []
    assert [f.kind for f in w.svc.check().findings] == []


def test_node_label_change(w):
    old = ipaddress.ip_interface(w.ip4("n0", "running"))
    w.ip4("n0", "recreated")
    w.relabel("n0", rack="1")
    assert w.svc.ips_by_handle("running") == [old.ip]  # nothing happens to running workloads
    new = ipaddress.ip_interface(w.ip4("n0", "fresh"))
    assert new.ip in ipaddress.ip_network("10.1.0.0/24")
    assert w.block(old.network).affinity == "host:n0"  # not empty yet: keeps affinity
    w.svc.release_by_handle("recreated")
    assert w.block(old.network).affinity == "host:n0"
    w.svc.release_by_handle("running")  # now empty and its pool no longer selects n0: released
    assert w.block(old.network) is None
    assert w.svc.check().ok


def test_label_change_drops_empty_unselected_blocks_at_next_assign(w):
    old = ipaddress.ip_interface(w.ip4("n0", "a"))
    w.svc.release_by_handle("a")
    w.relabel("n0", rack="1")
    w.ip4("n0", "b")
    assert w.block(old.network) is None
    assert w.svc.check().ok


def test_node_without_pools_after_relabel_and_borrowing_by_newly_selected_node(store):
    w = World(store)
    w.pool("p", "10.0.0.0/26", node_selector='rack == "0"')
    w.node("a", rack="0")
    w.node("b", rack="1")
    w.ip4("a", "x")
    w.relabel("a", rack="2")
    w.relabel("b", rack="0")
    with pytest.raises(NoQualifiedPoolError, match="no configured Calico pools for node a"):
        w.assign("a", "y")
    ip = ipaddress.ip_interface(w.ip4("b", "z"))
    assert w.block(ip.network).affinity == "host:a"  # borrowed from a's non-empty block


def test_check_reports_planted_problems(w):
    w.assign("n1", "gone", attrs={"node": "n1"})
    w.assign("n0", "x", attrs={"node": "n0"})
    hrec = w.store.get(keys.handle_key("x"))
    w.store.delete(hrec.key, hrec.revision)  # address without handle
    w.store.create(keys.handle_key("leak"), b'{"block":{"10.0.0.0/26":1},"deleted":false}')
    nrec = w.store.get("/topoipam/v3/nodes/n1")
    w.store.delete(nrec.key, nrec.revision)  # node gone
    report = w.svc.check()
    kinds = sorted(f.kind for f in report.problems)
    assert kinds == ["address-without-handle", "handle-without-address", "node-missing"]
    assert report.blocks == 2 and report.allocations == 2 and not report.ok


def test_releasing_one_handle_that_empties_several_affinityless_blocks(w):
    res = w.assign("n0", "h", num4=130)
    assert len({i.network for i in res.ipv4}) == 3
    w.svc.release_host_affinities("n0")  # blocks keep their allocations without affinity
    w.svc.release_by_handle("h")  # all three deleted in one commit: summary bits cleared together
    assert w.svc.block_usage() == []
    assert w.svc.check().ok
    assert len(w.assign("n0", "again", num4=130).ipv4) == 130


def test_stale_affinity_is_dropped_and_full_hint_follows_the_block(w):
    from topoipam.ipam.blocks import AFFINITY_VALUE
    res = w.assign("n0", "a", num4=64)
    net = res.ipv4[0].network
    akey = keys.affinity_key("n0", net)
    assert b'"full":true' in w.store.get(akey).value
    w.svc.release_ips([res.ipv4[5].ip])
    assert b'"full"' not in w.store.get(akey).value  # un-full again: the node will read it
    assert w.ip4("n0", "b") == f"{res.ipv4[5].ip}/26"
    # the node's block is full again; plant an affinity without a block for another block of the pool
    stale = next(b for b in ipaddress.ip_network("10.0.0.0/24").subnets(new_prefix=26) if b != net)
    w.store.create(keys.affinity_key("n0", stale), AFFINITY_VALUE)
    assert not w.svc.check().ok
    w.ip4("n0", "c")
    assert w.store.get(keys.affinity_key("n0", stale)) is None
    assert w.svc.check().ok


def test_claim_does_not_land_in_a_pool_disabled_after_it_was_read(store):
    """The claim commit checks the pool's revision; on conflict the pools are re-read."""
    from topoipam.ipam import StaticTopology
    from topoipam.ipam.topology import StoreTopology
    from topoipam.errors import ExhaustedError
    w = World(store)
    w.pool("p", "10.0.0.0/24")
    w.pool("q", "10.1.0.0/24")
    w.node("n0")
    st = StoreTopology(store)
    stale = StaticTopology(st.pools(), {"n0": st.node("n0")}, st.ipam_config(), st.reservations())
    w.update_pool("p", disabled=True)  # the warm view still has p enabled
    stale_world = World(store, topology=stale)
    assert stale_world.ip4("n0").startswith("10.1.")  # not 10.0.: p's revision moved
    w.update_pool("q", disabled=True)
    with pytest.raises(ExhaustedError):
        stale_world.assign("n0", "h2", num4=64)
    assert all(u.pool == "q" for u in w.svc.block_usage())


def test_dual_stack_handle_is_listed_and_released_whole(store):
    """A dual-stack workload's handle holds an IPv4 and an IPv6 address: listing and releasing it by
    handle (what CNI CHECK and DEL do) orders both families (IPv4 first) instead of failing."""
    world = World(store)
    world.pool("p4", "10.0.0.0/24")
    world.pool("p6", "fd00::/120")
    world.node("n0")
    res = world.assign("n0", "dual", num4=2, num6=1)
    want = [*(i.ip for i in res.ipv4), res.ipv6[0].ip]
    assert world.svc.ips_by_handle("dual") == sorted(want[:2]) + want[2:]
    assert world.svc.release_by_handle("dual") == sorted(want[:2]) + want[2:]
    assert world.svc.allocations() == [] and world.svc.check().ok
    with pytest.raises(NotFoundError):
        world.svc.release_by_handle("dual")
