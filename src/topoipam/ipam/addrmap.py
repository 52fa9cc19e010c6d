"""The data of ``ipam map``: every pool with its claimed blocks, holders, use, borrowed and reserved
addresses, read once (handles before blocks, as ``ipam check`` reads them: an assignment commits its
handle and its block together, so that order never shows a live allocation without its attributes).
The picture itself is ``core.addrmap`` (pure)."""

from __future__ import annotations

from topoipam.core.addrmap import NO_HOLDER, MapBlock, MapPool
from topoipam.core.affinity import holder_of
from topoipam.core.pools import pool_containing
from topoipam.ipam.blocks import reserved_in
from topoipam.ipam.check import borrows, iter_blocks
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
        h = holder_of(b.affinity)  # core.affinity: a node, or a domain such as rack=0
        holder = h.display if h is not None else None
        domain = NO_HOLDER if h is None else _domain(h, label, labels)
        entry = MapBlock(b.cidr, holder, domain, b.size, b.in_use, _borrowed(b, h, on_handle, labels),
                         len(reserved_in(b, reserved)))
        pool = pool_containing(snap.pools, b.cidr)
        if pool is None:
            orphans.append(MapPool("<no pool>", b.cidr, b.cidr.prefixlen, [entry]))
        else:
            pools[pool.name].blocks.append(entry)
        if progress is not None:
            progress(done, len(stored))
    return list(pools.values()) + orphans


def _domain(holder, label: str | None, labels: dict) -> str:
    """What colours a block: its holder (no ``label``), else the label's value of its node, or of its domain."""
    if not label:
        return holder.display
    if holder.is_domain:
        return holder.name if holder.label == label else NO_LABEL
    return labels.get(holder.node, {}).get(label, NO_LABEL)


def _borrowed(block, holder, on_handle, labels: dict) -> int:
    """Addresses of ``block`` allocated to a node not of its holder (``ipam show --show-borrowed``'s rule)."""
    n = 0
    for o in block.allocated_ordinals():
        node = block.attrs_of(o, on_handle).get("node")
        if node and (holder is None or borrows(node, holder, labels.get)):
            n += 1
    return n
