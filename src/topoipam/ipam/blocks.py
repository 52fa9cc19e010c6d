"""Typed reads of blocks, affinities, handles and summaries, and the write ops that change them.

Nothing here commits: functions read and return values with the revisions read,
or build ``store.base`` ops conditional on those revisions. The service
combines the ops of one decision into one commit (``retry.run_cas``).
Invariant kept by construction: every op that creates or deletes a block also
sets or clears its bit in the chunk summary, in the same commit.
"""

from __future__ import annotations

import ipaddress
from topoipam import leanjson
from topoipam.structs import dataclass
from collections.abc import Iterator, Mapping

from topoipam.core import blockgen
from topoipam.core.affinity import host_holder
from topoipam.core.block import Block, dumps_compact, dumps_str, reserved_ordinals
from topoipam.core.summary import CHUNK_BITS, Chunk, chunk_of, global_block_index
from topoipam.errors import DamagedRecordError
from topoipam.ipam import keys
from topoipam.resources.keys import resource_key
from topoipam.store.base import Check, Create, Delete, Op, Record, Store, Update

CHUNK_PAGE = 64  # summary records per range read (a /8 of /26 blocks is 64 chunks)
BLOCK_PAGE = 256  # blocks per range read when scanning a pool (borrow, reclaim, pool delete)
AFFINITY_VALUE = leanjson.dumps({"state": "confirmed", "deleted": False}, separators=(",", ":")).encode()
# Affinity of a block with no free ordinal left. The hint (our extension of Calico's value) lets a node
# skip its full blocks without reading them, so assignment cost does not grow with its block count.
# It is written in the same commit as the block change that fills or un-fills the block.
AFFINITY_FULL = leanjson.dumps({"state": "confirmed", "deleted": False, "full": True}, separators=(",", ":")).encode()


def affinity_is_full(record: Record | None) -> bool:
    return record is not None and b'"full":true' in record.value


def affinity_value(block: Block) -> bytes:
    return AFFINITY_VALUE if block.unallocated else AFFINITY_FULL


def affinity_hint_op(record: Record | None, block: Block) -> Op | None:
    """The op bringing the affinity's full-hint in line with ``block`` (None if it already is)."""
    if record is None:
        return None
    full = not block.unallocated
    if full == affinity_is_full(record):
        return None
    return Update(record.key, AFFINITY_FULL if full else AFFINITY_VALUE, record.revision)


@dataclass
class StoredBlock:
    block: Block
    revision: int

    @property
    def key(self) -> str:
        return keys.block_key(self.block.cidr)


def load_block(record: Record | None, cache=None) -> StoredBlock | None:
    """The block of ``record`` (None: absent); decoded once per revision when a ``cache.ServiceCache``
    is given (it hands out a copy)."""
    if record is None:
        return None
    block = cache.get(record.key, record.revision) if cache is not None else None
    return StoredBlock(block or decode_block(record), record.revision)


def parse_block(record: Record) -> Block:
    """The block of ``record`` as stored, consistent or not; DamagedRecordError when it does not decode."""
    try:
        return Block.from_json(record.value)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DamagedRecordError(record.key, record.revision, f"it does not decode ({type(exc).__name__}: {exc})") \
            from None


def decode_block(record: Record) -> Block:
    """The block of ``record``, checked (decoded blocks only: the kept ones were written by us);
    DamagedRecordError when it does not decode or contradicts itself."""
    block = parse_block(record)
    why = block.damage()
    if why:
        raise DamagedRecordError(record.key, record.revision, why)
    return block


def block_net_of(ip, block_size: int):
    return ipaddress.ip_network((int(ip), block_size), strict=False)


BLOCK_SIZES = {4: range(20, 33), 6: range(116, 129)}  # every block size a pool may have


def candidate_keys(ip) -> list[str]:
    """Keys of every block that could hold ``ip`` (one per possible block size): one get_many finds it."""
    return [keys.block_key(block_net_of(ip, size)) for size in BLOCK_SIZES[ip.version]]


def list_affine_nets(store: Store, node: str, version: int) -> list:
    """Networks of the node's affine blocks of one family, in address order (one read)."""
    return list_holder_nets(store, host_holder(node), version)


def list_holder_nets(store: Store, holder, version: int) -> list:
    """Networks of the blocks affine to ``holder`` (a ``core.affinity.Holder``), in address order."""
    return [net for net, _ in list_affinities(store, holder, version)]


def list_affinities(store: Store, holder, version: int) -> list[tuple]:
    """(network, full-hint) of ``holder``'s affine blocks of one family, in address order (one read)."""
    prefix = keys.holder_prefix(holder, version)
    return [(keys.parse_suffix(r.key[len(prefix):], version), affinity_is_full(r)) for r in store.list(prefix)]


def reserved_in(block: Block, reserved, rule=None) -> frozenset[int]:
    """The ordinals of ``block`` a request may not be given: reserved ones and, with ``rule`` (the
    request's ``L2Segment``), those its segment makes unusable."""
    out = reserved_ordinals(block.cidr, reserved) if reserved else frozenset()
    return out | rule.unusable(block.cidr) if rule is not None else out


# -- handles -------------------------------------------------------------------

def handle_ops(records: dict[str, Record], deltas: dict[str, dict[str, int]],
               attrs: Mapping[str, str] | None = None) -> list[Op]:
    """Ops applying per-handle, per-block count changes; a handle whose counts all reach 0 is deleted.
    A handle created here carries ``attrs``."""
    ops: list[Op] = []
    for handle, per_block in deltas.items():
        key = keys.handle_key(handle)
        op, _ = handle_op(key, records.get(key), per_block, attrs)
        if op is not None:
            ops.append(op)
    return ops


def handle_op(key: str, rec: Record | None, per_block: dict[str, int],
              attrs: Mapping[str, str] | None = None) -> tuple[Op | None, bytes]:
    """The op applying count changes to one handle record (``rec``: as read; None: absent), and the
    value it writes. A new record carries ``attrs`` (``secondary``: the workload's attributes, kept
    once per handle, see ``Block.attrs_of``); an existing one keeps the attributes it has."""
    if rec is None and len(per_block) == 1:  # a new handle (every assignment's first commit)
        cidr, count = next(iter(per_block.items()))
        if count <= 0:
            return None, b""
        value = new_handle_value(cidr, count, attrs)
        return Create(key, value), value
    doc = handle_doc(rec) if rec else {"secondary": dict(attrs)} if attrs else {}
    counts = dict(doc["block"]) if rec else {}
    for cidr, delta in per_block.items():
        counts[cidr] = counts.get(cidr, 0) + delta
        if counts[cidr] <= 0:
            del counts[cidr]
    new = {"block": counts, **({"secondary": doc["secondary"]} if doc.get("secondary") else {}), "deleted": False}
    value = dumps_compact(new).encode()
    if rec is None:
        return (Create(key, value) if counts else None), value
    if counts:
        return Update(key, value, rec.revision), value
    return Delete(key, rec.revision), value


def new_handle_value(cidr: str, count: int, attrs: Mapping[str, str] | None) -> bytes:
    """The value of a handle record created with ``count`` addresses in block ``cidr`` (formatted
    directly: it is written on every assignment)."""
    extra = f',"secondary":{_attrs_json(attrs)}' if attrs else ""
    return f'{{"block":{{"{cidr}":{int(count)}}}{extra},"deleted":false}}'.encode()


def _attrs_json(attrs: Mapping[str, str]) -> str:
    """``dumps_compact(dict(attrs))``; for string attributes (all the service writes) without building an
    encoder per call, which is what json does for a dict."""
    try:
        return "{" + ",".join([f"{dumps_str(k)}:{dumps_str(v)}" for k, v in attrs.items()]) + "}"
    except TypeError:  # not strings: the encoder says what is wrong with them
        return dumps_compact(dict(attrs))



def entry_attrs(handle: str | None, record: Record | None, attrs: Mapping[str, str] | None) -> dict | None:
    """The ``secondary`` a block entry carries for an allocation under ``handle`` with ``attrs``: none
    (None) when the handle record holds those attributes, or is absent and will be created with them;
    else the allocation's own (a handle reused with other attributes, or no handle at all)."""
    attrs = dict(attrs or {})
    if handle is None:
        return attrs or None
    if record is None or handle_attrs(record) == attrs:
        return None
    return attrs


def handle_doc(record: Record) -> dict:
    """The decoded handle record; DamagedRecordError when it does not decode."""
    try:
        doc = leanjson.loads(record.value)
        if not isinstance(doc.get("block"), dict):
            raise ValueError("no block counts")
        return doc
    except (ValueError, AttributeError) as exc:
        raise DamagedRecordError(record.key, record.revision, f"it does not decode ({exc})") from None


def handle_attrs(record: Record | None) -> dict[str, str]:
    """The attributes a handle record carries (those of its allocations whose block entry has none);
    none when it is damaged (shown without attributes; ``ipam check`` names the record)."""
    try:
        return {} if record is None else dict(handle_doc(record).get("secondary") or {})
    except DamagedRecordError:
        return {}


def handle_counts(record: Record | None) -> dict[str, int]:
    return {} if record is None else dict(handle_doc(record)["block"])


# -- summaries -----------------------------------------------------------------

def _chunk_params(net):
    return net.version, net.prefixlen, global_block_index(int(net.network_address), net.max_prefixlen, net.prefixlen)


class ChunkEdits:
    """Summary bit changes of one commit, merged so that each chunk record gets one op."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._chunks: dict[str, tuple[Record | None, Chunk]] = {}

    def set(self, net, value: bool, record: Record | None = None, *, read: bool = True) -> None:
        version, size, g = _chunk_params(net)
        key = keys.chunk_key(version, size, chunk_of(g))
        if key not in self._chunks:
            if record is None and read:
                record = self.store.get(key)
            self._chunks[key] = (record, Chunk.from_json(record.value) if record else Chunk(chunk_of(g)))
        self._chunks[key][1].set(g, value)

    def ops(self) -> list[Op]:
        """One op per chunk touched; a chunk left with no block is deleted, so that claiming a block
        and giving it back leaves the datastore as it was."""
        out: list[Op] = []
        for key, (record, chunk) in self._chunks.items():
            if record is not None:
                out.append(Update(key, chunk.to_json(), record.revision) if chunk.bits
                           else Delete(key, record.revision))
            elif chunk.bits:
                out.append(Create(key, chunk.to_json()))
        return out


def chunk_bit_op(store: Store, net, value: bool, record: Record | None = None, *, read: bool = True) -> Op | None:
    """The op setting (block created) or clearing (block deleted) ``net``'s bit in its chunk summary."""
    edits = ChunkEdits(store)
    edits.set(net, value, record, read=read)
    ops = edits.ops()
    return ops[0] if ops else None


def _free_slots(store: Store, version: int, size: int, lo: int, hi: int) -> Iterator[tuple[int, Record | None]]:
    """Global block indices in [lo, hi] with no block, ascending, each with its chunk record (None: no record)."""
    prefix = keys.chunk_prefix(version, size)
    cursor, last = chunk_of(lo), chunk_of(hi)

    def absent(c):
        first = max(lo, c << CHUNK_BITS)
        for g in range(first, min(hi, ((c + 1) << CHUNK_BITS) - 1) + 1):
            yield g, None

    while cursor <= last:
        records = store.list(prefix, start=keys.chunk_key(version, size, cursor), limit=CHUNK_PAGE)
        for rec in records:
            chunk = Chunk.from_json(rec.value)
            if chunk.index > last:
                break
            for c in range(cursor, chunk.index):
                yield from absent(c)
            for g in chunk.free_in(lo, hi):
                yield g, rec
            cursor = chunk.index + 1
        if len(records) < CHUNK_PAGE or Chunk.from_json(records[-1].value).index >= last:
            break
    for c in range(cursor, last + 1):
        yield from absent(c)


def find_unclaimed_block(store: Store, pool, node: str, reserved) -> tuple | None:
    """The first block of ``pool`` in ``node``'s order that does not exist and is not fully reserved,
    with its chunk record: (network, record|None). Reads a few summary records, never the blocks;
    a reservation covering many blocks is jumped over (one more read), not walked."""
    size, maxp = pool.spec.block_size, pool.network.max_prefixlen
    first = global_block_index(int(pool.network.network_address), maxp, size)
    for indices in blockgen.host_order(node, blockgen.num_blocks(pool.network, size)):
        lo, hi = first + indices.start, first + indices.stop - 1
        while lo <= hi:
            resume = None
            for g, rec in _free_slots(store, pool.version, size, lo, hi):
                net = block_net_of(ipaddress.ip_address(g << (maxp - size)), size)
                cover = next((r for r in reserved if r.version == net.version and net.subnet_of(r)), None)
                if cover is not None:
                    resume = global_block_index(int(cover.broadcast_address), maxp, size) + 1
                    break
                if not reserved or len(reserved_ordinals(net, reserved)) < net.num_addresses:
                    return net, rec
            if resume is None:
                break
            lo = resume
    return None


def scan_pool_blocks(store: Store, pool, node: str | None = None) -> Iterator[StoredBlock]:
    """Existing blocks of ``pool`` (paged range reads); from ``node``'s start point with wrap-around
    if a node is given, else in address order; damaged ones are passed over. For the rare paths only
    (borrow, reclaim, pool delete)."""
    net, size = pool.network, pool.spec.block_size
    step, base, count = 1 << (net.max_prefixlen - size), int(net.network_address), blockgen.num_blocks(net, size)
    for indices in (blockgen.host_order(node, count) if node is not None else (range(count),)):
        if indices:
            yield from _scan_range(store, net.version, size, base + indices.start * step, base + indices.stop * step - 1)


def block_records_from(store: Store, version: int, address: int) -> Iterator[Record]:
    """Block records at or after ``address``, in key order (= address order), a page per read.
    Callers stop iterating when they are past the range they want."""
    prefix = keys.block_prefix(version)
    start = keys.block_key_at(version, address)
    while True:
        records = store.list(prefix, start=start, limit=BLOCK_PAGE)
        yield from records
        if len(records) < BLOCK_PAGE:
            return
        start = records[-1].key + "\x00"


def _scan_range(store: Store, version: int, size: int, lo: int, hi: int) -> Iterator[StoredBlock]:
    for rec in block_records_from(store, version, lo):
        bnet = keys.net_of_block_key(rec.key, version)
        if int(bnet.network_address) > hi:
            return
        if bnet.prefixlen == size:
            try:
                yield load_block(rec)
            except DamagedRecordError:  # passed over: ``ipam check`` names it and its repair
                continue


def delete_block_ops(store: Store, stored: StoredBlock, affinity_record: Record | None,
                     chunks: ChunkEdits | None = None) -> list[Op]:
    """Delete an (empty) block, its affinity record if given, and its summary bit (into ``chunks``
    when several blocks change in one commit: the caller then adds ``chunks.ops()``)."""
    ops: list[Op] = [Delete(stored.key, stored.revision)]
    if affinity_record is not None:
        ops.append(Delete(affinity_record.key, affinity_record.revision))
    if chunks is not None:
        chunks.set(stored.block.cidr, False)
    else:
        bit = chunk_bit_op(store, stored.block.cidr, False)
        if bit is not None:
            ops.append(bit)
    return ops


def release_affinity_ops(store: Store, stored: StoredBlock, affinity_record: Record | None) -> list[Op]:
    """Calico's affinity release: an empty block is deleted; a non-empty one keeps its allocations
    and loses its affinity."""
    if stored.block.is_empty():
        return delete_block_ops(store, stored, affinity_record)
    stored.block.affinity = None
    stored.block.claim_time = None
    stored.block.sequence_number += 1
    ops: list[Op] = [Update(stored.key, stored.block.to_json(), stored.revision)]
    if affinity_record is not None:
        ops.append(Delete(affinity_record.key, affinity_record.revision))
    return ops


def claim_ops(store: Store, block: Block, holder, chunk_record: Record | None, *, read_chunk: bool) -> list[Op]:
    """Create ``holder``'s affinity and the block (and set its summary bit) in one commit."""
    ops: list[Op] = [Create(keys.holder_key(holder, block.cidr), affinity_value(block)),
                     Create(keys.block_key(block.cidr), block.to_json())]
    bit = chunk_bit_op(store, block.cidr, True, chunk_record, read=read_chunk)
    ops.append(bit)
    return ops


def pool_check(pool) -> list[Op]:
    """Appended to every commit that claims a block of ``pool``: the claim lands only if the pool is
    unchanged since it was read, so that no claim slips in after a pool delete disabled the pool and
    released its affinities (reference 1.3). A pool given without a revision (a caller's static
    topology) is not checked."""
    rv = pool.metadata.resource_version
    return [Check(pool_key(pool), int(rv))] if rv else []


def pool_key(pool) -> str:
    return resource_key("IPPool", pool.name)


def pool_now(pool, record: Record | None):
    """``pool`` as ``record`` (its key, read after a claim lost its race) holds it now; None once it
    is deleted, disabled or moved: the retry must not claim from it."""
    rv = pool.metadata.resource_version
    if not rv or (record is not None and record.revision == int(rv)):
        return pool
    if record is None:
        return None
    from topoipam.model.storage import from_storage  # not with this module: a CNI DEL never reads a pool

    current = from_storage("IPPool", record.value, record.revision)
    return None if current.spec.disabled or current.spec.cidr != pool.spec.cidr else current
