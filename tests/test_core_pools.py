"""core.pools (pool choice with reasons) and core.blockgen (per-host block order)."""

from __future__ import annotations

import ipaddress

import pytest

from topoipam.core import blockgen
from topoipam.core.pools import choose_pools
from topoipam.errors import NoQualifiedPoolError, ValidationError
from topoipam.model.types import IPPool, IPPoolSpec, Metadata
from topoipam.model.validate import validate


def pool(name, cidr, **spec):
    return validate(IPPool(Metadata(name), IPPoolSpec(cidr=cidr, **spec)))


POOLS = [
    pool("b-rack1", "10.1.0.0/24", node_selector='rack == "1"'),
    pool("a-rack0", "10.0.0.0/24", node_selector='rack == "0"'),
    pool("c-all", "10.2.0.0/24"),
    pool("d-off", "10.3.0.0/24", disabled=True),
    pool("e-manual", "10.4.0.0/24", assignment_mode="Manual"),
    pool("f-ns", "10.5.0.0/24", namespace_selector='team == "x"', allowed_uses=["Workload"]),
    pool("g-tunnel", "10.6.0.0/24", allowed_uses=["Tunnel"]),
    pool("v6", "fd00::/48"),
]


def test_name_order_and_selectors():
    choice = choose_pools(POOLS, 4, "n0", {"rack": "0"})
    assert [p.name for p in choice.chosen] == ["a-rack0", "c-all"]
    reasons = {r.pool.name: r.reason for r in choice.rejected}
    assert reasons["b-rack1"] == 'node selector rack == "1" does not match node n0 labels {"rack": "0"}'
    assert reasons["d-off"] == "disabled"
    assert "assignment mode is Manual" in reasons["e-manual"]
    assert "namespace selector" in reasons["f-ns"] and "{}" in reasons["f-ns"]
    assert reasons["g-tunnel"] == "allowed uses ['Tunnel'] do not include Workload"


def test_namespace_labels_select():
    choice = choose_pools(POOLS, 4, "n1", {"rack": "1"}, namespace_labels={"team": "x"})
    assert [p.name for p in choice.chosen] == ["b-rack1", "c-all", "f-ns"]


def test_requested_pools_bypass_selectors_in_request_order():
    choice = choose_pools(POOLS, 4, "n9", {}, requested=["e-manual", "10.1.0.0/24"])
    assert [p.name for p in choice.chosen] == ["e-manual", "b-rack1"]


def test_requested_pool_missing_or_disabled():
    with pytest.raises(NoQualifiedPoolError, match=r"the given pool \(d-off\) does not exist, or is not enabled"):
        choose_pools(POOLS, 4, "n0", {}, requested=["d-off"])
    with pytest.raises(NoQualifiedPoolError, match=r"the given pool \(nope\) does not exist"):
        choose_pools(POOLS, 4, "n0", {}, requested=["nope"])
    with pytest.raises(ValidationError, match="IPv4 IPPools list contains one or more IPv6 IPPools"):
        choose_pools(POOLS, 4, "n0", {}, requested=["fd00::/48"])


def test_no_pool_lists_every_reason():
    only = [p for p in POOLS if p.name in ("a-rack0", "b-rack1", "d-off")]
    with pytest.raises(NoQualifiedPoolError) as err:
        choose_pools(only, 4, "n2", {"rack": "2"})
    text = str(err.value)
    assert text.startswith("no configured Calico pools for node n2")
    assert "a-rack0 (10.0.0.0/24): node selector" in text and "d-off (10.3.0.0/24): disabled" in text


def test_use_filter_message():
    with pytest.raises(NoQualifiedPoolError, match=r"no pools match the required use \(Workload\)"):
        choose_pools([POOLS[6]], 4, "n0", {})
    assert [p.name for p in choose_pools(POOLS, 4, "n0", {}, use="Tunnel").chosen] == ["c-all", "g-tunnel"]


def test_fnv1_32_known_values():
    assert blockgen.fnv1_32("") == 0x811C9DC5
    assert blockgen.fnv1_32("a") == 0x050C5D7E  # FNV-1, not FNV-1a (0xe40c292c)


@pytest.mark.parametrize("count", [1, 2, 7, 64, 1000])
def test_host_order_visits_each_block_once_with_wraparound(count):
    first, wrapped = blockgen.host_order("kube-node-2", count)
    order = [*first, *wrapped]
    assert sorted(order) == list(range(count))
    start = order[0]
    assert order == list(range(start, count)) + list(range(start))
    assert (first, wrapped) == blockgen.host_order("kube-node-2", count)  # deterministic


def test_hosts_start_at_different_points():
    starts = {blockgen.start_index(f"node-{i}", 1 << 18) for i in range(50)}
    assert len(starts) > 45


def test_host_order_of_huge_pools():
    big = ipaddress.ip_network("fd00::/48")
    first, wrapped = blockgen.host_order("h", blockgen.num_blocks(big, 122))
    assert 0 <= first.start < 1 << 74 and first.stop == 1 << 74 and wrapped == range(first.start)
