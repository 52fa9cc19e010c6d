"""The data of ``ipam map``: every pool with its claimed blocks, holders, use, borrowed and reserved
addresses, read once (handles before blocks, as ``ipam check`` reads them: an assignment commits its
handle and its block together, so that order never shows a live allocation without its attributes).
The picture itself is ``core.addrmap`` (pure)."""

from __future__ import annotations

from topoipam.core.addrmap import NO_HOLDER, MapBlock, MapPool
from topoipam.core.block import affinity_node
from topoipam.core.pools import pool_containing
from topoipam.ipam.blocks import reserved_in
from topoipam.ipam.check import iter_blocks
from topoipam.ipam.leaks import handle_records
from topoipam.ipam.topology import Snapshot, StoreTopology
from topoipam.resources import repo

NO_LABEL = "<none>"  # the domain of a holder without the label (or no longer registered)


def address_map(store, label: str | None = None, progress=None) -> list[MapPool]:
    """Pools in name order, then one pseudo-pool per block lying in no pool (named ``<no pool>``).
    ``progress(done, total)``, if given, is called while the blocks are sorted into pools."""
    snap = Snapshot(StoreTopology(store))
    reserved = snap.reserved
    labels = {n.name: n.labels for n in repo.list_nodes(store)}
    on_handle = {h.handle: h.attrs for h in handle_records(store)}
    stored = list(iter_blocks(store))
    pools = {p.name: MapPool(p.name, p.network, p.spec.block_size,
                             reserved=[r for r in reserved if r.version == p.version and r.overlaps(p.network)],
                             disabled=p.spec.disabled) for p in snap.pools}
    orphans = []
    for done, s in enumerate(stored, 1):
        b = s.block
        holder = affinity_node(b.affinity)
        if holder is None:
            domain = NO_HOLDER
        else:
            domain = labels.get(holder, {}).get(label, NO_LABEL) if label else holder
        entry = MapBlock(b.cidr, holder, domain, b.size, b.in_use, _borrowed(b, holder, on_handle),
                         len(reserved_in(b, reserved)))
        pool = pool_containing(snap.pools, b.cidr)
        if pool is None:
            orphans.append(MapPool("<no pool>", b.cidr, b.cidr.prefixlen, [entry]))
        else:
            pools[pool.name].blocks.append(entry)
        if progress is not None:
            progress(done, len(stored))
    return list(pools.values()) + orphans


def _borrowed(block, holder: str | None, on_handle) -> int:
    """Addresses of ``block`` allocated to a node other than its holder (``ipam show --show-borrowed``'s rule)."""
    n = 0
    for o in block.allocated_ordinals():
        node = block.attrs_of(o, on_handle).get("node")
        if node and node != holder:
            n += 1
    return n
