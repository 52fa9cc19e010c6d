"""The steady state of an assignment, planned on what the service keeps (``ipam/cache.py``).

``assign_kept`` is the first attempt of most assignments: the node's kept affinity list, planned once
per version (``kept_plan``), names the block ``FamilyAssigner`` would try first; the kept copy of that
block gives the addresses (``take_kept_block``) and one commit, fenced like every assignment, writes
the block, the handle and, when the block fills, its affinity's hint (``assignment_ops``). No read.
Anything not kept, or a lost race (``KeptPlanStale``), goes to ``FamilyAssigner`` (ipam/assign.py),
which decides on fresh reads with the same helpers. ``HandleState`` is what one request knows of its
handle's record, shared by both.
"""

from __future__ import annotations

from topoipam.core.affinity import Holder, holder_for
from topoipam.core.pools import pool_containing
from topoipam.ipam import keys
from topoipam.ipam.blocks import (StoredBlock, affinity_hint_op, affinity_is_full, entry_attrs, handle_op,
                                  new_handle_value, reserved_in)
from topoipam.errors import HandleInUseError
from topoipam.store.base import Check, Create, Record, Update
from topoipam.store.retry import Plan, run_cas
from topoipam.structs import dataclass


@dataclass(frozen=True, slots=True)
class AffineGroup:
    """The chosen pools whose blocks are affine to one ``holder`` (the node itself, or a domain such
    as rack=0: core.affinity), with its affinity-key ``prefix``. ``contains`` memoises, per key suffix
    of the holder's affinities, (network, whether these pools hold it), and the kept plan."""

    holder: Holder
    pools: list
    contains: dict
    prefix: str


@dataclass(frozen=True, slots=True)
class Choice:
    """A request's pool choice, kept in the snapshot's memo: every chosen pool (in order, for
    borrowing) and the same pools grouped by affinity holder, in the order of their first pool."""

    pools: list
    groups: list


def affine_groups(pools, node: str, labels, version: int) -> list[AffineGroup]:
    """``pools`` (chosen: each has a holder for this node) grouped by ``core.affinity.holder_for``."""
    groups: dict = {}
    for pool in pools:
        holder = holder_for(node, labels, pool)
        group = groups.get(holder)
        if group is None:
            group = groups[holder] = AffineGroup(holder, [], {}, keys.holder_prefix(holder, version))
        group.pools.append(pool)
    return list(groups.values())


@dataclass(frozen=True, slots=True)
class KeptPlan:
    """The plan of a kept affinity list at ``version``: [(network, key suffix)] of the blocks to try in
    order (``queue``) and how many affine blocks lie in the chosen pools (``owned``)."""

    version: int
    queue: list
    owned: int


@dataclass(frozen=True, slots=True)
class TakenBlock:
    """A kept block taken out of the cache with ``ordinals`` assigned in it; ``affinity``: its affinity
    record if the block filled (its hint must change)."""

    stored: StoredBlock
    ordinals: list
    affinity: Record | None


def choice_key(req, version: int, requested: tuple) -> tuple:
    """The key of a request's pool choice in the snapshot's memo (what the choice depends on)."""
    ns = req.namespace_labels
    return "pools", version, req.node, requested, tuple(sorted(ns.items())) if ns else (), req.use


def plan_blocks(records, prefix: str, version: int, pools, contains: dict, tried=frozenset()) -> tuple:
    """The plan of a node's affinity ``records``: ([(network, key suffix)] of the blocks to try in
    order, number of affine blocks in ``pools``, [networks of affine blocks outside them]). Full
    blocks are skipped unread (their hint), and so are ``tried`` ones. Per key suffix, the network and
    whether the pools hold it are memoised in ``contains`` (kept with the pool choice)."""
    cut, queue, owned, unselected = len(prefix), [], 0, []
    for rec in records:
        suffix = rec.key[cut:]
        entry = contains.get(suffix)
        if entry is None:
            net = keys.parse_suffix(suffix, version)
            entry = contains[suffix] = (net, pool_containing(pools, net) is not None)
        if not entry[1]:
            unselected.append(entry[0])
            continue
        owned += 1
        if suffix not in tried and not affinity_is_full(rec):
            queue.append((entry[0], suffix))
    return queue, owned, unselected


def kept_plan(contains: dict, prefix: str, version: int, pools, kept: tuple) -> KeptPlan:
    """The plan of the kept affinity list ``kept`` = (its version, records), memoised per version, so
    that a node's full blocks cost nothing until its list changes."""
    memo_key = ("plan", prefix)
    planned = contains.get(memo_key)
    if planned is None or planned.version != kept[0]:
        queue, owned, _ = plan_blocks(kept[1], prefix, version, pools, contains)
        planned = contains[memo_key] = KeptPlan(kept[0], queue, owned)
    return planned


#: ``take_kept_block``: the kept block has free ordinals, but none this request's rule allows (an L2
#: segment's network, gateway, broadcast): it stays kept, unchanged, and its affinity hint says "room"
#: (it has some, for other requests), so the caller goes on to the next block without a read.
FULL_FOR_RULE = "full-for-rule"


def take_kept_block(cache, bkey: str, akey: str | None, prefix: str, affinity: str, need: int,
                    hstate: "HandleState", reserved, rule=None, now: float | None = None,
                    cooldown: float = 0.0) -> TakenBlock | None | str:
    """Up to ``need`` ordinals assigned in the block kept for ``bkey`` (taken out of the cache: the
    landed commit puts it back). None when nothing is kept, the block is not affine to ``affinity``
    (the holder's: ``host:node`` or a domain's; ``akey``, its affinity key, given), it gave nothing,
    or it fills and its affinity's hint is not kept: the caller reads. ``rule``: the request's
    ``L2Segment`` (None: every ordinal but reserved ones is usable)."""
    newest = cache.take(bkey)
    if newest is None or (akey and newest[1].affinity != affinity):
        return None
    block = newest[1]
    ords = block.auto_assign(need, hstate.handle, hstate.block_attrs(), reserved_in(block, reserved, rule), now,
                             cooldown)
    if not ords and rule is not None and block.unallocated:
        cache.put(bkey, newest[0], block)
        return FULL_FOR_RULE
    # The affinity record matters only if the block fills now (its hint must say so): a block in the
    # plan's queue is one whose hint says it has room.
    arec = cache.affinity(akey, prefix) if akey and not block.unallocated else None
    if not ords or (akey and arec is None and not block.unallocated):
        return None
    return TakenBlock(StoredBlock(block, newest[0]), ords, arec)


def assignment_ops(bkey: str, stored: StoredBlock, count: int, hstate: "HandleState", arec) -> tuple[list, bytes]:
    """The writes of ``count`` addresses just assigned in ``stored``'s block: the block on the revision
    it was planned from, the handle, and (``arec``: the block's affinity record) the full-hint when it
    changes. Returns (ops, the handle value written)."""
    block = stored.block
    block.sequence_number += 1
    hops, hvalue = hstate.op(block.cidr_text, count)
    hint = affinity_hint_op(arec, block)
    return [Update(bkey, block.to_json(), stored.revision), *hops, *([hint] if hint else [])], hvalue


class KeptPlanStale(Exception):
    """Internal: the commit planned on kept values lost its race; the caller hands over to
    ``FamilyAssigner(raced=True)``, whose first read takes the fences and the handle."""


def assign_kept(svc, snap, req, version: int, num: int, requested: tuple, hstate: "HandleState"):
    """The steady state: ``num`` addresses of one family from the first block of the node's kept plan
    (the block ``FamilyAssigner`` would try first, by the same memo), decided on kept values alone
    (no read) and landed in one commit fenced like every assignment. Returns the addresses, or None
    when no kept plan applies or the block cannot give all of them; raises ``KeptPlanStale`` when
    the commit lost its race. Either way the caller then runs ``FamilyAssigner``, which decides on
    fresh reads: this is the first attempt of that same decision, handed over instead of retried."""
    memo = snap.memo
    choice = memo.get(choice_key(req, version, requested)) if memo is not None else None
    if choice is None:
        return None
    group = choice.groups[0]  # the holder FamilyAssigner tries first: the node, or its domain
    cache, prefix = svc.cache, group.prefix
    kept = cache.affinities(prefix)
    queue = kept_plan(group.contains, prefix, version, group.pools, kept).queue if kept is not None else None
    if not queue:
        return None
    now = svc.clock()
    cooldown = _cooldown_here(cache, keys.block_prefix(version), queue, now, snap.cooldown)
    for _, suffix in queue:  # the first, unless it is full for the request's rule (kept values, no read)
        bkey = keys.block_prefix(version) + suffix
        taken = take_kept_block(cache, bkey, prefix + suffix, prefix, group.holder.affinity, num, hstate,
                                snap.reserved, req.unusable, now, cooldown)
        if taken is not FULL_FOR_RULE:
            break
    if taken is None or taken is FULL_FOR_RULE or len(taken.ordinals) < num:
        return None  # a block taken and changed is not put back: read next
    stored, ords = taken.stored, taken.ordinals
    ops, hvalue = assignment_ops(bkey, stored, num, hstate, taken.affinity)
    ops += snap.fence_ops(req.node)

    def landed(revision: int) -> None:
        cache.committed(ops, revision, {bkey: stored.block})
        hstate.landed(hvalue, revision)

    def attempt(n: int) -> Plan:
        if n:
            raise KeptPlanStale()
        return Plan(ops, True, landed, lambda: cache.forget(ops))

    run_cas(svc.store, attempt, "assign from a kept block")
    return [stored.block.interface(o) for o in ords]


def _cooldown_here(cache, block_prefix: str, queue: list, now: float, cooldown: float) -> float:
    """The cooldown for the first block of the kept plan: none when that block has only addresses
    released moments ago and so has every other block of the plan, all kept (nothing else is free
    in the holder's blocks: the cooling ones are used, still with no read, as ``FamilyAssigner``
    would after reading them). Else the cooldown, and ``FamilyAssigner`` decides if it must."""
    if not cooldown or cache.has_settled_free(block_prefix + queue[0][1], now, cooldown) is not False:
        return cooldown
    for _net, suffix in queue[1:]:
        if cache.has_settled_free(block_prefix + suffix, now, cooldown) is not False:
            return cooldown
    return 0.0


class HandleState:
    """What one request knows of its handle's record, shared by its families and blocks.

    Until the request has read or written the record it is taken to be absent: the first commit
    Creates it without a read. If it exists after all, that Create fails like a lost race and the
    retry reads it (issue 5: the handle costs no round trip of its own).

    ``exclusive`` (handles, possibly empty): the request is for a new handle. Its first commit also
    checks that none of ``exclusive`` exists, and a retry that finds the handle or one of them
    raises ``HandleInUseError`` instead of adding to it: the CNI plugin learns that an attachment
    is new from the commit itself, not from a read before it."""

    def __init__(self, handle: str | None, attrs=None, exclusive=None) -> None:
        self.handle, self.attrs = handle, attrs
        self.key = keys.handle_key(handle) if handle is not None else None
        self.record: Record | None = None  # as last read or written by this request
        self.absent = None if exclusive is None or self.key is None else [keys.handle_key(h) for h in exclusive]
        self.written = False  # a commit of this request wrote the record

    def block_attrs(self) -> dict | None:
        """What this request's block entries carry (None: the handle record holds the attributes)."""
        return entry_attrs(self.handle, self.record, self.attrs)

    def keys(self, fresh: bool) -> list[str]:
        if not fresh or self.key is None:
            return []
        return [self.key, *self.absent] if self.absent is not None and not self.written else [self.key]

    def seen(self, records: dict) -> None:
        if self.key is None:
            return
        if self.absent is not None and not self.written:
            taken = [k for k in (self.key, *self.absent) if k in records]
            if taken:
                raise HandleInUseError(f"handle {self.handle} is not new: {', '.join(taken)} exists")
        self.record = records.get(self.key)

    def op(self, cidr: str, count: int) -> tuple[list, bytes | None]:
        if self.key is None:
            return [], None
        if self.record is None:  # every assignment's first commit: the record is created
            value = new_handle_value(cidr, count, self.attrs)
            checks = [Check(k, 0) for k in self.absent] if self.absent is not None and not self.written else []
            return [Create(self.key, value), *checks], value
        op, value = handle_op(self.key, self.record, {cidr: count}, self.attrs)
        return ([op] if op is not None else []), value

    def landed(self, value: bytes | None, revision: int) -> None:
        if self.key is not None and value is not None:
            self.record = Record(self.key, value, revision)
            self.written = True
