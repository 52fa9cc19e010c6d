"""Listings, usage figures and the consistency check, as data for ``ipam show`` / ``ipam check``.

These read whole key ranges (every block, handle and affinity): they are for
operators, never on the assignment path. ``check`` returns findings; the CLI
decides how to print them (problems -> exit 4).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from topoipam.core.affinity import holder_of
from topoipam.core.block import reserved_ordinals
from topoipam.core.insights import reserved_count
from topoipam.core.pools import pool_containing
from topoipam.core.summary import Chunk, chunk_of, global_block_index
from topoipam.errors import DamagedRecordError
from topoipam.ipam import keys
from topoipam.ipam.blocks import StoredBlock, candidate_keys, handle_attrs, load_block, parse_block
from topoipam.ipam.leaks import handle_records
from topoipam.structs import dataclass, field

PROBLEM_KINDS = ("handle-without-address", "address-without-handle", "outside-pools", "node-missing",
                 "affinity-without-block", "block-without-affinity-record", "summary-mismatch", "block-inconsistent",
                 "domain-without-node", "record-undecodable")
REPAIR_DELETE = "topoipam ipam repair --delete-record {key} --revision {revision}"
REPAIR_BLOCK = "topoipam ipam repair --block {cidr}"
INFO_KINDS = ("borrowed",)


@dataclass(frozen=True)
class Allocation:
    ip: object  # ipaddress.IPv4Interface / IPv6Interface with the block prefix
    handle: str | None
    attrs: dict
    block: object  # block network
    node: str | None  # the block's affine node (None: no affinity, or affine to a domain)
    sequence_number: int | None
    holder: object = None  # the block's core.affinity.Holder (host or domain; None: no affinity)


def is_borrowed(a: Allocation, labels_of) -> bool:
    """Whether ``a``'s node (its ``node`` attribute) is not of its block's holder, or the block has
    none (``labels_of``: node name -> its labels, None if not registered)."""
    node = a.attrs.get("node")
    return bool(node) and (a.holder is None or borrows(node, a.holder, labels_of))


def borrows(node: str, holder, labels_of) -> bool:
    """Whether ``node`` is not of ``holder`` (a ``core.affinity.Holder``). With host affinity it is
    judged by name alone, as Calico does; a node no longer registered is not counted against a
    domain (it is a leak, reported as such)."""
    if not holder.is_domain:
        return node != holder.node
    labels = labels_of(node)
    return labels is not None and not holder.carried_by(labels)


def _allocation(b, o, on_handle) -> Allocation:
    holder = holder_of(b.affinity)
    return Allocation(b.interface(o), b.handle_of(o), b.attrs_of(o, on_handle), b.cidr,
                      holder.node if holder else None, b.seq_for_allocation.get(o), holder)


@dataclass(frozen=True)
class BlockUsage:
    cidr: object
    affinity: str | None
    node: str | None
    pool: str | None
    size: int
    in_use: int
    reserved: int = 0  # addresses an IPReservation covers (Calico's IPS RESERVED)
    reserved_in_use: int = 0  # of those, allocated anyway (allocated before the reservation was made)
    holder: object = None  # core.affinity.Holder (None: no affinity)

    @property
    def free(self) -> int:
        """Assignable: neither allocated nor reserved (an address both is counted once)."""
        return self.size - self.in_use - (self.reserved - self.reserved_in_use)


@dataclass(frozen=True)
class PoolUsage:
    name: str
    cidr: str
    disabled: bool
    size: int  # addresses in the pool
    blocks: int  # blocks claimed
    in_use: int
    reserved: int = 0  # addresses of the pool an IPReservation covers, claimed blocks or not
    reserved_in_use: int = 0

    @property
    def free(self) -> int:
        """Assignable: neither allocated nor reserved (an address both is counted once)."""
        return self.size - self.in_use - (self.reserved - self.reserved_in_use)


@dataclass(frozen=True)
class Finding:
    kind: str  # one of PROBLEM_KINDS or INFO_KINDS
    detail: str  # a sentence for the operator
    ip: object = None
    handle: str | None = None
    repair: str = ""  # the exact command that repairs it, where one does

    @property
    def is_problem(self) -> bool:
        return self.kind in PROBLEM_KINDS


@dataclass
class CheckReport:
    blocks: int = 0
    allocations: int = 0
    handles: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.is_problem]

    @property
    def ok(self) -> bool:
        return not self.problems


def iter_blocks(store, undecodable: list | None = None, decoded=None) -> Iterator:
    """Every block that decodes (whether or not it is consistent: ``check`` says what is wrong with
    it); one that does not is left out (and, given ``undecodable``, appended there). ``decoded``: a
    ``store.decoded.Decoded`` of an earlier read of the same store (its blocks are shared, not copied)."""
    for version in (4, 6):
        for rec in store.list(keys.block_prefix(version)):
            try:
                block = decoded.of(rec, parse_block) if decoded is not None else parse_block(rec)
            except DamagedRecordError as exc:
                if undecodable is not None:
                    undecodable.append(exc)
                continue
            yield StoredBlock(block, rec.revision)


def allocations(store, prefix_handle: str | None = None, blocks=None, handles=None) -> list[Allocation]:
    """Every allocated address. ``blocks``: an already-read listing (``iter_blocks``) to use instead of
    reading; ``handles``: the ``leaks.handle_records`` read before it (their attributes are those of
    allocations whose block entry carries none)."""
    if handles is None:  # read first: an allocation landing between the two reads shows no attributes,
        handles = handle_records(store, prefix_handle or "")  # never a later holder's of its handle
    on_handle = {h.handle: h.attrs for h in handles}
    out = []
    for stored in iter_blocks(store) if blocks is None else blocks:
        b = stored.block
        for o in b.allocated_ordinals():
            handle = b.handle_of(o)
            if prefix_handle is not None and not (handle or "").startswith(prefix_handle):
                continue
            out.append(_allocation(b, o, on_handle))
    return out


def allocation_of(store, ip) -> Allocation | None:
    """The allocation of one address (None: not allocated): one read of the blocks that could hold it,
    and one of its handle for the attributes."""
    found = store.get_many(candidate_keys(ip))
    for key in candidate_keys(ip):
        if key in found:
            b = load_block(found[key]).block
            o = b.ordinal(ip)
            if b.allocations[o] is None:
                return None
            handle, entry = b.handle_of(o), b.entry(o)
            on_handle = {} if handle is None or "secondary" in entry else \
                {handle: handle_attrs(store.get(keys.handle_key(handle)))}
            return _allocation(b, o, on_handle)
    return None


def block_usage(store, snap, blocks=None) -> list[BlockUsage]:
    reserved = snap.reserved
    out = []
    for stored in iter_blocks(store) if blocks is None else blocks:
        b = stored.block
        pool = pool_containing(snap.pools, b.cidr)
        held = reserved_ordinals(b.cidr, reserved) if reserved else frozenset()
        holder = holder_of(b.affinity)
        out.append(BlockUsage(b.cidr, b.affinity, holder.node if holder else None, pool.name if pool else None,
                              b.size, b.in_use, len(held), len(held.intersection(b.allocated_ordinals())), holder))
    return out


def pool_usage(store, snap, blocks: list[BlockUsage] | None = None) -> list[PoolUsage]:
    blocks = block_usage(store, snap) if blocks is None else blocks
    out = []
    for p in snap.pools:
        mine = [u for u in blocks if u.pool == p.name]
        out.append(PoolUsage(p.name, p.spec.cidr, p.spec.disabled, p.network.num_addresses, len(mine),
                             sum(u.in_use for u in mine), reserved_count(p.network, snap.reserved),
                             sum(u.reserved_in_use for u in mine)))
    return out


def check(store, snap, blocks=None, handles=None, damaged=None) -> CheckReport:
    """The consistency findings. ``blocks`` (an ``iter_blocks`` listing) and ``handles`` (the
    ``leaks.handle_records``) may be passed already read, with ``damaged``: the records those
    readings left out; handles must then have been read BEFORE the blocks: an assignment commits
    its handle and its block together, so that order cannot show a live handle as holding no address."""
    report = CheckReport()
    damaged = [] if damaged is None else damaged
    records = handle_records(store, damaged=damaged) if handles is None else handles
    blocks = list(iter_blocks(store, damaged)) if blocks is None else blocks
    undecodable = {d.key for d in damaged}
    # a handle's counts in an undecodable block cannot be checked: left out
    handles = {h.handle: {c: n for c, n in h.counts.items() if _block_key(c) not in undecodable} for h in records}
    on_handle = {h.handle: h.attrs for h in records}
    affinity_records = {r.key: r.revision for prefix in ("host/", "domain/")
                        for r in store.list(keys.ROOT + prefix)}
    affinities = set(affinity_records)
    report.blocks, report.handles = len(blocks), len(handles)
    seen_counts: dict[str, dict[str, int]] = {}
    add = report.findings.append
    for stored in blocks:
        b = stored.block
        holder = holder_of(b.affinity)
        if holder is not None:
            akey = keys.holder_key(holder, b.cidr)
            if akey not in affinities:
                add(Finding("block-without-affinity-record", f"block {b.cidr} is affine to {holder.display} "
                            f"but the affinity record {akey} is missing"))
            affinities.discard(akey)
            if holder.is_domain and not snap.carries(holder):
                add(Finding("domain-without-node", f"block {b.cidr} is affine to {holder.display}, which no "
                            f"registered node carries ({b.in_use} addresses in use)"))
        dangling = _check_block(b, add)
        in_pool = pool_containing(snap.pools, b.cidr) is not None
        for o in b.allocated_ordinals():
            if o in dangling:
                continue
            report.allocations += 1
            _check_allocation(b, o, holder, in_pool, handles, on_handle, seen_counts, snap, add)
    for akey in sorted(affinities):
        whose = "domain" if akey.startswith(keys.ROOT + "domain/") else "node"
        add(Finding("affinity-without-block", f"affinity record {akey} has no block affine to its {whose}",
                    repair=REPAIR_DELETE.format(key=akey, revision=affinity_records[akey])))
    for d in damaged:
        add(Finding("record-undecodable", f"record {d.key} (revision {d.revision}) is damaged: {d.why}; "
                    "assignment passes over it", repair=REPAIR_DELETE.format(key=d.key, revision=d.revision)))
    _check_handles(handles, seen_counts, add)
    _check_summaries(store, blocks, add)
    return report


def _check_allocation(b, o, holder, in_pool, handles, on_handle, seen_counts, snap, add) -> None:
    node = holder.node if holder is not None else None
    ip, handle, attrs = b.address(o), b.handle_of(o), b.attrs_of(o, on_handle)
    if handle is not None:
        seen_counts.setdefault(handle, {}).setdefault(str(b.cidr), 0)
        seen_counts[handle][str(b.cidr)] += 1
        if handle not in handles:
            add(Finding("address-without-handle", f"{ip} is allocated to handle {handle}, which does not exist",
                        ip, handle))
    if not in_pool:
        add(Finding("outside-pools", f"{ip} is allocated in block {b.cidr}, which is outside every pool", ip, handle))
    owner = attrs.get("node") or node
    if owner and snap.node(owner) is None:
        add(Finding("node-missing", f"{ip} is allocated to node {owner}, which no longer exists", ip, handle))
    if attrs.get("node") and holder is not None and borrows(attrs["node"], holder, lambda n: _labels(snap, n)):
        add(Finding("borrowed", f"{ip} of node {attrs['node']} is borrowed from block {b.cidr} affine to "
                    f"{holder.display}", ip, handle))


def _labels(snap, name: str):
    node = snap.node(name)
    return node.labels if node is not None else None


def _check_block(b, add) -> set[int]:
    """A block must account for each of its ordinals exactly once: allocated (to an attribute entry
    that exists) or in the free list. An ordinal in neither is lost for good (nothing would ever
    hand it out or release it); one in both could be handed out twice. Returns the allocated
    ordinals whose attribute entry does not exist (the other checks skip them)."""
    allocated, free, twice = set(b.allocated_ordinals()), set(), set()
    for o in b.unallocated:
        (twice if o in free else free).add(o)
    dangling = {o for o in allocated
                if type(b.allocations[o]) is not int or not 0 <= b.allocations[o] < len(b.attributes)}
    for ordinals, text in ((set(range(b.size)) - allocated - free, "neither allocated nor free"),
                           (allocated & free, "allocated and also in the free list"),
                           (twice, "in the free list more than once"),
                           ({o for o in free if type(o) is not int or not 0 <= o < b.size},
                            "in the free list but not in the block"),
                           (dangling, "allocated to an attribute entry that does not exist")):
        if ordinals:
            add(Finding("block-inconsistent", f"block {b.cidr}: {_ordinals(ordinals)} {text}",
                        repair=REPAIR_BLOCK.format(cidr=b.cidr)))
    return dangling


def _block_key(cidr: str) -> str:
    try:
        return keys.block_key(ipaddress.ip_network(cidr))
    except ValueError:
        return ""


def _ordinals(ordinals) -> str:
    """``ordinal 3 is`` / ``ordinals 3, 4 and 9 more are``."""
    listed = sorted(ordinals, key=lambda o: (type(o) is not int, o if type(o) is int else str(o)))
    shown = ", ".join(map(str, listed[:8])) + (f" and {len(listed) - 8} more" if len(listed) > 8 else "")
    return f"ordinals {shown} are" if len(listed) > 1 else f"ordinal {shown} is"


def _check_handles(handles, seen_counts, add) -> None:
    for handle, counts in sorted(handles.items()):
        actual = seen_counts.get(handle, {})
        if not actual:
            add(Finding("handle-without-address", f"handle {handle} holds no address", handle=handle))
        elif {c: n for c, n in counts.items() if n} != actual:
            add(Finding("handle-without-address", f"handle {handle} counts {counts} but blocks hold {actual}",
                        handle=handle))


def _check_summaries(store, blocks, add) -> None:
    expected: dict[tuple, set[int]] = {}
    for stored in blocks:
        net = stored.block.cidr
        g = global_block_index(int(net.network_address), net.max_prefixlen, net.prefixlen)
        expected.setdefault((net.version, net.prefixlen, chunk_of(g)), set()).add(g)
    stored_chunks = {}
    for rec in store.list(keys.ROOT + "summary/"):
        parts = rec.key[len(keys.ROOT + "summary/"):].split("/")
        chunk = Chunk.from_json(rec.value)
        stored_chunks[(int(parts[0][3:]), int(parts[1]), chunk.index)] = chunk
    for where in sorted(set(expected) | set(stored_chunks)):
        chunk = stored_chunks.get(where) or Chunk(where[2])
        want = Chunk(where[2])
        for g in expected.get(where, ()):
            want.set(g, True)
        if chunk.bits != want.bits:
            add(Finding("summary-mismatch", f"claimed-block summary IPv{where[0]} /{where[1]} chunk {where[2]:#x} "
                        f"records {chunk.count()} blocks, {want.count()} exist"))


__all__ = ["Allocation", "BlockUsage", "CheckReport", "Finding", "PoolUsage"]
