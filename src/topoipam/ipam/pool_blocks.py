"""What creating or deleting an IP pool needs from IPAM, handed to ``resources.service`` by its caller.

resources/ and ipam/ do not import each other (tests/test_layers.py): the
edge (CLI, library user, test) builds ``ResourceService(store, PoolBlocks(store))``.
"""

from __future__ import annotations

from topoipam.ipam import keys
from topoipam.ipam.blocks import block_records_from
from topoipam.store.base import Store


class PoolBlocks:
    """The IPAM side of pool create (blocks of another size) and pool delete (reference 1.3)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def block_sizes_in(self, net) -> set[int]:
        """Prefix lengths of stored blocks inside ``net`` (blocks outlive a deleted pool)."""
        sizes: set[int] = set()
        for record in block_records_from(self.store, net.version, int(net.network_address)):
            block = keys.net_of_block_key(record.key, net.version)
            if block.network_address > net.broadcast_address:
                break  # key order is address order: past the pool's end
            sizes.add(block.prefixlen)
        return sizes

    def release_pool_affinities(self, pool) -> list:
        """Release the affinities of the pool's empty blocks (the pool is disabled already)."""
        from topoipam.ipam import IpamService

        return IpamService(self.store).release_pool_affinities(pool)
