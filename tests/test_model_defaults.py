"""model.defaults: calico-node's default pools from environment values (reference 1.4)."""

from __future__ import annotations

import pytest

from topoipam.errors import ValidationError
from topoipam.model.defaults import default_pools, parse_encap_mode, parse_env_bool
from topoipam.model.validate import validate


def test_defaults_without_environment():
    (v4,) = default_pools({})
    assert (v4.name, v4.spec.cidr, v4.spec.ipip_mode, v4.spec.vxlan_mode, v4.spec.nat_outgoing,
            v4.spec.block_size, v4.spec.node_selector) == ("default-ipv4-ippool", "192.168.0.0/16", "Never", "Never",
                                                           True, 26, "all()")
    assert validate(v4).spec.cidr == "192.168.0.0/16"


def test_both_families_from_environment():
    env = {"CALICO_IPV4POOL_CIDR": "10.244.0.0/16", "CALICO_IPV4POOL_IPIP": "CrossSubnet",
           "CALICO_IPV4POOL_BLOCK_SIZE": "24", "CALICO_IPV4POOL_NODE_SELECTOR": 'rack == "0"',
           "CALICO_IPV4POOL_NAT_OUTGOING": "No", "CALICO_IPV6POOL_CIDR": "fd00:10::/48",
           "CALICO_IPV6POOL_VXLAN": "Always", "CALICO_IPV6POOL_DISABLE_BGP_EXPORT": "yes"}
    v4, v6 = default_pools(env)
    assert (v4.spec.cidr, v4.spec.ipip_mode, v4.spec.block_size, v4.spec.node_selector, v4.spec.nat_outgoing) == \
        ("10.244.0.0/16", "CrossSubnet", 24, 'rack == "0"', False)
    assert (v6.name, v6.spec.vxlan_mode, v6.spec.nat_outgoing, v6.spec.disable_bgp_export, v6.spec.block_size) == \
        ("default-ipv6-ippool", "Always", False, True, 122)
    assert validate(v6).spec.cidr == "fd00:10::/48"


def test_existing_versions_and_none_skip():
    assert default_pools({}, existing_versions={4}) == []
    assert [p.name for p in default_pools({"CALICO_IPV4POOL_CIDR": "none"}, ipv6_cidr="fd00::/48")] == \
        ["default-ipv6-ippool"]


def test_no_default_pools():
    assert default_pools({"NO_DEFAULT_POOLS": "TRUE"}) == []
    with pytest.raises(ValidationError, match="NO_DEFAULT_POOLS=true and CALICO_IPV4POOL_CIDR"):
        default_pools({"NO_DEFAULT_POOLS": "true", "CALICO_IPV4POOL_CIDR": "10.0.0.0/16"})


@pytest.mark.parametrize("value, mode", [(None, "Never"), ("", "Never"), ("OFF", "Never"), ("never", "Never"),
                                         ("CrossSubnet", "CrossSubnet"), ("cross-subnet", "CrossSubnet"),
                                         ("ALWAYS", "Always")])
def test_encap_modes(value, mode):
    assert parse_encap_mode(value, "CALICO_IPV4POOL_IPIP", "IPIP") == mode


def test_bad_values():
    with pytest.raises(ValidationError, match=r"^Unrecognized IPIP mode specified in CALICO_IPV4POOL_IPIP 'sometimes'$"):
        default_pools({"CALICO_IPV4POOL_IPIP": "sometimes"})
    with pytest.raises(ValidationError, match="CALICO_IPV4POOL_BLOCK_SIZE must be between 20 and 32, got 19"):
        default_pools({"CALICO_IPV4POOL_BLOCK_SIZE": "19"})
    with pytest.raises(ValidationError, match="CALICO_IPV6POOL_BLOCK_SIZE must be an integer"):
        default_pools({"CALICO_IPV6POOL_BLOCK_SIZE": "x"}, ipv6_cidr="fd00::/48")
    with pytest.raises(ValidationError, match="CALICO_IPV4POOL_NODE_SELECTOR is not a valid selector"):
        default_pools({"CALICO_IPV4POOL_NODE_SELECTOR": "b == b"})


@pytest.mark.parametrize("value, default, expected", [(None, True, True), (None, False, False), ("F", True, False),
                                                      ("0", True, False), ("n", True, False), ("maybe", False, True)])
def test_env_bool(value, default, expected):
    assert parse_env_bool(value, default) is expected
