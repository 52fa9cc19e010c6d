"""Where IPAM records live in the datastore.

    /topoipam/ipam/v2/assignment/ipv4/block/0a000000-26     block 10.0.0.0/26 (value: core.block.Block JSON)
    /topoipam/ipam/v2/host/<node>/ipv4/block/0a000000-26    affinity of that block to <node>
    /topoipam/ipam/v2/domain/rack=0/ipv4/block/0a000000-26  affinity to the domain rack=0 (core.affinity)
    /topoipam/ipam/v2/guard/domain/rack=0/ipv4              moved by every claim for rack=0 (one race per claim)
    /topoipam/ipam/v2/handle/<handle id>                    {"block": {"10.0.0.0/26": count}, "deleted": false}
    /topoipam/ipam/v2/summary/ipv4/26/00000028              claimed-block bitmap of chunk 0x28 (core.summary)

A domain's keys depend only on (label, value), never on the node claiming: two nodes of one
rack claiming at once both move the domain's claim guard (and Create the same affinity key when
they pick the same block), so one wins the CAS and the other retries with the block in view
(one race, never two blocks). A label's "/" is written "%2F" (label
keys have no "%" and no "=", values no "/"), so a holder's prefix is never another's prefix.

Networks are written as fixed-width hex (8 digits IPv4, 32 IPv6) so that key
order is address order: a pool's blocks are one key range, and a host's
affinities are one prefix (listed without scanning other hosts).
"""

from __future__ import annotations

import ipaddress

ROOT = "/topoipam/ipam/v2/"
HANDLE_PREFIX = f"{ROOT}handle/"


def _width(version: int) -> int:
    return 8 if version == 4 else 32


def net_suffix(net) -> str:
    return f"{int(net.network_address):0{_width(net.version)}x}-{net.prefixlen}"


def parse_suffix(suffix: str, version: int):
    hexpart, _, prefix = suffix.partition("-")
    cls = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
    return cls((int(hexpart, 16), int(prefix)))


def block_prefix(version: int) -> str:
    return f"{ROOT}assignment/ipv{version}/block/"


def block_key(net) -> str:
    return block_prefix(net.version) + net_suffix(net)


def block_key_at(version: int, address: int) -> str:
    """The first possible block key at or after ``address`` (for range reads)."""
    return f"{block_prefix(version)}{address:0{_width(version)}x}"


def net_of_block_key(key: str, version: int):
    return parse_suffix(key[len(block_prefix(version)):], version)


def affinity_prefix(node: str, version: int) -> str:
    return f"{ROOT}host/{node}/ipv{version}/block/"


def affinity_key(node: str, net) -> str:
    return affinity_prefix(node, net.version) + net_suffix(net)


def holder_prefix(holder, version: int) -> str:
    """The affinity-key prefix of a ``core.affinity.Holder`` (a host's is ``affinity_prefix``)."""
    if holder.node is not None:
        return affinity_prefix(holder.node, version)
    return f"{ROOT}domain/{holder.label.replace('/', '%2F')}={holder.name}/ipv{version}/block/"


def holder_key(holder, net) -> str:
    return holder_prefix(holder, net.version) + net_suffix(net)


def claim_guard_key(holder, version: int) -> str:
    """The key every claim of a new block for a domain moves (``assign.FamilyAssigner._domain_guard``)."""
    return f"{ROOT}guard/domain/{holder.label.replace('/', '%2F')}={holder.name}/ipv{version}"


def handle_key(handle: str) -> str:
    return HANDLE_PREFIX + handle


def chunk_prefix(version: int, block_size: int) -> str:
    return f"{ROOT}summary/ipv{version}/{block_size}/"


def chunk_key(version: int, block_size: int, chunk: int) -> str:
    return f"{chunk_prefix(version, block_size)}{chunk:0{_width(version)}x}"
