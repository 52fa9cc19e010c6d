"""What creating or deleting an IP pool, and deleting a node, need from IPAM, handed to
``resources.service`` by its caller.

resources/ and ipam/ do not import each other (tests/test_layers.py): the
edge (CLI, library user, test) builds ``ResourceService(store, PoolBlocks(store))``.
"""

from __future__ import annotations

from collections.abc import Callable

from topoipam.core.summary import chunk_of, global_block_index
from topoipam.ipam import keys
from topoipam.ipam.blocks import block_records_from
from topoipam.store.base import Check, Store


class PoolBlocks:
    """The IPAM side of pool create (blocks of another size), pool delete (reference 1.3) and node
    delete (Calico's decommission, ``ipam.decommission``). ``report`` receives one line per release a
    node delete makes, as it lands (the CLI prints them)."""

    def __init__(self, store: Store, report: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.report = report or (lambda _line: None)

    def block_sizes_in(self, net) -> set[int]:
        """Prefix lengths of stored blocks inside ``net`` (blocks outlive a deleted pool)."""
        sizes: set[int] = set()
        for record in block_records_from(self.store, net.version, int(net.network_address)):
            block = keys.net_of_block_key(record.key, net.version)
            if block.network_address > net.broadcast_address:
                break  # key order is address order: past the pool's end
            sizes.add(block.prefixlen)
        return sizes

    def claims_fence(self, pool) -> list[Check]:
        """Checks on the claimed-block summaries covering ``pool`` as they are now (absent: revision 0).
        Every block claim changes its summary record in the claim's commit, so a commit carrying these
        fails if a block of the pool was claimed since: read them BEFORE deciding on the pool's blocks."""
        net, size = pool.network, pool.spec.block_size
        lo = chunk_of(global_block_index(int(net.network_address), net.max_prefixlen, size))
        hi = chunk_of(global_block_index(int(net.broadcast_address), net.max_prefixlen, size))
        wanted = [keys.chunk_key(net.version, size, c) for c in range(lo, hi + 1)]
        found = self.store.get_many(wanted)
        return [Check(key, found[key].revision if key in found else 0) for key in wanted]

    def release_pool_affinities(self, pool) -> list:
        """Release the affinities of the pool's empty blocks (the pool is disabled already)."""
        from topoipam.ipam import IpamService

        return IpamService(self.store).release_pool_affinities(pool)

    def release_node(self, name: str):
        """Release the node's workload and tunnel addresses and its block affinities (the Node stays)."""
        from topoipam.ipam import IpamService
        from topoipam.ipam.decommission import release_node

        return release_node(IpamService(self.store), name, self.report)
