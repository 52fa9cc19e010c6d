"""Read-only analyses of pools against the topology: coverage, explain, headroom, drift.

What no peer answers before a pod is stuck in ContainerCreating (DESIGN.md, last
section, items 1-4). Everything here reads (whole key ranges: pools, nodes,
blocks) and writes nothing; it is for operators and CI gates, never on the
assignment path. Pool choice is ``core.pools.choose_pools`` itself (through
``core.pools.rank_pools``); the next block of ``explain`` comes from the
allocator's own reads (``blocks.find_unclaimed_block``, ``scan_pool_blocks``) and
its rules (``assign.block_limit``, ``EMPTY_BLOCK_MIN_RECLAIM_AGE``), so the answers
are the allocator's. What is not modelled: requests that name pools (they bypass
selectors) and races with assignments running meanwhile (the answer is a snapshot).
"""

from __future__ import annotations

from collections.abc import Mapping

from topoipam.core import insights as core
from topoipam.core.affinity import holder_for, holder_of, host_holder
from topoipam.core.block import reserved_ordinals
from topoipam.core.pools import pool_containing, rank_pools
from topoipam.errors import NotFoundError
from topoipam.ipam.assign import EMPTY_BLOCK_MIN_RECLAIM_AGE, block_limit
from topoipam.ipam.blocks import find_unclaimed_block, reserved_in, scan_pool_blocks
from topoipam.ipam.check import iter_blocks
from topoipam.ipam.leaks import handle_records
from topoipam.ipam.topology import Snapshot, StoreTopology
from topoipam.model.types import ASSIGN_AUTOMATIC, USE_WORKLOAD
from topoipam.resources import repo
from topoipam.store.decoded import Decoded
from topoipam.structs import dataclass, field

NO_DOMAIN = "<none>"  # the domain of nodes without the label


def _ticker(progress, total: int):
    """A no-argument callable counting one more item done towards ``total`` for ``progress(done, total)``."""
    if progress is None:
        return lambda: None
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        progress(done, total)
    return tick


class World:
    """Pools, nodes, IPAM config, reservations and every block, read once. ``decoded``: a
    ``store.decoded.Decoded`` shared with an earlier World of the same store (a dry run's before):
    the nodes, blocks and handles that did not change since are not decoded again."""

    def __init__(self, store, now: float | None, decoded: Decoded | None = None) -> None:
        self.store, self.now, self._decoded = store, now, decoded
        snap = Snapshot(StoreTopology(store))
        self.pools = snap.pools  # name order
        self.config = snap.config
        self.reserved = snap.reserved
        self.nodes = sorted(repo.list_nodes(store, decoded), key=lambda n: n.name)
        self.blocks = [s.block for s in iter_blocks(store, decoded=decoded)]
        # Indexes so that a question per node costs no scan of every block (10,000 nodes x blocks).
        self.pool_blocks: dict[str, list] = {p.name: [] for p in self.pools}
        # holder (core.affinity: a node, or a domain such as rack=0) -> its blocks (any pool, both families)
        self.holder_blocks: dict[object, list] = {}
        self.pool_free: dict[str, int] = {p.name: 0 for p in self.pools}  # free in claimed blocks
        self.affine: dict[tuple, list[int]] = {}  # (pool, holder) -> [affine blocks, their free]
        self.reclaim: dict[tuple, int] = {}  # (pool, holder or None: all) -> free in them
        self._free: dict[object, int] = {}
        self.pool_of: dict[object, object] = {}  # block network -> the pool it lies in (None: in none wholly)
        for b in self.blocks:
            node = holder_of(b.affinity)  # the block's holder
            if node is not None:
                self.holder_blocks.setdefault(node, []).append(b)
            pool = self.pool_of[b.cidr] = pool_containing(self.pools, b.cidr)
            if pool is None:
                continue
            self.pool_blocks[pool.name].append(b)
            free = self.free(b)
            self.pool_free[pool.name] += free
            if node is not None:
                entry = self.affine.setdefault((pool.name, node), [0, 0])
                entry[0] += 1
                entry[1] += free
            if self.reclaimable(b):
                for key in ((pool.name, None), (pool.name, node)):
                    self.reclaim[key] = self.reclaim.get(key, 0) + free
        self._unclaimed: dict[str, core.Unclaimed] = {}
        self._chosen: dict[tuple, list] = {}
        self.namespaced = any(p.spec.namespace_selector for p in self.pools)
        self._on_handle: dict | None = None
        self._attrs: dict[tuple[int, int], dict] = {}
        self._times: dict | None = None  # _allocation_times, once per world

    def held(self):
        """(block, ordinal) of every allocated address."""
        for b in self.blocks:
            for o in b.allocated_ordinals():
                yield b, o

    def attrs_of(self, b, o) -> dict:
        """The allocation's attributes (read only: shared between questions). The handles are read on
        first use (only some questions need them); each allocation's answer is kept, since a metrics
        scrape asks for every allocation's three times (forecast, drift, per-node counts)."""
        key = (id(b), o)  # blocks live as long as the world: their ids are not reused meanwhile
        attrs = self._attrs.get(key)
        if attrs is None:
            if self._on_handle is None:
                self._on_handle = {h.handle: h.attrs for h in handle_records(self.store, decoded=self._decoded)}
            attrs = self._attrs[key] = b.attrs_of(o, self._on_handle)
        return attrs

    def families(self, requested: int | None) -> list[int]:
        if requested:
            return [requested]
        return sorted({p.version for p in self.pools})

    def free(self, block) -> int:
        """Free addresses auto-assign may hand out from ``block`` (reservations excluded)."""
        free = self._free.get(block.cidr)
        if free is None:
            free = self._free[block.cidr] = block.free_count(reserved_in(block, self.reserved))
        return free

    def reclaimable(self, block) -> bool:
        """Empty and claimed over a minute ago: the allocator takes it over for another node."""
        if self.now is None or not block.is_empty():
            return False
        claimed = core.parse_go_timestamp(block.claim_time or "")
        return claimed is None or self.now - claimed >= EMPTY_BLOCK_MIN_RECLAIM_AGE

    def unclaimed(self, pool) -> core.Unclaimed:
        if pool.name not in self._unclaimed:
            self._unclaimed[pool.name] = core.unclaimed(pool.network, pool.spec.block_size,
                                                        [b.cidr for b in self.pool_blocks[pool.name]], self.reserved)
        return self._unclaimed[pool.name]

    def choice(self, node: str, labels: Mapping[str, str], version: int,
               namespace_labels: Mapping[str, str] | None = None) -> core.PoolChoice:
        return rank_pools(self.pools, version, node, labels, namespace_labels=namespace_labels,
                                 use=USE_WORKLOAD)

    def chosen(self, node: str, labels: Mapping[str, str], version: int) -> list:
        """The pools auto-assign tries for ``labels`` (any namespace without labels), memoised by label
        set: nodes of one rack share it, and the reasons' text (naming a node) is not needed."""
        key = (version, tuple(sorted(labels.items())))
        if key not in self._chosen:
            self._chosen[key] = self.choice(node, labels, version).chosen
        return self._chosen[key]

    def rules(self, node: str, labels: Mapping[str, str], chosen) -> core.ClaimRules:
        """The claim rules for the holder of the first chosen pool (the node, or its domain: the block
        limit counts per holder, as the allocator does)."""
        first = holder_for(node, labels, chosen[0]) if chosen else None
        owned = sum(self.affine.get((p.name, first), (0, 0))[0] for p in chosen
                    if holder_for(node, labels, p) == first)
        limit = block_limit(0, self.config.max_blocks_per_host, first is not None and first.is_domain)
        return core.ClaimRules(owned, limit,
                               self.config.auto_allocate_blocks, self.config.strict_affinity)

    def rooms(self, node: str, labels: Mapping[str, str], chosen) -> list[core.Room]:
        """What ``node`` can still get from each chosen pool, in the chosen order."""
        rules = self.rules(node, labels, chosen)
        out = []
        for p in chosen:
            holder = holder_for(node, labels, p)
            mine = self.affine.get((p.name, holder), (0, 0))[1]
            reclaim = self.reclaim.get((p.name, None), 0) - self.reclaim.get((p.name, holder), 0)
            out.append(core.room(p.name, mine, self.unclaimed(p).addresses, reclaim, self.pool_free[p.name] - mine,
                                 rules))
        return out


# ------------------------------------------------------------------ coverage


@dataclass
class NodeCoverage:
    node: str
    version: int
    covered: bool
    pools: list[str]  # chosen pools with room, in the order auto-assign tries them
    reason: str
    namespace_only: list[str] = field(default_factory=list)  # select the node for some namespaces only
    free: int = 0  # addresses the node can still get from the pools with room


@dataclass
class Overlap:
    first: str  # name order: new blocks come from this one first
    second: str
    nodes: list[str]


@dataclass
class CoverageReport:
    families: list[int]
    nodes: list[NodeCoverage]
    unused_pools: list[str]
    overlaps: list[Overlap]

    @property
    def uncovered(self) -> list[NodeCoverage]:
        return [n for n in self.nodes if not n.covered]

    @property
    def ok(self) -> bool:
        return not self.uncovered


def coverage(store, now: float, family: int | None = None, progress=None,
             world: World | None = None) -> CoverageReport:
    """Per node and family: covered or not, and why (``now`` dates the blocks the allocator would reclaim).
    ``progress(done, total)``, if given, is called per node and family (as are ``headroom``'s and ``drift``'s).
    ``world``: one already read (a dry run, a metrics scrape ask several questions of one read; also for
    ``headroom`` and ``drift``)."""
    world = world or World(store, now)
    families = world.families(family)
    report = CoverageReport(families, [], [], [])
    tick = _ticker(progress, len(families) * len(world.nodes))
    for version in families:
        for node in world.nodes:
            report.nodes.append(_node_coverage(world, node, version))
            tick()
        by_labels: dict[tuple, list[str]] = {}  # selectors evaluated once per distinct label set
        for n in world.nodes:
            by_labels.setdefault(tuple(sorted(n.labels.items())), []).append(n.name)
        selected = {p.name: sorted(name for key, names in by_labels.items() if core.node_selected(p, dict(key))
                                   for name in names)
                    for p in world.pools if p.version == version and not p.spec.disabled
                    and p.spec.assignment_mode == ASSIGN_AUTOMATIC}
        report.unused_pools += [name for name, nodes in selected.items() if not nodes]
        report.overlaps += [Overlap(a, b, nodes) for a, b, nodes in core.overlaps(selected)]
    return report


def _node_coverage(world: World, node, version: int) -> NodeCoverage:
    chosen = world.chosen(node.name, node.labels, version)
    limited = [p.name for p in world.pools if p.version == version and p.spec.namespace_selector
               and p not in chosen and core.node_selected(p, node.labels)] if world.namespaced else []
    if not chosen:
        choice = world.choice(node.name, node.labels, version)  # again, for reasons naming this node
        if not choice.rejected:
            reason = f"there is no IPv{version} pool"
        else:
            reason = f"no pool selects it: {choice.reasons()}"
        return NodeCoverage(node.name, version, False, [], reason, limited)
    rooms = world.rooms(node.name, node.labels, chosen)
    with_room = [r for r in rooms if r.total > 0]
    if not with_room:
        full = "; ".join(f"{r.pool} is full ({r.describe()})" for r in rooms)
        return NodeCoverage(node.name, version, False, [], f"no room: {full}", limited)
    reason = "; ".join(f"{r.pool}: {r.describe()}" for r in with_room)
    return NodeCoverage(node.name, version, True, [r.pool for r in with_room], reason, limited,
                        sum(r.total for r in with_room))


# ------------------------------------------------------------------ explain


@dataclass
class NextBlock:
    kind: str  # "affine", "claim", "reclaim", "borrow" or "none"
    detail: str
    block: str | None = None
    pool: str | None = None
    free: int | None = None


@dataclass
class Explanation:
    node: str
    labels: dict
    registered: bool
    version: int
    namespace: str | None
    tried: list[core.Room]  # chosen pools in the order auto-assign tries them
    rejected: list[tuple[str, str, str]]  # (pool, cidr, reason)
    namespace_only: list[str]
    next_block: NextBlock


HYPOTHETICAL = "new-node"  # the name a --labels-only question is answered for


def explain(store, now: float, node: str | None = None, labels: Mapping[str, str] | None = None,
            namespace: str | None = None, namespace_labels: Mapping[str, str] | None = None,
            family: int | None = None) -> list[Explanation]:
    """For a node (its labels, or ``labels`` instead) per family: the pools in auto-assign's order,
    the reason for every other pool, and where the next address would come from."""
    world = World(store, now)
    found = next((n for n in world.nodes if n.name == node), None) if node else None
    if node and found is None and labels is None:
        raise NotFoundError(f"node {node} is not registered; give --labels to ask about a node not created yet")
    name = node or HYPOTHETICAL
    node_labels = dict(labels) if labels is not None else dict(found.labels)
    out = []
    for version in world.families(family):
        choice = world.choice(name, node_labels, version, namespace_labels)
        rooms = world.rooms(name, node_labels, choice.chosen) if choice.chosen else []
        rejected = [(r.pool.name, r.pool.spec.cidr, r.reason) for r in choice.rejected]
        rejected += [(r.pool, next(p.spec.cidr for p in choice.chosen if p.name == r.pool),
                      f"full: {r.describe()}") for r in rooms if r.total == 0]
        out.append(Explanation(name, node_labels, found is not None, version, namespace, rooms, rejected,
                               [r.pool.name for r in core.namespace_limited(choice, node_labels)],
                               _next_block(world, name, node_labels, choice.chosen, version)))
    return out


def _next_block(world: World, node: str, labels: Mapping[str, str], chosen, version: int) -> NextBlock:
    """The allocator's order (ipam/assign.py): the holder's affine blocks of the chosen pools in address
    order (the holder: the node, or its domain such as rack=0, see core.affinity), then the first
    unclaimed block in the holder's order of the first pool that has one, then an empty block another
    holder has held for over a minute (taken over), then (strict affinity off) borrowing in the
    holder's order. Claims and take-overs stop at the per-holder block limit."""
    if not chosen:
        return NextBlock("none", f"no IPv{version} pool is used for this node: an assignment fails with "
                                 f"'no configured Calico pools for node {node}'")
    holders = {p.name: holder_for(node, labels, p) for p in chosen}
    affine = sorted((b for h in dict.fromkeys(holders.values()) for b in world.holder_blocks.get(h, ())
                     if b.cidr.version == version and _pool_of(chosen, b.cidr, holders, h)),
                    key=lambda b: int(b.cidr.network_address))
    for b in affine:
        free = world.free(b)
        if free:
            pool = pool_containing(chosen, b.cidr)
            return NextBlock("affine", f"block {b.cidr} of {pool.name}, affine to {holders[pool.name].display}, "
                                       f"with {free} free", str(b.cidr), pool.name, free)
    rules = world.rules(node, labels, chosen)
    if rules.may_claim:
        for pool in chosen:
            who = holders[pool.name].display
            found = find_unclaimed_block(world.store, pool, who, world.reserved)
            if found:
                net = found[0]
                return NextBlock("claim", f"new block {net} of {pool.name} (the first unclaimed block in "
                                          f"{who}'s order), claimed for {who}", str(net), pool.name,
                                 net.num_addresses - len(reserved_ordinals(net, world.reserved)))
    if rules.may_claim:
        for pool in chosen:
            holder = holders[pool.name]
            for stored in scan_pool_blocks(world.store, pool, holder.display):
                b = stored.block
                if b.affinity != holder.affinity and world.reclaimable(b):
                    return NextBlock("reclaim", f"empty block {b.cidr} of {pool.name}, held by "
                                                f"{_owner(b)} since {b.claim_time}, "
                                                f"taken over for {holder.display}", str(b.cidr), pool.name,
                                     world.free(b))
    if rules.may_borrow:
        for pool in chosen:
            for stored in scan_pool_blocks(world.store, pool, holders[pool.name].display):
                free = world.free(stored.block)
                if free:
                    return NextBlock("borrow", f"borrowed from block {stored.block.cidr} of {pool.name} "
                                               f"(affine to {_owner(stored.block)}), {free} free",
                                     str(stored.block.cidr), pool.name, free)
    why = "; ".join(rules.notes()) or ("strict affinity is on, so nothing is borrowed" if rules.strict
                                      else "every block of the pools is full")
    whose = "/".join(dict.fromkeys(h.display for h in holders.values()))
    return NextBlock("none", f"no block: no free address in {whose}'s affine blocks, no unclaimed block "
                             f"usable ({why}); an assignment fails")


def _pool_of(chosen, net, holders: dict, holder) -> bool:
    """Whether ``net`` lies in a chosen pool whose blocks are ``holder``'s for this node."""
    pool = pool_containing(chosen, net)
    return pool is not None and holders[pool.name] == holder


def _owner(block) -> str:
    holder = holder_of(block.affinity)
    return holder.display if holder is not None else "no node"


# ------------------------------------------------------------------ headroom


@dataclass
class DomainHeadroom:
    """One domain's space, or (``shared_by`` set) the part of one pool that several domains draw on.
    No address is counted in two rows: a domain counts the whole of the pools only it uses, and of a
    pool it shares only the blocks affine to its own nodes; the rest of a shared pool (its unclaimed
    blocks, and blocks affine to no node of those domains) is the row ``<shared:POOL>``."""
    domain: str
    version: int
    nodes: list[str]
    pools: list[str]
    total: int
    in_use: int
    free: int  # assignable now: free in claimed blocks + in unclaimed blocks (reservations excluded)
    blocks_claimed: int
    blocks_unclaimed: int
    fit: int  # more single-address workloads the domain's nodes can get from the space of this row
    rate_per_day: float | None = None
    days_left: float | None = None
    shared_by: list[str] = field(default_factory=list)  # a shared row: the domains that draw on it


@dataclass
class NodeHeadroom:
    node: str
    domain: str
    version: int
    blocks: int  # affine blocks
    in_use: int  # in those blocks
    free: int


@dataclass
class PoolHeadroom:
    pool: str
    version: int
    cidr: str
    domains: list[str]
    total: int
    in_use: int
    free: int
    blocks_claimed: int
    blocks_unclaimed: int


@dataclass
class HeadroomReport:
    label: str
    domains: list[DomainHeadroom]
    nodes: list[NodeHeadroom]
    pools: list[PoolHeadroom]


def shared_row_name(pool: str) -> str:
    """The domain text of a shared pool's row; ``<`` is no label character, so it names no real domain."""
    return f"<shared:{pool}>"


def headroom(store, label: str, now: float, family: int | None = None, progress=None,
             world: World | None = None) -> HeadroomReport:
    world = world or World(store, now)
    report = HeadroomReport(label, [], [], [])
    domains: dict[str, list] = {}
    for n in world.nodes:
        domains.setdefault(n.labels.get(label, NO_DOMAIN), []).append(n)
    times = _allocation_times(world)
    node_domain = {n.name: value for value, nodes in domains.items() for n in nodes}
    families = world.families(family)
    tick = _ticker(progress, len(families) * len(domains))
    for version in families:
        chosen = {value: _domain_pools(world, domains[value], version) for value in sorted(domains)}
        pool_domains: dict[str, list] = {}
        for value, pools in chosen.items():
            for p in pools:
                pool_domains.setdefault(p.name, []).append(value)
        shared = _split_shared(world, pool_domains, node_domain, label)
        for value, pools in chosen.items():
            nodes = domains[value]
            report.domains.append(_domain(world, value, version, nodes, pools, shared, times))
            tick()
            for n in nodes:
                mine = [b for b in world.holder_blocks.get(host_holder(n.name), ()) if b.cidr.version == version]
                report.nodes.append(NodeHeadroom(n.name, value, version, len(mine), sum(b.in_use for b in mine),
                                                 sum(world.free(b) for b in mine)))
        for p in world.pools:
            if p.name in shared and p.version == version:
                users = pool_domains[p.name]
                report.domains.append(_shared(world, p, users, [n for u in users for n in domains[u]],
                                              shared[p.name], times))
            if p.version == version:
                blocks, un = world.pool_blocks[p.name], world.unclaimed(p)
                report.pools.append(PoolHeadroom(p.name, version, p.spec.cidr, pool_domains.get(p.name, []),
                                                 p.network.num_addresses, sum(b.in_use for b in blocks),
                                                 sum(world.free(b) for b in blocks) + un.addresses, len(blocks),
                                                 un.blocks))
    return report


def _domain_pools(world: World, nodes, version: int) -> list:
    names = set()
    for n in nodes:
        names.update(p.name for p in world.chosen(n.name, n.labels, version))
    return [p for p in world.pools if p.name in names]


def _space(world: World, row: DomainHeadroom, blocks, unclaimed, usable, times) -> DomainHeadroom:
    """Fill ``row`` from its claimed ``blocks`` (``usable``: those its nodes may assign from) and the
    pools whose unclaimed space it holds; the forecast from the allocation times in those blocks."""
    row.in_use = sum(b.in_use for b in blocks)
    row.free = sum(world.free(b) for b in blocks) + sum(u.addresses for u in unclaimed)
    row.blocks_claimed, row.blocks_unclaimed = len(blocks), sum(u.blocks for u in unclaimed)
    row.fit = sum(world.free(b) for b in blocks if usable(b))
    row.fit += sum(u.addresses for u in unclaimed) if world.config.auto_allocate_blocks else 0
    fc = core.forecast([t for b in blocks for t in times.get(b.cidr, ())], row.fit, world.now)
    if fc is not None:
        row.rate_per_day, row.days_left = fc.rate_per_day, fc.days_left
    return row


def _split_shared(world: World, pool_domains: dict[str, list], node_domain: dict[str, str],
                  label: str) -> dict[str, dict]:
    """Pools used by several domains -> {domain holding the block (its affine node's, or the value of
    its affinity domain of ``label``), or None: [blocks]}."""
    out: dict[str, dict] = {}
    for name, users in pool_domains.items():
        if len(users) < 2:
            continue
        parts: dict = {}
        for b in world.pool_blocks[name]:
            holder = _holding_domain(b, label, node_domain)
            parts.setdefault(holder if holder in users else None, []).append(b)
        out[name] = parts
    return out


def _domain(world: World, value: str, version: int, nodes, pools, shared, times) -> DomainHeadroom:
    names = {n.name for n in nodes}
    own = [p for p in pools if p.name not in shared]
    blocks = [b for p in own for b in world.pool_blocks[p.name]]
    mine_in_shared = [b for p in pools if p.name in shared for b in shared[p.name].get(value, ())]
    total = sum(p.network.num_addresses for p in own) + sum(b.cidr.num_addresses for b in mine_in_shared)
    row = DomainHeadroom(value, version, sorted(names), [p.name for p in pools], total, 0, 0, 0, 0, 0)
    strict = world.config.strict_affinity
    return _space(world, row, blocks + mine_in_shared, [world.unclaimed(p) for p in own],
                  lambda b: not strict or _held_by(b, nodes), times)


def _shared(world: World, pool, users: list[str], nodes, parts: dict, times) -> DomainHeadroom:
    """What of a shared ``pool`` no single domain holds (``parts[None]``): unclaimed blocks, blocks affine
    to no node of ``users`` (none, or a node that is gone or in another domain). Any of ``users`` may take it."""
    names = {n.name for n in nodes}
    blocks = parts.get(None, [])
    total = pool.network.num_addresses - sum(b.cidr.num_addresses for holder, held in parts.items()
                                             if holder is not None for b in held)
    row = DomainHeadroom(shared_row_name(pool.name), pool.version, sorted(names), [pool.name], total, 0, 0, 0, 0, 0,
                         shared_by=list(users))
    return _space(world, row, blocks, [world.unclaimed(pool)], lambda b: not world.config.strict_affinity, times)


def _held_by(block, nodes) -> bool:
    """Whether ``block`` is affine to one of ``nodes``, or to a domain one of them carries."""
    holder = holder_of(block.affinity)
    return holder is not None and any(holder.carried_by(n.labels, n.name) for n in nodes)


def _holding_domain(block, label: str, node_domain: dict[str, str]) -> str | None:
    """The value of ``label`` whose domain holds ``block``: its affine node's, or its own domain's."""
    holder = holder_of(block.affinity)
    if holder is None:
        return None
    if holder.is_domain:
        return holder.name if holder.label == label else None
    return node_domain.get(holder.node)


def _allocation_times(world: World) -> dict:
    """Block network -> allocation times of the addresses it holds (the ``timestamp`` attribute the CNI
    plugin records, as Calico does); read once per world (a scrape asks once per ``--by`` label)."""
    if world._times is None:
        out: dict = {}
        for b in world.blocks:
            stamps = [core.parse_go_timestamp(world.attrs_of(b, o).get("timestamp", "")) for o in b.allocated_ordinals()]
            times = [t for t in stamps if t is not None]
            if times:
                out[b.cidr] = times
        world._times = out
    return world._times


# ------------------------------------------------------------------ drift


@dataclass
class Drift:
    namespace: str
    workload: str
    handle: str
    node: str
    ip: str
    pool: str | None  # the pool the address lies in now (None: outside every pool)
    now_pools: list[str]  # the pools that select the node now


def drift(store, progress=None, world: World | None = None) -> list[Drift]:
    """Workload addresses (handle, node attribute, no ``type``: not tunnel addresses) outside every
    pool that now selects their node. Addresses of Manual pools (requested by name) and of nodes
    no longer registered (``ipam check``'s node-missing) are left out.

    Decided per block and node where the block lies wholly in or wholly out of the pools selecting
    the node (the usual case: 100,000 addresses are 2,000 blocks), per address otherwise."""
    world = world or World(store, None)
    nodes = {n.name: n for n in world.nodes}
    selecting: dict[tuple, list] = {}  # (version, label set) -> the enabled Automatic pools selecting it
    out = []
    tick = _ticker(progress, sum(b.in_use for b in world.blocks))
    for b in world.blocks:
        whole = world.pool_of[b.cidr]  # None: the block is not wholly in one pool
        if whole is not None and whole.spec.assignment_mode != ASSIGN_AUTOMATIC:
            for _ in range(b.in_use):
                tick()
            continue
        # node -> (block inside (True), outside (False) the pools selecting it, or across (None); those pools)
        placed: dict[str, tuple[bool | None, list]] = {}
        holder = holder_of(b.affinity)  # a domain block is outside for a node that left the domain
        for o in b.allocated_ordinals():
            tick()
            handle = b.handle_of(o)
            if handle is None:
                continue
            attrs = world.attrs_of(b, o)
            name = attrs.get("node")
            if not name or attrs.get("type") or name not in nodes:
                continue
            if name not in placed:
                now = _selecting(selecting, world.pools, nodes[name].labels, b.cidr.version)
                left = holder is not None and holder.is_domain and not holder.carried_by(nodes[name].labels)
                placed[name] = (False if left else _placed(b.cidr, now), now)
            inside, now = placed[name]
            if inside is True:
                continue  # the usual case, decided for the whole block: no address built
            ip = b.address(o)
            pool = whole or pool_containing(world.pools, ip)
            if whole is None and pool is not None and pool.spec.assignment_mode != ASSIGN_AUTOMATIC:
                continue
            if inside is None:
                inside = any(ip in p.network for p in now)
            if not inside:
                out.append(Drift(attrs.get("namespace", ""), attrs.get("pod") or handle, handle, name, str(ip),
                                 pool.name if pool else None, [p.name for p in now]))
    out.sort(key=lambda d: (d.namespace, d.workload, d.ip))
    return out


def _selecting(memo: dict, pools, labels, version: int) -> list:
    key = (version, tuple(sorted(labels.items())))
    if key not in memo:
        memo[key] = [p for p in pools if p.version == version and core.node_selected(p, labels)]
    return memo[key]


def _placed(net, pools) -> bool | None:
    """True: ``net`` lies wholly in one of ``pools``; False: it meets none of them; None: partly."""
    if any(net.subnet_of(p.network) for p in pools):
        return True
    if not any(net.overlaps(p.network) for p in pools):
        return False
    return None
