"""The impact of a change on IPAM, told before it is made (``--dry-run``).

The change is made on a private copy of the datastore (``store.memory.MemoryStore.copy_of``) by
the very code that makes it for real (the resource service, and the IPAM releases of pool and
node deletes); this module compares what the copy says before and after it, with the answers of
``ipam coverage`` and ``ipam drift`` (``insights.coverage`` / ``insights.drift`` on one read each):

- node/family pairs that lose coverage,
- workloads whose address then lies outside every pool that selects their node (drift),
- pools that then select no node,
- affine blocks that lose their affinity. Two ways, as the engine does it: at once (a pool delete
  releases every affinity of the pool, a node delete every affinity of the node: empty blocks are
  freed, the others stay without affinity), or later: a block whose pool no longer selects its
  node (relabel, selector change, pool disabled) keeps its affinity while it holds addresses and
  loses it once empty, at the node's next assignment or when its last address is released
  (``assign._drop_unselected``, ``release._settle_block``: Calico's ensureConsistentAffinity).

Only what the change causes counts as impact (a node uncovered before stays out of it); ``after``
keeps the full answers, which are what ``coverage`` and ``drift`` print once the change is made.
"""

from __future__ import annotations

from topoipam.core.affinity import holder_of
from topoipam.core.pools import selects_node
from topoipam.ipam.insights import Drift, World, coverage, drift
from topoipam.structs import dataclass, field


@dataclass
class Uncovered:
    node: str
    version: int
    reason: str


@dataclass
class AffinityLoss:
    block: str
    node: str
    pool: str | None  # the pool the block lies in (None: in no pool any more)
    when: str  # "now" or "once empty"
    outcome: str


@dataclass
class Observation:
    """What coverage, drift and the blocks say of one datastore state."""

    uncovered: dict = field(default_factory=dict)  # (node, version) -> Uncovered
    drift: dict = field(default_factory=dict)  # (handle, ip) -> Drift
    unused_pools: list = field(default_factory=list)
    blocks: dict = field(default_factory=dict)  # block -> addresses in use
    affine: dict = field(default_factory=dict)  # block -> (node, addresses in use, pool name)
    unselected: dict = field(default_factory=dict)  # block -> AffinityLoss: its pool no longer selects its node


@dataclass
class Impact:
    uncovered: list[Uncovered]
    drift: list[Drift]
    unused_pools: list[str]
    affinities: list[AffinityLoss]
    after: Observation

    @property
    def found(self) -> bool:
        return bool(self.uncovered or self.drift or self.unused_pools or self.affinities)


def observe(store, now: float, decoded=None) -> Observation:
    """``decoded``: a ``store.decoded.Decoded`` shared by the observations of one store (before and after a
    dry run's change), so that the second decodes only the records the change wrote."""
    world = World(store, now, decoded)
    obs = Observation()
    report = coverage(store, now, world=world)
    obs.uncovered = {(n.node, n.version): Uncovered(n.node, n.version, n.reason) for n in report.uncovered}
    obs.unused_pools = list(report.unused_pools)
    obs.drift = {(d.handle, d.ip): d for d in drift(store, world=world)}
    nodes = {n.name: n for n in world.nodes}
    for b in world.blocks:
        obs.blocks[str(b.cidr)] = b.in_use
        holder = holder_of(b.affinity)
        if holder is None:
            continue
        name, pool = holder.display, world.pool_of[b.cidr]
        obs.affine[str(b.cidr)] = (name, b.in_use, pool.name if pool else None)
        selecting = pool if pool is not None and not pool.spec.disabled else None  # pools do not overlap
        if holder.is_domain:
            # The engine's rule (release.release_orphan_domains): a domain's blocks lose their affinity,
            # once empty, when no registered node carries the domain's label value any more.
            gone = not any(holder.carried_by(n.labels) for n in world.nodes)
        else:
            node = nodes.get(name)
            # The allocator's own test (assign._drop_unselected); a node not registered is left to cleanup.
            gone = node is not None and (selecting is None or not selects_node(selecting, node.labels))
        if gone:
            obs.unselected[str(b.cidr)] = AffinityLoss(
                str(b.cidr), name, pool.name if pool else None, "once empty",
                f"{'no node carries ' + name if holder.is_domain else 'its pool no longer selects ' + name}: it "
                f"keeps its affinity while it holds addresses ({b.in_use} now) and loses it once empty")
    return obs


def compare(before: Observation, after: Observation) -> Impact:
    lost = []
    for cidr, (node, _in_use, pool) in before.affine.items():
        now = after.affine.get(cidr)
        if now is not None and now[0] == node:
            continue
        if now is not None:
            outcome = f"taken over by {now[0]}"
        elif cidr in after.blocks:
            outcome = f"left without affinity ({after.blocks[cidr]} address(es) still allocated)"
        else:
            outcome = "empty block freed"
        lost.append(AffinityLoss(cidr, node, pool, "now", outcome))
    lost += [loss for cidr, loss in after.unselected.items() if cidr not in before.unselected]
    return Impact(
        [u for key, u in after.uncovered.items() if key not in before.uncovered],
        [d for key, d in after.drift.items() if key not in before.drift],
        [p for p in after.unused_pools if p not in before.unused_pools],
        sorted(lost, key=lambda a: (a.node, a.block)),
        after,
    )
