"""Auto-assign for one address family (reference section 4).

Order of attempts, each a compare-and-swap through ``retry.run_cas``:
1. the node's affine blocks in the chosen pools (address order);
2. a new block: the first unclaimed block in the host's order of the first
   pool that has one, found from the claimed-block summaries (a few reads,
   never a scan of all blocks); affinity + block + summary + handle in ONE commit;
3. an empty block another host has held for over a minute, taken over in one commit;
4. only with strict affinity off: borrowing from existing blocks of the chosen
   pools (any affinity), in the host's order.
The per-host block limit stops the walk before 2 (no borrowing then), as Calico.
"""

from __future__ import annotations

from datetime import datetime

from topoipam.core.block import Block, affinity_node, host_affinity
from topoipam.core.pools import choose_pools, pool_containing, selects_node
from topoipam.ipam import keys
from topoipam.ipam.blocks import (StoredBlock, affinity_hint_op, affinity_value, claim_ops, find_unclaimed_block,
                                  handle_ops, list_affine_nets, list_affinities, load_block, release_affinity_ops,
                                  reserved_in, scan_pool_blocks)
from topoipam.ipam.retry import Plan, run_cas
from topoipam.resources import repo
from topoipam.resources.keys import resource_key
from topoipam.store.base import Check, Create, Delete, Update

DEFAULT_BLOCK_LIMIT = 20
EMPTY_BLOCK_MIN_RECLAIM_AGE = 60.0  # seconds


def block_limit(requested: int, configured: int) -> int:
    """Calico's rule: the request's cap, lowered to the config's; 20 when neither gives one."""
    limit = requested
    if configured > 0 and (limit == 0 or limit > configured):
        limit = configured
    return limit or DEFAULT_BLOCK_LIMIT


class FamilyAssigner:
    """Assigns ``num`` addresses of one family for one request. ``ips`` holds what has landed so far
    (the caller releases them if the request fails later)."""

    def __init__(self, svc, snap, req, node, version: int, num: int, requested) -> None:
        self.svc, self.store, self.snap, self.req = svc, svc.store, snap, req
        self.node, self.name, self.version, self.num = node, node.name, version, num
        self.requested = tuple(requested)
        self.ips: list = []
        self.messages: list[str] = []
        self.block_limit_hit = False

    @property
    def need(self) -> int:
        return self.num - len(self.ips)

    def run(self) -> "FamilyAssigner":
        choice = choose_pools(self.snap.pools, self.version, self.name, self.node.labels,
                              requested=self.requested, namespace_labels=self.req.namespace_labels,
                              use=self.req.use)
        self.pools = choice.chosen
        affinities = list_affinities(self.store, self.name, self.version)
        affine = [n for n, _ in affinities]
        usable = [n for n in affine if pool_containing(self.pools, n) is not None]
        full = {n for n, is_full in affinities if is_full}
        self._drop_unselected([n for n in affine if n not in usable])
        self.known = set(affine)
        config = self.snap.config
        limit = block_limit(self.req.max_blocks_per_host, config.max_blocks_per_host)
        owned = len(usable)
        queue = [n for n in usable if n not in full]  # full blocks are skipped without a read
        while self.need > 0:
            if queue:
                if not self._from_block(queue[0], require_affinity=True):
                    queue.pop(0)
                continue
            if owned >= limit:
                self.messages.append(
                    f"Need to allocate an IPAM block but could not - limit of {limit} blocks reached for this node")
                self.block_limit_hit = True
                break
            if not config.auto_allocate_blocks:
                self.messages.append("failed to find or claim a block")
                break
            outcome = self._claim_new()
            if outcome == "affine":  # a concurrent request for this node claimed one: use it first
                queue = [n for n, is_full in list_affinities(self.store, self.name, self.version)
                         if not is_full and pool_containing(self.pools, n) is not None]
                continue
            if outcome or self._reclaim():
                owned += 1
                continue
            if config.strict_affinity:
                self.messages.append("No more free affine blocks and strict affinity enabled")
            break
        if self.need > 0 and not config.strict_affinity and not self.block_limit_hit:
            self._borrow()
        return self

    # -- helpers ------------------------------------------------------------------
    def _handle_keys(self) -> list[str]:
        return [keys.handle_key(self.req.handle)] if self.req.handle is not None else []

    def _assign_ops(self, block: Block, ords: list[int], records) -> list:
        if self.req.handle is None:
            return []
        return handle_ops(records, {self.req.handle: {str(block.cidr): len(ords)}})

    def _landed(self, block: Block, ords: list[int]) -> None:
        self.ips.extend(block.interface(o) for o in ords)

    def _from_block(self, net, *, require_affinity: bool) -> bool:
        """Assign what fits from an existing block; False when it gave nothing (full, gone, not ours)."""
        bkey = keys.block_key(net)
        akey = keys.affinity_key(self.name, net) if require_affinity else None

        def attempt(_n):
            recs = self.store.get_many([bkey, *([akey] if akey else []), *self._handle_keys()])
            stored = load_block(recs.get(bkey), self.svc.block_cache)
            if stored is None or (require_affinity and stored.block.affinity != host_affinity(self.name)):
                # a stale affinity (its block is gone or belongs to another host now): drop it, as Calico does
                return Plan([Delete(akey, recs[akey].revision)] if akey in recs else [], None)
            block = stored.block
            ords = block.auto_assign(self.need, self.req.handle, self.req.attrs, reserved_in(block, self.snap.reserved))
            hint = affinity_hint_op(recs.get(akey), block) if akey else None
            if not ords:  # full: fix a stale hint so that later requests skip it unread
                return Plan([hint] if hint else [], None)
            block.sequence_number += 1
            ops = [Update(bkey, block.to_json(), stored.revision), *self._assign_ops(block, ords, recs)]
            return Plan(ops + ([hint] if hint else []), (block, ords),
                        lambda revision: self.svc.block_cache.put(bkey, revision, block))

        landed = run_cas(self.store, attempt, f"assign from block {net}")
        if not landed:
            return False
        self._landed(*landed)
        return True

    def _claim_new(self):
        def attempt(n):
            if n > 0:
                fresh = [x for x in list_affine_nets(self.store, self.name, self.version)
                         if x not in self.known and pool_containing(self.pools, x) is not None]
                if fresh:
                    self.known.update(fresh)
                    return Plan(result="affine")
                self._refresh_pools()
            for pool in self.pools:
                found = find_unclaimed_block(self.store, pool, self.name, self.snap.reserved)
                if found:
                    break
            else:
                return Plan()
            net, chunk_record = found
            block = Block.new(net, host_affinity(self.name), self.svc.claim_time(), self.svc.initial_sequence())
            ords = block.auto_assign(self.need, self.req.handle, self.req.attrs, reserved_in(block, self.snap.reserved))
            recs = self.store.get_many(self._handle_keys())
            ops = claim_ops(self.store, block, self.name, chunk_record, read_chunk=False)
            return Plan([*ops, *self._pool_check(pool), *self._assign_ops(block, ords, recs)], (block, ords))

        outcome = run_cas(self.store, attempt, "claim a block")
        if outcome is None or outcome == "affine":
            return outcome
        self.known.add(outcome[0].cidr)
        self._landed(*outcome)
        return True

    @staticmethod
    def _pool_check(pool) -> list:
        """A claim commits only if the pool is unchanged since it was read: a claim cannot slip in
        after a pool delete disabled the pool and released its affinities (reference 1.3)."""
        rv = pool.metadata.resource_version
        return [Check(resource_key("IPPool", pool.name), int(rv))] if rv else []

    def _refresh_pools(self) -> None:
        """After a lost claim race: re-read the chosen pools, dropping any disabled or deleted since."""
        fresh = []
        for pool in self.pools:
            current = repo.get_pool(self.store, pool.name)
            if current is not None and not current.spec.disabled and current.spec.cidr == pool.spec.cidr:
                fresh.append(current)
        self.pools = fresh

    def _reclaim(self) -> bool:
        """Take over one empty block another host has held for over a minute (Calico's reclaim)."""
        now = self.svc.clock()
        for pool in self.pools:
            for stored in scan_pool_blocks(self.store, pool, self.name):
                b = stored.block
                if b.is_empty() and affinity_node(b.affinity) != self.name and _age(b.claim_time, now) >= \
                        EMPTY_BLOCK_MIN_RECLAIM_AGE and self._take_over(stored):
                    return True
        return False

    def _take_over(self, seen: StoredBlock) -> bool:
        old_node = affinity_node(seen.block.affinity)
        old_key = keys.affinity_key(old_node, seen.block.cidr) if old_node else None

        def attempt(_n):
            recs = self.store.get_many([seen.key, *([old_key] if old_key else []), *self._handle_keys()])
            rec = recs.get(seen.key)
            if rec is None or rec.revision != seen.revision:
                return Plan()  # changed since we judged it reclaimable: leave it
            block = Block.from_json(rec.value)
            block.affinity, block.claim_time = host_affinity(self.name), self.svc.claim_time()
            ords = block.auto_assign(self.need, self.req.handle, self.req.attrs, reserved_in(block, self.snap.reserved))
            block.sequence_number += 1
            ops = [Update(seen.key, block.to_json(), rec.revision),
                   Create(keys.affinity_key(self.name, block.cidr), affinity_value(block))]
            if old_key and old_key in recs:
                ops.append(Delete(old_key, recs[old_key].revision))
            return Plan([*ops, *self._assign_ops(block, ords, recs)], (block, ords))

        landed = run_cas(self.store, attempt, f"reclaim block {seen.block.cidr}")
        if landed:
            self.known.add(landed[0].cidr)
            self._landed(*landed)
        return bool(landed)

    def _borrow(self) -> None:
        exhausted = []
        for pool in self.pools:
            for stored in scan_pool_blocks(self.store, pool, self.name):
                if stored.block.free_count(reserved_in(stored.block, self.snap.reserved)) > 0:
                    while self.need > 0 and self._from_block(stored.block.cidr, require_affinity=False):
                        pass
                if self.need == 0:
                    return
            exhausted.append(pool.spec.cidr)
        self.messages.append(f"No IPs available in pools: [{' '.join(exhausted)}]")

    def _drop_unselected(self, nets) -> None:
        """Step 4 of Calico's autoAssign: affine blocks outside every pool that still selects this node
        lose their affinity, but only once empty (running workloads keep their addresses)."""
        for net in nets:
            pool = pool_containing(self.snap.enabled_pools, net)
            if pool is None or not selects_node(pool, self.node.labels):
                release_if_empty(self.store, self.name, net)


def release_if_empty(store, node: str, net) -> bool:
    """Release ``node``'s affinity to the block ``net`` if the block is empty (deleting it)."""
    bkey, akey = keys.block_key(net), keys.affinity_key(node, net)

    def attempt(_n):
        recs = store.get_many([bkey, akey])
        stored = load_block(recs.get(bkey))
        if stored is None:
            return Plan([Delete(akey, recs[akey].revision)], True) if akey in recs else Plan()
        if not stored.block.is_empty() or stored.block.affinity != host_affinity(node):
            return Plan(result=False)
        return Plan(release_affinity_ops(store, stored, recs.get(akey)), True)

    return bool(run_cas(store, attempt, f"release affinity of block {net}"))


def _age(claim_time: str | None, now: float) -> float:
    if not claim_time:
        return float("inf")
    try:
        return now - datetime.fromisoformat(claim_time).timestamp()
    except ValueError:
        return float("inf")
