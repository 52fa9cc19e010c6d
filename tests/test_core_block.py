"""core.block and core.summary: ordinals, attributes, fencing, codec; bitmap chunks."""

from __future__ import annotations

import ipaddress

import pytest

from topoipam.core.block import WINDOWS_RESERVED_HANDLE, Block, affinity_node, reserved_ordinals
from topoipam.core.summary import CHUNK_BLOCKS, Chunk
from topoipam.errors import AlreadyExistsError

NET = ipaddress.ip_network("10.0.0.0/26")


def new_block():
    return Block.new(NET, "host:n0", "2026-01-01T00:00:00Z", 100)


def test_fresh_block_hands_out_lowest_first_including_network_address():
    b = new_block()
    assert b.auto_assign(3, "h", {"pod": "p"}) == [0, 1, 2]
    assert [str(b.interface(o)) for o in (0, 1, 2)] == ["10.0.0.0/26", "10.0.0.1/26", "10.0.0.2/26"]
    assert b.free_count() == 61 and b.in_use == 3


def test_released_ordinals_are_reused_last():
    b = new_block()
    b.auto_assign(64, "h", None)
    b.release([5, 2])
    assert b.unallocated == [5, 2]
    b2 = new_block()
    b2.auto_assign(3, "h", None)
    b2.release([1])
    assert b2.auto_assign(62, "h", None)[-2:] == [63, 1]  # the released one comes after every never-used one


def test_reserved_ordinals_are_skipped_and_stay_in_place():
    b = new_block()
    assert b.auto_assign(2, "h", None, reserved={0, 1}) == [2, 3]
    assert b.unallocated[:2] == [0, 1]
    assert b.free_count(reserved={0, 1}) == 60


def test_identical_attributes_are_shared_and_compacted_on_release():
    b = new_block()
    b.auto_assign(2, "h1", {"pod": "a"})
    b.auto_assign(1, "h2", {"pod": "b"})
    b.auto_assign(1, "h1", {"pod": "a"})
    assert len(b.attributes) == 2 and b.allocations[:4] == [0, 0, 1, 0]
    out = b.release([0, 1, 3], handle="h1")
    assert out.released == [0, 1, 3] and out.by_handle == {"h1": 3}
    assert b.attributes == [{"handle_id": "h2", "secondary": {"pod": "b"}}]
    assert b.allocations[2] == 0


def test_release_fencing_by_handle_and_sequence_number():
    b = new_block()
    b.auto_assign(1, "h1", None)
    seq = b.seq_for_allocation[0]
    assert b.release([0], handle="other").fenced == [0]
    assert b.release([0], seq=seq + 1).fenced == [0]
    assert b.in_use == 1
    assert b.release([0], handle="h1", seq=seq).released == [0]
    assert b.release([0]).not_allocated == [0]


def test_assign_specific_and_already_assigned():
    b = new_block()
    b.assign(7, "h", None)
    assert b.handle_of(7) == "h" and 7 not in b.unallocated
    with pytest.raises(AlreadyExistsError, match="10.0.0.7"):
        b.assign(7, "h", None)


def test_empty_ignores_windows_reserved():
    b = new_block()
    assert b.is_empty()
    b.auto_assign(1, WINDOWS_RESERVED_HANDLE, None)
    assert b.is_empty()
    b.auto_assign(1, "h", None)
    assert not b.is_empty()


def test_json_round_trip_and_field_names():
    b = new_block()
    b.auto_assign(2, "h", {"node": "n0"})
    data = b.to_json()
    assert b'"sequenceNumberForAllocation":{"0":100,"1":100}' in data and b'"affinity":"host:n0"' in data
    assert Block.from_json(data) == b


def test_reserved_ordinals_clip_to_block():
    nets = [ipaddress.ip_network("10.0.0.60/30"), ipaddress.ip_network("9.0.0.0/8"), ipaddress.ip_network("fd00::/64")]
    assert reserved_ordinals(NET, nets) == frozenset({60, 61, 62, 63})


def test_affinity_node():
    assert affinity_node("host:kube-node-0") == "kube-node-0"
    assert affinity_node("virtual:lb") is None and affinity_node(None) is None


def test_chunk_bits_and_codec():
    c = Chunk(3)
    g = 3 * CHUNK_BLOCKS + 5
    c.set(g, True)
    assert c.is_set(g) and c.count() == 1
    assert list(c.free_in(g - 1, g + 1)) == [g - 1, g + 1]
    assert Chunk.from_json(c.to_json()) == c
    full = Chunk(0, (1 << CHUNK_BLOCKS) - 1)
    assert list(full.free_in(0, CHUNK_BLOCKS - 1)) == []


def _plain_json(b: Block) -> dict:
    return {"cidr": str(b.cidr), "affinity": b.affinity, "affinityClaimTime": b.claim_time,
            "allocations": b.allocations, "unallocated": b.unallocated, "attributes": b.attributes,
            "sequenceNumber": b.sequence_number,
            "sequenceNumberForAllocation": {str(k): v for k, v in b.seq_for_allocation.items()}, "deleted": False}


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["assign", "reserved", "one", "release", "encode", "copy", "decode"]),
                          st.integers(0, 5), st.integers(1, 4)), max_size=40))
def test_random_operations_keep_block_consistent_and_encoding_exact(steps):
    """Also the incremental encodings (allocations, unallocated, sequence numbers, attribute entries)."""
    import json
    b = new_block()
    for op, h, n in steps:
        if op == "assign":
            b.auto_assign(n, f"h{h}", {"pod": f"p{h}"} if h % 2 else None)
        elif op == "reserved":
            b.auto_assign(n, f"h{h}", None, reserved=set(b.unallocated[:h]))
        elif op == "one":
            if b.unallocated:
                b.assign(b.unallocated[(h * 7) % len(b.unallocated)], f"h{h}", {"pod": f"p{h}"})
        elif op == "release":
            b.release(b.ordinals_of_handle(f"h{h}")[:n])
        elif op == "encode":
            assert json.loads(b.to_json()) == _plain_json(b)
        elif op == "copy":
            b = b.copy()
        else:
            b = Block.from_json(b.to_json())
        assert sorted(b.unallocated + b.allocated_ordinals()) == list(range(64))
        used = {i for i in b.allocations if i is not None}
        assert used == set(range(len(b.attributes)))  # no orphan or dangling attribute entry
    assert json.loads(b.to_json()) == _plain_json(b)


@pytest.mark.parametrize("cidr", ["10.0.0.0/26", "192.168.7.0/24", "10.1.2.3/32", "fd00::/122", "2001:db8::40/128"])
def test_interface_is_what_ipaddress_builds(cidr):
    """Block.interface builds the result on the block's own network (a shortcut past ipaddress's
    constructor): it must stay indistinguishable from ipaddress.ip_interface."""
    import ipaddress

    net = ipaddress.ip_network(cidr)
    b = Block.new(net, None, None, 0)
    for o in {0, min(1, b.size - 1), b.size // 2, b.size - 1}:
        got, want = b.interface(o), ipaddress.ip_interface((int(net.network_address) + o, net.prefixlen))
        assert type(got) is type(want)
        assert (got, hash(got), str(got), repr(got), got.ip, got.network, got.netmask, got.hostmask,
                got.with_prefixlen, got.with_netmask, got.packed) == \
            (want, hash(want), str(want), repr(want), want.ip, want.network, want.netmask, want.hostmask,
             want.with_prefixlen, want.with_netmask, want.packed)
        assert got == want and not got < want and not want < got
        if net.version == 6:
            assert got.scope_id is None and want.scope_id is None


def test_assignment_after_leading_reserved_ordinals_matches_the_general_rule():
    """The cut after a leading run of reserved ordinals (an L2 segment's case) takes what the general
    walk takes, and keeps the stored text equal to a fresh encoding."""
    import random

    rng = random.Random(7)
    for _ in range(50):
        fast = Block.new(ipaddress.ip_network("10.0.0.0/26"), "host:n", None, 1)
        reserved = frozenset(rng.sample(range(64), rng.randint(1, 5)) + [0, 1])
        fast.to_json()  # the encodings exist: the cut must keep them right
        expected = list(fast.unallocated)  # the general rule, kept by hand
        for step in range(40):
            if rng.random() < 0.3 and fast.allocated_ordinals():
                o = rng.choice(fast.allocated_ordinals())
                fast.release([o])
                expected.append(o)  # released ordinals are reused last
                continue
            n = rng.randint(1, 3)
            want = [o for o in expected if o not in reserved][:n]
            assert fast.auto_assign(n, f"h{step}", None, reserved) == want
            expected = [o for o in expected if o not in set(want)]
            assert fast.unallocated == expected
            assert Block.from_json(fast.to_json()).unallocated == expected  # the kept text says the same
