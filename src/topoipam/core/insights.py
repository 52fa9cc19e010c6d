"""Pure decisions behind ``ipam coverage|explain|headroom|drift``: room for a node, unclaimed
space of a pool, selector overlaps, and the naive exhaustion forecast.

Pool choice itself stays in ``core.pools``: the analyses use the allocator's ``rank_pools``.
No I/O and no clock: callers pass ``now``.
"""

from __future__ import annotations

import calendar
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence

from topoipam.core import blockgen
from topoipam.core.pools import PoolChoice, Rejection, selects_node
from topoipam.model.types import ASSIGN_AUTOMATIC, IPPool
from topoipam.structs import dataclass, field

def node_selected(pool: IPPool, labels: Mapping[str, str]) -> bool:
    """Enabled, Automatic and its node selector matches (namespace selectors aside)."""
    return not pool.spec.disabled and pool.spec.assignment_mode == ASSIGN_AUTOMATIC and selects_node(pool, labels)


def namespace_limited(choice: PoolChoice, labels: Mapping[str, str]) -> list[Rejection]:
    """Rejections of pools that select the node but only some namespaces."""
    return [r for r in choice.rejected if r.pool.spec.namespace_selector and node_selected(r.pool, labels)
            and r.reason.startswith("namespace selector")]


@dataclass(frozen=True)
class Unclaimed:
    blocks: int  # blocks of the pool with no block record
    addresses: int  # assignable addresses in them (reserved ones excluded)


def unclaimed(pool_net, block_size: int, claimed: Iterable, reserved: Sequence) -> Unclaimed:
    """The pool's blocks not claimed yet and their addresses less reservations. Counted by
    arithmetic (an IPv6 pool may have 2**58 blocks): reservations are merged, clipped to the pool,
    and what of them lies in claimed blocks is not subtracted twice."""
    claimed = [b for b in claimed if b.prefixlen == block_size]
    total_blocks = blockgen.num_blocks(pool_net, block_size)
    per_block = 1 << (pool_net.max_prefixlen - block_size)
    free = (total_blocks - len(claimed)) * per_block
    for lo, hi in reserved_ranges(pool_net, reserved):
        covered = hi - lo + 1
        for b in claimed:
            blo, bhi = max(lo, int(b.network_address)), min(hi, int(b.broadcast_address))
            if blo <= bhi:
                covered -= bhi - blo + 1
        free -= covered
    return Unclaimed(total_blocks - len(claimed), max(free, 0))


def reserved_ranges(net, reserved: Sequence) -> list[tuple[int, int]]:
    """The reserved networks merged and clipped to ``net``, as inclusive (first, last) integers."""
    same = [r for r in reserved if r.version == net.version and r.overlaps(net)]
    lo_net, hi_net = int(net.network_address), int(net.broadcast_address)
    return [(max(int(r.network_address), lo_net), min(int(r.broadcast_address), hi_net))
            for r in ipaddress.collapse_addresses(same)]


def reserved_count(net, reserved: Sequence) -> int:
    """How many addresses of ``net`` an IPReservation covers (overlapping reservations counted once)."""
    return sum(hi - lo + 1 for lo, hi in reserved_ranges(net, reserved))


@dataclass
class Room:
    """What one node can still get from one pool, per the allocator's order of attempts."""
    pool: str
    affine_free: int = 0  # free in the node's affine blocks
    unclaimed_free: int = 0  # in unclaimed blocks (0 when claims are not allowed)
    reclaimable: int = 0  # in empty blocks other nodes have held for over a minute (taken over like a claim)
    borrowable: int = 0  # free in other nodes' blocks (0 with strict affinity)
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.affine_free + self.unclaimed_free + self.reclaimable + self.borrowable

    def describe(self) -> str:
        parts = [f"{self.affine_free} free in the node's affine blocks"]
        if self.unclaimed_free:
            parts.append(f"{self.unclaimed_free} in unclaimed blocks")
        if self.reclaimable:
            parts.append(f"{self.reclaimable} in empty blocks of other nodes it would take over")
        if self.borrowable:
            parts.append(f"{self.borrowable} only by borrowing from other nodes' blocks")
        return ", ".join(parts + self.notes)


@dataclass(frozen=True)
class ClaimRules:
    """Whether the allocator may claim new blocks and borrow, as ``FamilyAssigner._run`` decides."""
    owned: int  # the node's affine blocks in the chosen pools
    limit: int  # blocks per host
    auto_allocate: bool
    strict: bool

    @property
    def limit_hit(self) -> bool:
        return self.owned >= self.limit

    @property
    def may_claim(self) -> bool:
        return not self.limit_hit and self.auto_allocate

    @property
    def may_borrow(self) -> bool:
        return not self.strict and not self.limit_hit

    def notes(self) -> list[str]:
        out = []
        if self.limit_hit:
            out.append(f"limit of {self.limit} blocks reached for this node")
        elif not self.auto_allocate:
            out.append("automatic block allocation is off")
        return out


def room(pool: str, affine_free: int, unclaimed_free: int, reclaimable: int, others_free: int,
         rules: ClaimRules) -> Room:
    """``others_free``: free in blocks not affine to the node, ``reclaimable`` included (those are
    taken over whole when claims are allowed, else only borrowed from)."""
    claim = rules.may_claim
    borrow = others_free - (reclaimable if claim else 0)
    return Room(pool, affine_free, unclaimed_free if claim else 0, reclaimable if claim else 0,
                borrow if rules.may_borrow else 0, rules.notes())


def overlaps(selected: Mapping[str, Sequence[str]]) -> list[tuple[str, str, list[str]]]:
    """Pairs of pools (name order) that both select some node: (first, second, nodes both select).
    ``selected``: pool name -> nodes it selects."""
    names = sorted(selected)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = sorted(set(selected[a]) & set(selected[b]))
            if both:
                out.append((a, b, both))
    return out


def parse_go_timestamp(text: str) -> float | None:
    """Seconds since the epoch of Calico's ``2024-01-02 03:04:05.123456789 +0000 UTC`` (or RFC 3339);
    None when the text is neither."""
    m = re.match(r"^(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?: \+0000 UTC|Z|[+]00:?00)?$", text or "")
    if m is None:
        return None
    y, mo, d, h, mi, s = (int(x) for x in m.groups()[:6])
    frac = float("0." + m.group(7)) if m.group(7) else 0.0
    try:
        return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) + frac
    except (ValueError, OverflowError):
        return None


@dataclass(frozen=True)
class Forecast:
    rate_per_day: float  # allocations per day over the observed window
    days_left: float | None  # None: nothing left to exhaust, or no growth


def forecast(times: Sequence[float], free: int, now: float) -> Forecast | None:
    """Naive linear forecast: the addresses still held were allocated at ``times``; at the same rate
    (held ones since the first of them until ``now``), ``free`` lasts ``days_left``. None without
    history (fewer than two times, or no time span)."""
    if len(times) < 2:
        return None
    span = now - min(times)
    if span <= 0:
        return None
    rate = len(times) / span * 86400.0
    return Forecast(rate, free / rate if rate > 0 else None)
