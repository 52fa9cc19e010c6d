"""The IPAM service: the one entry point for assigning and releasing addresses.

``IpamService(store, clock=time.time, topology=None)``. Every operation reads
what it needs, decides with ``core`` and writes by compare-and-swap through
``retry.run_cas``; ``ConflictError`` never escapes. A request that fails
releases what it had assigned, and gives back the blocks it claimed, before
reporting (dual stack included), so a rejected or failed request leaves the
datastore as it found it.

Between calls the service keeps what it read (``topology.FencedSnapshot`` on
the default topology, ``cache.ServiceCache`` for blocks and affinities); kept
values are only ever the starting point of a compare-and-swap whose commit
also fences them, so keeping them never changes a decision that lands.
"""

from __future__ import annotations

import ipaddress
import time
from topoipam.structs import dataclass, field
from collections.abc import Callable, Mapping, Sequence

from topoipam.core.affinity import Holder, affinity_label, holder_for, host_holder
from topoipam.core.block import Block, L2Segment
from topoipam.errors import (AllocationError, BlockLimitError, ExhaustedError, NoQualifiedPoolError, NotInPoolError,
                             TopoipamError, UnusableAddressError, ValidationError)
from topoipam.ipam import keys, release
from topoipam.ipam.blocks import (affinity_hint_op, affinity_value, block_net_of, chunk_bit_op, entry_attrs, handle_ops,
                                  load_block, pool_check, pool_key, pool_now)
from topoipam.ipam.cache import ServiceCache
from topoipam.store.retry import Plan, rerun, run_cas
from topoipam.ipam.topology import FencedSnapshot, Snapshot, StoreTopology, Topology, TopologyMoved
from topoipam.model import USE_WORKLOAD
from topoipam.store.base import Create, Store, Update

# The assignment engine (``assign``, ``kept``, ``core.pools`` and through them the selector and
# the resource types) is imported by the methods that assign: a CNI DEL, exec'd once per pod,
# releases without loading it (tests/test_cni_lean.py).

MIN_RELEASE_MEMORY = 60.0  # seconds: cooldowns up to this are honoured even by a process that read no config


@dataclass
class AssignRequest:
    node: str
    handle: str | None = None
    num4: int = 1
    num6: int = 0
    pools4: Sequence[str] = ()  # names or CIDRs; bypass node/namespace selectors and assignment mode
    pools6: Sequence[str] = ()
    namespace: str | None = None
    namespace_labels: Mapping[str, str] | None = None
    attrs: Mapping[str, str] = field(default_factory=dict)
    use: str = USE_WORKLOAD
    max_blocks_per_host: int = 0
    allow_partial: bool = False  # True: return a shortfall with messages instead of undoing and raising
    unusable: L2Segment | None = None  # ordinals this request may not be given (core.block.L2Segment)
    # None: add to the handle if it exists, as Calico does. Handles (possibly none): the handle must be
    # new and none of these may exist, else HandleInUseError before anything is written (kept.HandleState).
    exclusive: Sequence[str] | None = None


@dataclass
class AssignResult:
    ipv4: list = field(default_factory=list)  # ipaddress.IPv4Interface with the block prefix
    ipv6: list = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


def clean_handle(handle: str | None) -> str | None:
    """Calico cuts handles at the first carriage return; an empty handle is rejected."""
    if handle is None:
        return None
    handle = str(handle).split("\r", 1)[0]
    if not handle or "\n" in handle:
        raise ValidationError(f"invalid handle {handle!r}: it must be a non-empty single line")
    return handle


def shortfall_message(version: int, got: int, wanted: int, messages: Sequence[str]) -> str:
    """Calico's PartialFulfillmentError text."""
    return "; ".join([f"Assigned {got} out of {wanted} requested IPv{version} addresses", *messages])


def _check_strict(block: Block, holder: Holder) -> None:
    if block.affinity is None:
        raise AllocationError(f"Attempt to assign from block {block.cidr} with no affinity")
    if block.affinity != holder.affinity:
        raise AllocationError(f"Block host affinity does not match: block {block.cidr} is affine to "
                              f"{block.affinity}, not {holder.affinity} (strict affinity is enabled)")


def node_holder(node, pool) -> Holder:
    """``holder_for`` for a registered ``node``, or NoQualifiedPoolError naming the missing label."""
    holder = holder_for(node.name, node.labels, pool)
    if holder is None:
        label = affinity_label(pool)
        raise NoQualifiedPoolError(f"pool {pool.name} ({pool.spec.cidr}): blocks are affine to a {label} domain "
                                   f"and node {node.name} has no label {label}")
    return holder


class IpamService:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time, topology: Topology | None = None):
        self.store = store
        self.clock = clock
        self.fenced = topology is None  # the topology is ours to keep (fenced); else the caller's values
        self.topology = topology or StoreTopology(store)
        self.cache = ServiceCache()
        self._snap: Snapshot | None = None

    # -- used by the modules of this package ------------------------------------
    def snapshot(self) -> Snapshot:
        """A view read afresh for one call (releases, listings, checks)."""
        return Snapshot(self.topology)

    def assign_snapshot(self, node: str | None = None) -> Snapshot:
        """The view assignments decide on: on the default topology the kept ``FencedSnapshot`` (read
        again, with ``node`` in its first read, once a fenced commit found it stale), else the
        caller's topology read for this call."""
        if not self.fenced:
            return Snapshot(self.topology)
        snap = self._snap
        if snap is None or not snap.valid:
            snap = self._snap = FencedSnapshot(self.store, node)
            self.cache.clear_affinities()  # let the next assignment list them (and drop unselected ones)
        return snap

    def forget_topology(self) -> None:
        """Drop the kept topology: the next assignment reads it afresh (a watcher that saw a pool or
        the node change saves the refused commit that would find out). Correctness does not rest
        on it: every assignment commit is fenced either way. A call in flight keeps its snapshot."""
        self._snap = None

    def claim_time(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock()))

    def release_memory(self) -> float:
        """How long a block keeps release times (for the cooldown): at least ``MIN_RELEASE_MEMORY``,
        and at least the cooldown of the kept topology (a release reads no configuration)."""
        if self.fenced:
            snap = self._snap
        else:  # the caller's values: no I/O, unless they are the store's (a release reads no config)
            snap = None if isinstance(self.topology, StoreTopology) else Snapshot(self.topology)
        return max(MIN_RELEASE_MEMORY, snap.cooldown if snap is not None else 0.0)

    def initial_sequence(self) -> int:
        return int(self.clock() * 1e9)  # Calico: time.Now().UnixNano() for a new block

    # -- assignment ---------------------------------------------------------------
    def auto_assign(self, req: AssignRequest) -> AssignResult:
        from topoipam.ipam.assign import FamilyAssigner
        from topoipam.ipam.kept import HandleState, KeptPlanStale, assign_kept

        req.handle = clean_handle(req.handle)
        if req.num4 < 0 or req.num6 < 0:
            raise ValidationError("the number of addresses to assign must not be negative")
        snap = self.assign_snapshot(req.node)
        node = snap.require_node(req.node)
        result, hstate = AssignResult(), HandleState(req.handle, req.attrs, req.exclusive)
        if req.num4 > 0 and req.num6 > 0:  # a family no pool serves refuses the request before any write
            snap, node = self._both_families_served(snap, node, req, hstate)
        started, kept_ips = [], []  # the families run by FamilyAssigner; addresses landed by assign_kept
        try:
            for version, num, pools in ((4, req.num4, req.pools4), (6, req.num6, req.pools6)):
                if num <= 0:
                    continue
                got = result.ipv4 if version == 4 else result.ipv6
                try:
                    kept, raced = assign_kept(self, snap, req, version, num, tuple(pools), hstate), False
                except KeptPlanStale:
                    kept, raced = None, True
                if kept is not None:
                    kept_ips += kept
                    got += kept
                    continue
                family = FamilyAssigner(self, snap, req, node, version, num, pools, hstate, raced)
                started.append(family)
                family.run()
                snap, node = family.snap, family.node  # a family may have read the topology again
                got += family.ips
                if family.need > 0:
                    text = shortfall_message(version, len(family.ips), num, family.messages)
                    if not req.allow_partial:
                        raise (BlockLimitError if family.block_limit_hit else ExhaustedError)(text)
                    result.messages.append(text)
        except TopoipamError:
            self._undo(req.handle, [*kept_ips, *(ip for f in started for ip in f.ips)],
                       {net: rev for f in started for net, rev in f.claimed.items()})
            raise
        return result

    def _both_families_served(self, snap, node, req: AssignRequest, hstate):
        """Raise NoQualifiedPoolError, before anything is written, if no pool serves one of the
        families; a refusal decided on the kept topology is decided again on a fresh read (a pool
        created since would otherwise only show when the first family's fenced commit failed)."""
        from topoipam.ipam.assign import FamilyAssigner

        def check(snap, node):
            for version, pools in ((4, req.pools4), (6, req.pools6)):
                FamilyAssigner(self, snap, req, node, version, 1, pools, hstate).choose()

        try:
            check(snap, node)
        except NoQualifiedPoolError:
            if not self.fenced:
                raise
            self.forget_topology()
            snap = self.assign_snapshot(req.node)
            node = snap.require_node(req.node)
            check(snap, node)
        return snap, node

    def _undo(self, handle, interfaces, claimed) -> None:
        """Give back what a failed request had taken: the blocks it claimed (if nobody used them since)
        and the addresses. Best effort: if the datastore fails now too, the original error is reported
        and the addresses stay under the request's handle, so that the caller's release by handle
        (CNI DEL) or ``ipam check`` finds them."""
        try:
            gone = release.unclaim_blocks(self, claimed, handle) if claimed else set()
            left = [i.ip for i in interfaces if i.network not in gone]
            if left:
                release.release_ips(self, left, handle=handle)
        except TopoipamError:
            pass

    def assign_ip(self, ip, handle: str | None, attrs: Mapping[str, str] | None, node: str,
                  unusable: L2Segment | None = None):
        """Assign one given address (Calico's AssignIP): claims its block for ``node`` if it has none.
        Ignores node selectors, allowed uses and reservations, as Calico does, but not ``unusable``
        (the request's segment rule: such an address is refused). Decided on the assignment
        snapshot: every commit carries its fences, a claim also the pool's Check."""
        handle = clean_handle(handle)
        addr = release.parse_ip(ip)
        # A fence that moved invalidates the snapshot: decide again on a new one.
        return rerun(lambda: self._assign_ip(self.assign_snapshot(node), addr, handle, attrs, node, unusable),
                     moved=TopologyMoved, what=lambda: f"assign {addr} on node {node}")

    def _assign_ip(self, snap: Snapshot, addr, handle: str | None, attrs, node: str, unusable=None):
        from topoipam.core.pools import pool_containing

        registered = snap.require_node(node)
        pool = pool_containing(snap.enabled_pools, addr)
        if pool is None:
            raise NotInPoolError(f"The provided IP address {addr} is not in a configured pool")
        holder = node_holder(registered, pool)
        net = block_net_of(addr, pool.spec.block_size)
        if unusable is not None and int(addr) - int(net.network_address) in unusable.unusable(net):
            raise UnusableAddressError(f"The provided IP address {addr} is the network, broadcast or gateway "
                                       f"address of block {net} on this L2 segment")
        bkey, akey = keys.block_key(net), keys.holder_key(holder, net)
        hkeys = [keys.handle_key(handle)] if handle else []
        strict = snap.config.strict_affinity

        def attempt(n):
            nonlocal pool
            pkey = pool_key(pool)
            recs = self.store.get_many([bkey, akey, *hkeys, *((*snap.fence_keys(node), pkey) if n else ())])
            if n:  # a lost race: the topology or the pool may have moved since they were read
                if not snap.holds(recs, node):
                    raise TopologyMoved()
                pool = pool_now(pool, recs.get(pkey))
                if pool is None:
                    raise NotInPoolError(f"The provided IP address {addr} is not in a configured pool")
            stored = load_block(recs.get(bkey))
            block = stored.block if stored else Block.new(net, holder.affinity, self.claim_time(),
                                                          self.initial_sequence())
            if stored is not None and strict:
                _check_strict(block, holder)
            ordinal = block.ordinal(addr)
            block.assign(ordinal, handle, entry_attrs(handle, recs.get(hkeys[0]) if hkeys else None, attrs))
            arec = recs.get(akey)
            if stored is None:  # claim the block for the node in the same commit (its affinity may exist)
                ops = [Create(bkey, block.to_json()), chunk_bit_op(self.store, net, True), *pool_check(pool)]
                ops.insert(0, Create(akey, affinity_value(block)) if arec is None else affinity_hint_op(arec, block))
            else:
                block.sequence_number += 1
                ops = [Update(bkey, block.to_json(), stored.revision),
                       affinity_hint_op(arec, block) if block.affinity == holder.affinity else None]
            ops = [op for op in ops if op is not None]
            if handle:
                ops += handle_ops(recs, {handle: {str(net): 1}}, attrs)
            ops += snap.fence_ops(node)
            return Plan(ops, block.interface(ordinal), lambda rev: self.cache.committed(ops, rev, {bkey: block}),
                        lambda: self.cache.forget(ops))

        return run_cas(self.store, attempt, f"assign {addr}")

    # -- release and affinities (see ipam/release.py) -----------------------------
    def release_ips(self, ips, handle: str | None = None, seq: int | None = None) -> list:
        return release.release_ips(self, ips, clean_handle(handle), seq)

    def release_by_handle(self, handle: str) -> list:
        return release.release_by_handle(self, clean_handle(handle))

    def ips_by_handle(self, handle: str) -> list:
        return release.ips_by_handle(self, clean_handle(handle))

    def holdings(self, handles) -> dict:
        """handle -> ([interfaces held], attributes) for each existing one of ``handles`` (two reads)."""
        return release.holdings(self, [clean_handle(h) for h in handles])

    def claim_affinity(self, cidr: str, node: str):
        return release.claim_affinity(self, cidr, node)

    def release_affinity(self, cidr, node: str, must_be_empty: bool = False) -> list:
        from topoipam.core.pools import pool_containing

        nets = ipaddress.ip_network(cidr, strict=False)
        snap = self.snapshot()
        pool = pool_containing(snap.pools, nets)
        size = pool.spec.block_size if pool else nets.prefixlen
        subnets = nets.subnets(new_prefix=size) if nets.prefixlen < size else [nets]
        registered = snap.node(node)
        holder = holder_for(node, registered.labels, pool) if registered is not None and pool else None
        holder = holder or host_holder(node)
        return [n for n in subnets if release.release_affinity(self, n, holder, must_be_empty)]

    def release_host_affinities(self, node: str, must_be_empty: bool = False) -> list:
        return release.release_host_affinities(self, node, must_be_empty)

    def release_pool_affinities(self, pool) -> list:
        return release.release_pool_affinities(self, pool)

    def release_orphan_domains(self, leaving: str | None = None) -> list:
        """Empty blocks of domains no registered node (but ``leaving``) carries any more, released (core.affinity)."""
        return release.release_orphan_domains(self, leaving)

    # -- reporting (see ipam/check.py) ------------------------------------------
    def allocations(self, prefix_handle: str | None = None):
        from topoipam.ipam.check import allocations
        return allocations(self.store, prefix_handle)

    def allocation_of(self, ip):
        """The ``Allocation`` of one address, or None if it is not allocated."""
        from topoipam.ipam.check import allocation_of
        return allocation_of(self.store, release.parse_ip(ip))

    def block_usage(self):
        from topoipam.ipam.check import block_usage
        return block_usage(self.store, self.snapshot())

    def pool_usage(self, blocks=None):
        """``blocks``: a ``block_usage()`` answer to sum up instead of reading the blocks again."""
        from topoipam.ipam.check import pool_usage
        return pool_usage(self.store, self.snapshot(), blocks)

    def check(self):
        from topoipam.ipam.check import check
        return check(self.store, self.snapshot())
