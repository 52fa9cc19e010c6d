"""core/insights.py: pool reasons without raising, unclaimed space by arithmetic, overlaps, forecast."""

from __future__ import annotations

import ipaddress

import pytest

from topoipam.core import insights
from topoipam.core.pools import rank_pools
from topoipam.model.types import IPPool, IPPoolSpec, Metadata


def _pool(name, cidr, selector="all()", **kw):
    return IPPool(Metadata(name=name), IPPoolSpec(cidr=cidr, block_size=26 if ":" not in cidr else 122,
                                                  node_selector=selector, **kw))


def test_rank_pools_returns_no_choice_instead_of_raising():
    pools = [_pool("rack-0", "10.0.0.0/24", 'rack == "0"'), _pool("off", "10.1.0.0/24", disabled=True),
             _pool("v6", "fd00::/64")]
    choice = rank_pools(pools, 4, "n", {"rack": "1"})
    assert choice.chosen == []
    assert [(r.pool.name, r.reason) for r in choice.rejected] == [
        ("off", "disabled"), ("rack-0", 'node selector rack == "0" does not match node n labels {"rack": "1"}')]
    choice = rank_pools(pools, 4, "n", {"rack": "0"})
    assert [p.name for p in choice.chosen] == ["rack-0"]
    assert [p.name for p in rank_pools(pools, 6, "n", {}).chosen] == ["v6"]


def test_unclaimed_subtracts_claimed_blocks_and_reservations_once():
    net = ipaddress.ip_network("10.0.0.0/24")
    claimed = [ipaddress.ip_network("10.0.0.0/26")]
    assert insights.unclaimed(net, 26, claimed, []) == insights.Unclaimed(3, 192)
    reserved = [ipaddress.ip_network("10.0.0.0/25"), ipaddress.ip_network("10.0.0.64/27"),
                ipaddress.ip_network("10.0.0.255/32"), ipaddress.ip_network("10.9.0.0/16")]
    # 10.0.0.64/26 is wholly reserved, 10.0.0.0/26 is claimed; .255 is one more
    assert insights.unclaimed(net, 26, claimed, reserved) == insights.Unclaimed(3, 127)
    big = ipaddress.ip_network("fd00::/64")
    assert insights.unclaimed(big, 122, [], []) == insights.Unclaimed(2**58, 2**64)


def test_overlaps_and_rules():
    assert insights.overlaps({"b": ["n1", "n2"], "a": ["n2", "n3"], "c": []}) == [("a", "b", ["n2"])]
    rules = insights.ClaimRules(owned=20, limit=20, auto_allocate=True, strict=False)
    r = insights.room("p", 0, 100, 64, 70, rules)
    assert (r.total, r.notes) == (0, ["limit of 20 blocks reached for this node"])
    r = insights.room("p", 3, 100, 64, 70, insights.ClaimRules(1, 20, True, True))
    assert (r.total, r.reclaimable, r.borrowable) == (167, 64, 0)
    r = insights.room("p", 3, 100, 64, 70, insights.ClaimRules(1, 20, True, False))
    assert (r.total, r.reclaimable, r.borrowable) == (173, 64, 6)  # an empty block is taken over, not borrowed
    r = insights.room("p", 3, 100, 64, 70, insights.ClaimRules(1, 20, False, False))
    assert (r.total, r.unclaimed_free, r.reclaimable, r.borrowable, r.notes) == \
        (73, 0, 0, 70, ["automatic block allocation is off"])


def test_timestamps_and_forecast():
    assert insights.parse_go_timestamp("1970-01-02 00:00:01.5 +0000 UTC") == pytest.approx(86401.5)
    assert insights.parse_go_timestamp("1970-01-01T00:01:00Z") == 60
    assert insights.parse_go_timestamp("1970-01-01T00:01:00+00:00") == 60
    assert insights.parse_go_timestamp("yesterday") is None
    assert insights.forecast([0.0], 10, 86400.0) is None
    fc = insights.forecast([0.0, 43200.0], 10, 86400.0)
    assert (fc.rate_per_day, fc.days_left) == (2.0, 5.0)
