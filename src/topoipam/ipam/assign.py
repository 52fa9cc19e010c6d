"""Auto-assign for one address family (reference section 4), when the kept first attempt
(``ipam/kept.py: assign_kept``) did not apply or lost its race.

Order of attempts, each a compare-and-swap through ``retry.run_cas``:
1. the node's affine blocks in the chosen pools (address order);
2. a new block: the first unclaimed block in the host's order of the first
   pool that has one, found from the claimed-block summaries (a few reads,
   never a scan of all blocks); affinity + block + summary + handle in ONE commit;
3. an empty block another host has held for over a minute, taken over in one commit;
4. only with strict affinity off: borrowing from existing blocks of the chosen
   pools (any affinity), in the host's order.
The per-host block limit stops the walk before 2 (no borrowing then), as Calico.

On the default topology (``FencedSnapshot``) the service keeps the node's
affinity list and its blocks between calls (``ipam/cache.py``), so 1. plans on
kept values too: the block's Update on the revision kept, the handle (Created
unread the first time, see ``kept.HandleState``) and the topology fences. A lost
race forgets the commit's keys; the retry reads them with the fences, and a
moved fence re-reads the topology. Whether the node needs a new block is only
ever decided on a fresh listing.
"""

from __future__ import annotations


from topoipam.core.affinity import holder_of
from topoipam.core.block import Block
from topoipam.core.pools import choose_pools, pool_containing, selects_node
from topoipam.ipam import keys
from topoipam.ipam.blocks import (StoredBlock, affinity_hint_op, affinity_value, claim_ops, find_unclaimed_block,
                                  list_holder_nets, load_block, pool_check, release_affinity_ops, reserved_in,
                                  scan_pool_blocks)
from topoipam.ipam.kept import (FULL_FOR_RULE, AffineGroup, Choice, HandleState, affine_groups, assignment_ops,
                                choice_key, kept_plan, plan_blocks, take_kept_block)
from topoipam.errors import DamagedRecordError
from topoipam.store.retry import Plan, rerun, run_cas
from topoipam.ipam.topology import TopologyMoved
from topoipam.resources import repo
from topoipam.store.base import Create, Delete, Update

DEFAULT_BLOCK_LIMIT = 20
MEMO_LIMIT = 4096  # pool choices kept per topology snapshot
EMPTY_BLOCK_MIN_RECLAIM_AGE = 60.0  # seconds


def block_limit(requested: int, configured: int, domain: bool = False) -> int | float:
    """Calico's rule: the request's cap, lowered to the config's; 20 when neither gives one. For a
    domain (core.affinity) the configured or requested cap counts per domain, and without one there
    is none: 20 blocks per host is no bound for a rack of 40 nodes sharing its blocks."""
    limit = requested
    if configured > 0 and (limit == 0 or limit > configured):
        limit = configured
    return limit or (float("inf") if domain else DEFAULT_BLOCK_LIMIT)


class FamilyAssigner:
    """Assigns ``num`` addresses of one family for one request. ``ips`` holds what has landed so far
    (the caller releases them if the request fails later); ``claimed`` the blocks this request
    claimed, with the revision of its last commit to each (the caller undoes those claims too)."""

    def __init__(self, svc, snap, req, node, version: int, num: int, requested,
                 handle_state: HandleState | None = None, raced: bool = False) -> None:
        self.svc, self.store, self.cache, self.snap, self.req = svc, svc.store, svc.cache, snap, req
        self.node, self.name, self.version, self.num = node, node.name, version, num
        self.requested = tuple(requested)
        self.hstate = handle_state or HandleState(req.handle, req.attrs)
        self.ips: list = []
        self.messages: list[str] = []
        self.block_limit_hit = False
        self.claimed: dict = {}
        self.tried: set = set()  # key suffixes of blocks that gave nothing in this request
        self.known: set = set()  # key suffixes of the node's affine blocks seen
        self.last_revision = 0  # of this assigner's last landed commit
        self.raced = raced  # assign_kept's commit lost its race: the first read takes the fences too
        # Addresses released less than this long ago are passed over while the holder's blocks have
        # others; ``cooling``: [(network, key suffix)] of affine blocks that had only such addresses
        # (per holder group: ``_use`` starts them again).
        self.cooldown = snap.cooldown
        self.cooling: list = []
        self.cooled = False  # the cooling addresses are given out now (cooldown 0 from here on)

    @property
    def need(self) -> int:
        return self.num - len(self.ips)

    def run(self) -> "FamilyAssigner":
        rerun(self._run, moved=TopologyMoved, refresh=self._read_topology_again,
              what=lambda: f"assign IPv{self.version} addresses on node {self.name}")
        return self

    def _read_topology_again(self) -> None:
        """A fence moved: read the topology again and go on with what is left to assign."""
        self.snap = self.svc.assign_snapshot(self.name)
        self.node = self.snap.require_node(self.name)
        if not self.cooled:
            self.cooldown = self.snap.cooldown

    def _run(self) -> None:
        choice = self.choose()
        for group in choice.groups:  # one group unless the chosen pools mix host and domain affinity
            self._use(group)
            self._assign_affine()
            if self.need == 0:
                return
        if not self.snap.config.strict_affinity and not self.block_limit_hit:
            self.pools = choice.pools
            self._borrow()

    def _use(self, group: AffineGroup) -> None:
        """Assign from (and claim for) ``group``'s holder next: the node, or its domain (core.affinity).
        The cooldown starts again: it passes over addresses while this holder's blocks have others."""
        self.holder, self.pools, self.contains, self.prefix = group.holder, group.pools, group.contains, group.prefix
        self.cooling, self.cooled = [], False
        self.cooldown = self.snap.cooldown

    def _assign_affine(self) -> None:
        """Steps 1-3 for the current holder: its blocks, a new block, a reclaimed one."""
        records, kept = self._affinities(fresh=False)
        queue, owned = self._plan(records, kept)
        config = self.snap.config
        limit = block_limit(self.req.max_blocks_per_host, config.max_blocks_per_host, self.holder.is_domain)
        while self.need > 0:
            if queue:
                net, suffix = queue[0]
                if not self._from_block(net, require_affinity=True, suffix=suffix):
                    self.tried.add(suffix)
                    queue.pop(0)
                continue
            if kept is not None:  # decide about new blocks only on a fresh listing (the kept one may lag)
                records, kept = self._affinities(fresh=True)
                queue, owned = self._plan(records, kept)
                continue
            if self.cooling:  # nothing else free in the holder's blocks: the cooling addresses after all
                queue, self.cooling, self.cooldown, self.cooled = self.cooling, [], 0.0, True
                continue
            if owned >= limit:
                whose = f"domain {self.holder.display}" if self.holder.is_domain else "this node"
                self.messages.append(
                    f"Need to allocate an IPAM block but could not - limit of {limit} blocks reached for {whose}")
                self.block_limit_hit = True
                break
            if not config.auto_allocate_blocks:
                self.messages.append("failed to find or claim a block")
                break
            outcome = self._claim_new()
            if outcome == "affine":  # a concurrent request for this node claimed one: use it first
                queue, owned = self._plan(*self._affinities(fresh=True))
                continue
            if outcome or self._reclaim():
                owned += 1
                continue
            if config.strict_affinity:
                self.messages.append("No more free affine blocks and strict affinity enabled")
            break

    # -- helpers ------------------------------------------------------------------
    def choose(self):
        """The chosen pools and a memo of which networks they contain, kept with the snapshot; raises
        NoQualifiedPoolError when no pool qualifies (before anything is written)."""
        ns = self.req.namespace_labels
        key = choice_key(self.req, self.version, self.requested)
        memo = getattr(self.snap, "memo", None)
        hit = memo.get(key) if memo is not None else None
        if hit is None:
            choice = choose_pools(self.snap.pools, self.version, self.name, self.node.labels,
                                  requested=self.requested, namespace_labels=ns, use=self.req.use)
            hit = Choice(choice.chosen, affine_groups(choice.chosen, self.name, self.node.labels, self.version))
            if memo is not None:
                if len(memo) >= MEMO_LIMIT:  # many nodes x namespaces: start again rather than grow
                    memo.clear()
                memo[key] = hit
        return hit

    def _affinities(self, *, fresh: bool) -> tuple[list, int | None]:
        """The node's affinity records of this family, and the version of the kept list they come
        from (None: just listed). Kept ones are used unless ``fresh`` (and only on a fenced snapshot)."""
        if not fresh and self.snap.memo is not None:
            kept = self.cache.affinities(self.prefix)
            if kept is not None:
                return kept[1], kept[0]
        records = self.store.list(self.prefix)
        if self.snap.memo is not None:
            self.cache.put_affinities(self.prefix, records)
        return records, None

    def _plan(self, records, kept: int | None) -> tuple[list, int]:
        """([(network, key suffix)] of the blocks to try in order, number of affine blocks in the chosen
        pools); the plan of a kept list is memoised (``kept_plan``). On a fresh listing, unselected
        empty blocks are let go."""
        cut = len(self.prefix)
        self.known.update(r.key[cut:] for r in records)
        if kept is not None and not self.tried:
            planned = kept_plan(self.contains, self.prefix, self.version, self.pools, (kept, records))
            return list(planned.queue), planned.owned
        queue, owned, unselected = plan_blocks(records, self.prefix, self.version, self.pools, self.contains,
                                               self.tried)
        if kept is None and not self.holder.is_domain:  # a domain's other nodes may still be selected
            self._drop_unselected(unselected)
        return queue, owned

    def _landed(self, block: Block, ords: list[int]) -> None:
        self.ips.extend(block.interface(o) for o in ords)

    def _fresh_reads(self, wanted: list[str], n: int) -> dict:
        """One read of ``wanted`` plus, on a retry, the handle and the topology fences (a fence that
        moved raises TopologyMoved: the caller reads the topology again)."""
        fresh, self.raced = n > 0 or self.raced, False
        recs = self.store.get_many([*wanted, *self.hstate.keys(fresh), *(self.snap.fence_keys(self.name)
                                                                          if fresh else [])])
        if fresh:
            if not self.snap.holds(recs, self.name):
                raise TopologyMoved()
            self.hstate.seen(recs)
        return recs

    def _commit_plan(self, ops: list, result, written: dict, hvalue) -> Plan:
        """The plan for ``ops`` (fences added): on landing, the written blocks are kept and the handle
        is known; on a lost race, every key of the commit is forgotten."""
        ops = [*ops, *self.snap.fence_ops(self.name)]

        def landed(revision: int) -> None:
            self.last_revision = revision
            if self.claimed:
                for block in written.values():
                    if block.cidr in self.claimed:
                        self.claimed[block.cidr] = revision
            self.cache.committed(ops, revision, written)
            self.hstate.landed(hvalue, revision)

        return Plan(ops, result, landed, lambda: self.cache.forget(ops))

    def _from_block(self, net, *, require_affinity: bool, suffix: str | None = None) -> bool:
        """Assign what fits from an existing block; False when it gave nothing (full, gone, not ours)."""
        suffix = suffix or keys.net_suffix(net)
        bkey = keys.block_prefix(self.version) + suffix
        akey = self.prefix + suffix if require_affinity else None
        reserved = self.snap.reserved

        def attempt(n):
            now, cooldown = self.svc.clock(), self.cooldown
            kept = take_kept_block(self.cache, bkey, akey, self.prefix, self.holder.affinity, self.need, self.hstate,
                                   reserved, self.req.unusable, now, cooldown) if n == 0 and not self.raced else None
            if kept is FULL_FOR_RULE:  # kept, and nothing in it this request may have
                return Plan([], None, lambda rev: None, lambda: None)
            if kept is None:  # nothing kept, or it gave nothing: decide on fresh reads
                recs = self._fresh_reads([bkey, *([akey] if akey else [])], n)
                try:
                    stored, arec = load_block(recs.get(bkey), self.cache), recs.get(akey)
                except DamagedRecordError as exc:  # the rest of the address space keeps working
                    self.messages.append(f"passed over damaged block {net}: {exc.why}")
                    return Plan(result=None)
                if stored is None or (require_affinity and stored.block.affinity != self.holder.affinity):
                    # a stale affinity (its block is gone or belongs to another holder now): drop it, as Calico does
                    ops = [Delete(akey, arec.revision)] if arec is not None else []
                    return Plan(ops, None, lambda rev: self.cache.committed(ops, rev), lambda: self.cache.forget(ops))
                ords = stored.block.auto_assign(self.need, self.req.handle, self.hstate.block_attrs(),
                                                reserved_in(stored.block, reserved, self.req.unusable), now, cooldown)
            else:
                stored, ords, arec = kept.stored, kept.ordinals, kept.affinity
            block = stored.block
            if not ords and cooldown and require_affinity and block.free_count(reserved_in(block, reserved)):
                self.cooling.append((net, suffix))  # free, but only addresses released moments ago
                return Plan(result=None)
            if not ords:  # full: fix a stale hint so that later requests skip it unread
                hint = affinity_hint_op(arec, block) if akey else None
                ops = [hint] if hint else []
                return Plan(ops, None, lambda rev: self.cache.committed(ops, rev), lambda: self.cache.forget(ops))
            ops, hvalue = assignment_ops(bkey, stored, len(ords), self.hstate, arec if akey else None)
            return self._commit_plan(ops, (block, ords), {bkey: block}, hvalue)

        landed = run_cas(self.store, attempt, lambda: f"assign from block {net}")
        if not landed:
            return False
        self._landed(*landed)
        return True

    def _claim_new(self):
        def attempt(n):
            guard = self._domain_guard()  # read before the listing that decides a claim is needed
            if n > 0:
                self._fresh_reads([], n)
            if n > 0 or guard:
                fresh = self._new_affine()
                if fresh:
                    self.known.update(fresh)
                    return Plan(result="affine")
            if n > 0:
                self._refresh_pools()
            for pool in self.pools:
                found = find_unclaimed_block(self.store, pool, self.holder.display, self.snap.reserved)
                if found:
                    break
            else:
                return Plan()
            net, chunk_record = found
            block = Block.new(net, self.holder.affinity, self.svc.claim_time(), self.svc.initial_sequence())
            ords = block.auto_assign(self.need, self.req.handle, self.hstate.block_attrs(),
                                     reserved_in(block, self.snap.reserved, self.req.unusable))
            hops, hvalue = self.hstate.op(block.cidr_text, len(ords))
            ops = claim_ops(self.store, block, self.holder, chunk_record, read_chunk=False)
            return self._commit_plan([*ops, *guard, *pool_check(pool), *hops], (block, ords),
                                     {keys.block_key(net): block}, hvalue)

        outcome = run_cas(self.store, attempt, "claim a block")
        if outcome is None or outcome == "affine":
            return outcome
        block = outcome[0]
        self.known.add(keys.net_suffix(block.cidr))
        self.claimed[block.cidr] = self.last_revision
        self._landed(*outcome)
        return True

    def _new_affine(self) -> list[str]:
        """Key suffixes of the holder's blocks in the chosen pools not seen yet (one listing)."""
        return [keys.net_suffix(x) for x in list_holder_nets(self.store, self.holder, self.version)
                if keys.net_suffix(x) not in self.known and pool_containing(self.pools, x) is not None]

    def _domain_guard(self) -> list:
        """For a domain: the op moving its claim guard, on the revision read now (host: none). Nodes of
        one domain claim for it in parallel; each decides that it needs a new block on a listing read
        AFTER this guard, and commits the claim with this op. So two claims planned on the same listing
        race on the guard: one lands, the other retries, lists again and uses the block that landed
        (a claim of another block, found free after the first landed, can never make a second block)."""
        if not self.holder.is_domain:
            return []
        key = keys.claim_guard_key(self.holder, self.version)
        rec = self.store.get(key)
        return [Create(key, b"{}")] if rec is None else [Update(key, rec.value, rec.revision)]

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
            for stored in scan_pool_blocks(self.store, pool, self.holder.display):
                b = stored.block
                if b.is_empty() and b.affinity != self.holder.affinity and _age(b.claim_time, now) >= \
                        EMPTY_BLOCK_MIN_RECLAIM_AGE and self._take_over(stored):
                    return True  # taken over, or (a domain) another node's claim landed: the loop looks again
        return False

    def _take_over(self, seen: StoredBlock) -> bool:
        old_holder = holder_of(seen.block.affinity)
        old_key = keys.holder_key(old_holder, seen.block.cidr) if old_holder else None

        def attempt(n):
            guard = self._domain_guard()
            if guard and self._new_affine():  # another node of the domain claimed meanwhile: use that
                return Plan(result="affine")
            recs = self._fresh_reads([seen.key, *([old_key] if old_key else [])], max(n, 1))
            rec = recs.get(seen.key)
            if rec is None or rec.revision != seen.revision:
                return Plan()  # changed since we judged it reclaimable: leave it
            block = Block.from_json(rec.value)
            block.affinity, block.claim_time = self.holder.affinity, self.svc.claim_time()
            ords = block.auto_assign(self.need, self.req.handle, self.hstate.block_attrs(),
                                     reserved_in(block, self.snap.reserved, self.req.unusable))
            block.sequence_number += 1
            ops = [Update(seen.key, block.to_json(), rec.revision),
                   Create(keys.holder_key(self.holder, block.cidr), affinity_value(block))]
            if old_key and old_key in recs:
                ops.append(Delete(old_key, recs[old_key].revision))
            hops, hvalue = self.hstate.op(block.cidr_text, len(ords))
            return self._commit_plan([*ops, *guard, *hops], (block, ords), {seen.key: block}, hvalue)

        landed = run_cas(self.store, attempt, f"reclaim block {seen.block.cidr}")
        if landed == "affine":
            return True
        if landed:
            self.known.add(keys.net_suffix(landed[0].cidr))
            self._landed(*landed)
        return bool(landed)

    def _borrow(self) -> None:
        # the cooldown keeps to the node's own blocks: borrowing is the last resort
        self.cooldown, self.cooled = 0.0, True
        exhausted = []
        for pool in self.pools:
            for stored in scan_pool_blocks(self.store, pool, self.name):
                if stored.block.free_count(reserved_in(stored.block, self.snap.reserved, self.req.unusable)) > 0:
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
                self._release_if_empty(net)

    def _release_if_empty(self, net) -> bool:
        """Release this node's affinity to the block ``net`` if the block is empty (deleting it); the
        decision rests on the topology, so the commit carries its fences."""
        bkey, akey = keys.block_key(net), keys.holder_key(self.holder, net)

        def attempt(n):
            recs = self._fresh_reads([bkey, akey], n)
            stored = load_block(recs.get(bkey))
            if stored is None:
                ops = [Delete(akey, recs[akey].revision)] if akey in recs else []
            elif not stored.block.is_empty() or stored.block.affinity != self.holder.affinity:
                return Plan(result=False)
            else:
                ops = release_affinity_ops(self.store, stored, recs.get(akey))
            if not ops:
                return Plan(result=True)
            ops = [*ops, *self.snap.fence_ops(self.name)]
            return Plan(ops, True, lambda rev: self.cache.committed(ops, rev), lambda: self.cache.forget(ops))

        return bool(run_cas(self.store, attempt, f"release affinity of block {net}"))


def _age(claim_time: str | None, now: float) -> float:
    if not claim_time:
        return float("inf")
    from datetime import datetime  # reclaim path only: keeps datetime off the plugin's start-up

    try:
        return now - datetime.fromisoformat(claim_time).timestamp()
    except ValueError:
        return float("inf")
