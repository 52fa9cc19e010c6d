"""Repairs for the damaged records ``ipam check`` names (each finding carries its exact command).

Both are compare-and-swaps on what was read, so a repair never overwrites a record that changed
since (a repair racing an assignment loses, and is simply run again after another check):

* ``delete_record(store, key, revision)``: a record that does not decode, or an affinity without a
  block: deleted if still at ``revision``. A block's summary bit is cleared in the same commit (the
  slot can be claimed again). Whatever addresses it held are free afterwards: recreate the
  workloads that had them.
* ``rebuild_block(store, cidr)``: a block whose ordinals are not each accounted for exactly once:
  allocations naming no attribute entry are dropped, and the free list is rebuilt as every ordinal
  not allocated (its existing order kept, missing ones appended), in one Update.
"""

from __future__ import annotations

import ipaddress

from topoipam.core.block import Block
from topoipam.errors import ConflictError, NotFoundError, ValidationError
from topoipam.ipam import keys
from topoipam.ipam.blocks import chunk_bit_op, parse_block
from topoipam.store.base import Delete, Update


def _block_net(key: str):
    for version in (4, 6):
        if key.startswith(keys.block_prefix(version)):
            try:
                return keys.net_of_block_key(key, version)
            except ValueError:
                return None
    return None


def delete_record(store, key: str, revision: int) -> bool:
    """Delete ``key`` if it is still at ``revision``; False if it changed or is gone."""
    if not key.startswith(keys.ROOT):
        raise ValidationError(f"{key} is not an IPAM record (keys under {keys.ROOT})")
    rec = store.get(key)
    if rec is None or rec.revision != revision:
        return False
    ops = [Delete(key, revision)]
    net = _block_net(key)
    if net is not None:
        bit = chunk_bit_op(store, net, False)
        ops += [bit] if bit is not None else []
    try:
        store.commit(ops)
    except (ConflictError, NotFoundError):
        return False
    return True


def rebuild_block(store, cidr_text: str) -> str:
    """Make block ``cidr`` account for each ordinal exactly once; returns what was done. ValidationError
    for a bad CIDR, NotFoundError when there is no such block, False-like "" when the block changed."""
    try:
        net = ipaddress.ip_network(cidr_text)
    except ValueError:
        raise ValidationError(f"invalid block CIDR {cidr_text!r}") from None
    rec = store.get(keys.block_key(net))
    if rec is None:
        raise NotFoundError(f"there is no block {net}")
    block = parse_block(rec)  # does not decode: DamagedRecordError (its repair is delete_record)
    if not block.damage():
        return f"block {net} is consistent: nothing to do"
    fixed = _rebuilt(block)
    try:
        store.commit([Update(rec.key, fixed.to_json(), rec.revision)])
    except ConflictError:
        return ""
    return f"block {net} rebuilt: {fixed.in_use} allocated, {len(fixed.unallocated)} free"


def _rebuilt(b: Block) -> Block:
    size = b.cidr.num_addresses
    allocs = (list(b.allocations) + [None] * size)[:size]
    allocs = [idx if type(idx) is int and 0 <= idx < len(b.attributes) else None for idx in allocs]
    free = [o for o in dict.fromkeys(b.unallocated) if type(o) is int and 0 <= o < size and allocs[o] is None]
    free += [o for o in range(size) if allocs[o] is None and o not in set(free)]
    seq = {o: n for o, n in b.seq_for_allocation.items() if 0 <= o < size and allocs[o] is not None}
    fixed = Block(b.cidr, b.affinity, b.claim_time, allocs, free, list(b.attributes), b.sequence_number + 1, seq)
    fixed._compact_attributes()
    return fixed
