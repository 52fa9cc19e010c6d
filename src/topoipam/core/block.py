"""The allocation block as a pure value (Calico's AllocationBlock).

A block is a CIDR (a /26 by default) whose addresses are numbered by *ordinal*
(address - network address; ordinal 0, the network address itself, is
allocatable as in Calico, unless the request's ``L2Segment`` rule says otherwise). It records which ordinals are allocated and to
which attribute entry (handle and secondary attributes; identical entries are
shared), the ordered list of free ordinals (``unallocated``: lowest first in a
fresh block, released ordinals appended so that they are reused last), a
sequence number that grows on every update, the sequence number at which
each ordinal was allocated (the fence a late release must present), and when
each recently freed ordinal was released (``released_at``, stored as
``"releasedAt": {ordinal: unix seconds}``, only while non-empty): auto-assign
passes over an ordinal released less than ``cooldown`` seconds ago (the
service gives such ordinals out only when the node's blocks have nothing else
free), so that a stale ARP/conntrack entry or a holder a
slow GC misjudged cannot meet a new holder of the same address at once.

No I/O, clock or environment: the service passes claim times and initial
sequence numbers in. ``to_json``/``from_json`` are the stored form
(Calico's etcd field names).
"""

from __future__ import annotations

import ipaddress
from topoipam import leanjson
from topoipam.structs import dataclass, field
from functools import lru_cache
from collections.abc import Iterable, Mapping

from topoipam.core.affinity import holder_of, host_holder
from topoipam.errors import AlreadyExistsError, ValidationError

#: Handle of Windows' host-reserved addresses; a block holding only these counts as empty.
WINDOWS_RESERVED_HANDLE = "windows-reserved-ipam-handle"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def host_affinity(node: str) -> str:
    return host_holder(node).affinity


def affinity_node(affinity: str | None) -> str | None:
    """``"host:kube-node-0"`` -> ``"kube-node-0"``; anything else (a domain, none) -> None. The
    affinity's holder is ``core.affinity.holder_of``."""
    holder = holder_of(affinity)
    return holder.node if holder is not None else None


@dataclass
class ReleaseOutcome:
    released: list[int] = field(default_factory=list)  # ordinals freed
    not_allocated: list[int] = field(default_factory=list)  # were free already
    fenced: list[int] = field(default_factory=list)  # held under another handle / sequence number
    by_handle: dict[str, int] = field(default_factory=dict)  # handle -> ordinals freed


@dataclass
class Block:
    cidr: Network
    affinity: str | None
    claim_time: str | None  # RFC 3339, as written by the service
    allocations: list[int | None]
    unallocated: list[int]
    attributes: list[dict]
    sequence_number: int
    seq_for_allocation: dict[int, int]
    released_at: dict = field(default_factory=dict)  # ordinal -> release time, whole unix seconds (rounded up)
    # Encoded forms kept so that to_json, run on every assignment, re-encodes nothing that did not
    # change. ``allocations``, ``unallocated``, ``attributes`` and ``seq_for_allocation`` are changed
    # only by the methods below, which keep these in step (or clear them: encoded again when needed).
    # _attr_json: one text per attribute entry (entries never change in place);
    # _attr_keys: (handle, attrs) -> index of its attribute entry;
    # _seq_json: [number of entries encoded, text] of seq_for_allocation;
    # _alloc_json: one text per ordinal; _unalloc_json: [text] of unallocated (empty list: not built).
    _attr_json: list = field(default_factory=list, compare=False, repr=False)
    _attr_keys: dict = field(default_factory=dict, compare=False, repr=False)
    _seq_json: list = field(default_factory=list, compare=False, repr=False)
    _alloc_json: list = field(default_factory=list, compare=False, repr=False)
    _unalloc_json: list = field(default_factory=list, compare=False, repr=False)
    _cidr_json: str = field(default="", compare=False, repr=False)
    _head_json: list = field(default_factory=list, compare=False, repr=False)  # [affinity, claim_time, text]
    _rel_json: list = field(default_factory=list, compare=False, repr=False)  # [text] of released_at; empty: not built

    @classmethod
    def new(cls, cidr: Network, affinity: str | None, claim_time: str | None, sequence_number: int) -> "Block":
        size = cidr.num_addresses
        return cls(cidr, affinity, claim_time, [None] * size, list(range(size)), [], sequence_number, {})

    # -- addresses and ordinals -------------------------------------------------
    @property
    def cidr_text(self) -> str:
        """``str(cidr)``, kept (the CIDR of a block never changes)."""
        text = self._cidr_json
        if not text:
            text = self._cidr_json = str(self.cidr)
        return text

    @property
    def size(self) -> int:
        return len(self.allocations)

    def ordinal(self, ip: Address) -> int:
        ip = ipaddress.ip_address(ip)
        if ip not in self.cidr:
            raise ValidationError(f"address {ip} is not in block {self.cidr}")
        return int(ip) - int(self.cidr.network_address)

    def address(self, ordinal: int) -> Address:
        return self.cidr.network_address + ordinal

    def interface(self, ordinal: int):
        """The address with the block's prefix, as results carry it (``10.0.0.5/26``).

        Built as ``IPv4Interface.__init__`` builds one, but on the block's own network (immutable,
        and exactly the interface's network) instead of constructing that network again: that was
        two thirds of the cost, on every assignment. tests/test_core_block.py pins the result to
        ``ipaddress``'s own constructor for both families."""
        net = self.cidr
        cls, address = _INTERFACE[net.version]
        iface = cls.__new__(cls)
        address.__init__(iface, int(net.network_address) + ordinal)
        iface.network, iface.netmask, iface._prefixlen = net, net.netmask, net.prefixlen
        return iface

    # -- queries ------------------------------------------------------------------
    def entry(self, ordinal: int) -> dict:
        """The attribute entry of an allocated ordinal ({} if free, or if its index names no entry: a
        damaged block, which ``ipam check`` reports as such, reads as holding no handle there)."""
        idx = self.allocations[ordinal]
        if type(idx) is not int or not 0 <= idx < len(self.attributes):
            return {}
        return self.attributes[idx]

    def handle_of(self, ordinal: int) -> str | None:
        return self.entry(ordinal).get("handle_id")

    def attrs_of(self, ordinal: int, on_handle: Mapping[str, Mapping[str, str]] | None = None) -> dict:
        """The allocation's attributes: its entry's own ``secondary``; an entry without one has those
        its handle record carries (``on_handle``: handle -> attributes, see ``_attribute_index``)."""
        entry = self.entry(ordinal)
        if not entry:
            return {}
        if "secondary" in entry:
            return dict(entry["secondary"] or {})
        return dict((on_handle or {}).get(entry.get("handle_id"), {}))

    def damage(self) -> str:
        """Why this block cannot be assigned from ("" if it can): every ordinal must be allocated to
        an attribute entry that exists, or free exactly once (``ipam check`` names each ordinal).
        Run on every decode off the kept path, so written with builtins rather than Python loops."""
        size, allocs, free = self.cidr.num_addresses, self.allocations, self.unallocated
        if len(allocs) != size:
            return f"it lists {len(allocs)} allocations for the {size} addresses of {self.cidr}"
        used = [idx for idx in allocs if idx is not None]
        if used and (set(map(type, used)) != {int} or min(used) < 0 or max(used) >= len(self.attributes)):
            return "an allocation names an attribute entry that does not exist"
        if free and (set(map(type, free)) != {int} or min(free) < 0 or max(free) >= size
                     or len(set(free)) != len(free)):
            return "its free list holds ordinals outside the block or more than once"
        if len(free) + len(used) != size or [allocs[o] for o in free].count(None) != len(free):
            return "its free list and its allocations do not account for each ordinal exactly once"
        return ""

    def allocated_ordinals(self) -> list[int]:
        return [o for o, idx in enumerate(self.allocations) if idx is not None]

    @property
    def in_use(self) -> int:
        return sum(1 for idx in self.allocations if idx is not None)

    def free_count(self, reserved: Iterable[int] = ()) -> int:
        """Free ordinals that auto-assign may hand out (reserved ones excluded)."""
        reserved = set(reserved)
        return sum(1 for o in self.unallocated if o not in reserved)

    def is_empty(self) -> bool:
        """No allocation except Windows' host-reserved addresses."""
        return all(idx is None or self.handle_of(o) == WINDOWS_RESERVED_HANDLE
                   for o, idx in enumerate(self.allocations))  # stops at the first workload

    def ordinals_of_handle(self, handle: str) -> list[int]:
        return [o for o in self.allocated_ordinals() if self.handle_of(o) == handle]

    # -- changes ------------------------------------------------------------------
    def _attribute_index(self, handle: str | None, attrs: Mapping[str, str] | None) -> int:
        """The index of the entry for (handle, attrs), appended if there is none: identical entries are
        shared. Found through ``_attr_keys`` (rebuilt when it does not cover every entry).

        ``attrs`` None: the entry carries no ``secondary``; the attributes are those of the handle
        record (the service keeps a workload's attributes there, written once, rather than in a block
        rewritten on every assignment). A mapping, even empty, is the allocation's own."""
        keys = self._attr_keys
        if len(keys) != len(self.attributes):
            keys.clear()
            for i, existing in enumerate(self.attributes):
                keys.setdefault(_entry_key(existing), i)
        key = (handle, None if attrs is None else tuple(sorted(attrs.items())))
        found = keys.get(key)
        if found is not None:
            return found
        entry: dict = {}
        if handle is not None:
            entry["handle_id"] = handle
        if attrs is not None:
            entry["secondary"] = dict(attrs)
        if len(self._attr_json) == len(self.attributes):  # the encodings cover every entry: keep it so
            self._attr_json.append(f'{{"handle_id":{dumps_str(handle)}}}' if len(entry) == 1 and handle is not None
                                   else dumps_compact(entry))
        self.attributes.append(entry)
        keys[key] = len(self.attributes) - 1
        return len(self.attributes) - 1

    def _encoded_attributes(self) -> str:
        cache = self._attr_json
        if len(cache) != len(self.attributes) or None in cache:
            cache[:] = [dumps_compact(entry) for entry in self.attributes]
        return "[" + ",".join(cache) + "]"

    def auto_assign(self, n: int, handle: str | None, attrs: Mapping[str, str] | None,
                    reserved: Iterable[int] = (), now: float | None = None, cooldown: float = 0.0) -> list[int]:
        """Take up to ``n`` ordinals from the front of ``unallocated``; reserved ones stay in place, and
        so do ordinals released less than ``cooldown`` seconds before ``now``."""
        rel = self.released_at
        if rel and now is not None and cooldown > 0:
            # Released ordinals are appended to the free list, so the front is rarely one: check it first.
            if reserved or any(o in rel for o in self.unallocated[:n]):
                reserved = self._with_cooling(reserved, now, cooldown)
        if not reserved:
            chosen = self.unallocated[:n]
            del self.unallocated[:n]
            if self._unalloc_json and chosen:  # drop the first len(chosen) numbers from the text
                self._unalloc_json[0] = self._unalloc_json[0].split(",", len(chosen))[-1] if self.unallocated else ""
        else:
            reserved = reserved if isinstance(reserved, (set, frozenset)) else set(reserved)
            chosen = self._take_after_reserved(n, reserved)
            if chosen is None:
                chosen = self._take_around_reserved(n, reserved)
        if chosen:
            idx = self._attribute_index(handle, attrs)
            seq, parts, text = self.seq_for_allocation, self._alloc_json, str(idx)
            for o in chosen:
                self.allocations[o] = idx
                if parts:
                    parts[o] = text
                self._set_seq(o)
            if rel:
                self._forget_released(chosen)
        return chosen

    def _with_cooling(self, reserved: Iterable[int], now: float, cooldown: float) -> frozenset[int]:
        """``reserved`` plus the ordinals released less than ``cooldown`` seconds before ``now``."""
        return frozenset(reserved).union([o for o, t in self.released_at.items() if now - t < cooldown])

    def _forget_released(self, ordinals: Iterable[int]) -> None:
        rel = self.released_at
        for o in ordinals:
            if rel.pop(o, None) is not None:
                self._rel_json.clear()

    def _take_after_reserved(self, n: int, reserved) -> list[int] | None:
        """The usual case under a rule (an L2 segment's network and gateway ordinals stay free at the
        front of ``unallocated`` for good): the ``n`` ordinals right after a leading run of reserved
        ones, cut out of the list and its text in place. None when reserved ones are interleaved."""
        un = self.unallocated
        k = 0
        while k < len(un) and un[k] in reserved:
            k += 1
        chosen = un[k:k + n]
        if any(o in reserved for o in chosen):
            return None
        del un[k:k + n]
        if self._unalloc_json and chosen:
            parts = self._unalloc_json[0].split(",", k + len(chosen))
            self._unalloc_json[0] = ",".join(parts[:k] + parts[k + len(chosen):])
        return chosen

    def _take_around_reserved(self, n: int, reserved) -> list[int]:
        """The first ``n`` free ordinals not reserved, wherever reserved ones lie (the list is rebuilt)."""
        self._unalloc_json.clear()
        chosen = []
        for o in self.unallocated:
            if len(chosen) == n:
                break
            if o not in reserved:
                chosen.append(o)
        if chosen:
            taken = set(chosen)
            self.unallocated = [o for o in self.unallocated if o not in taken]
        return chosen

    def _set_seq(self, ordinal: int) -> None:
        """Record the sequence number ``ordinal`` is allocated at, and its encoding when that is an append."""
        seq, cache = self.seq_for_allocation, self._seq_json
        if ordinal in seq or not cache or cache[0] != len(seq):
            cache.clear()  # an update in place, or no encoding to extend: encode again when needed
        else:
            fragment = f'"{ordinal}":{self.sequence_number}'
            cache[:] = [len(seq) + 1, f"{cache[1]},{fragment}" if cache[1] else fragment]
        seq[ordinal] = self.sequence_number

    def assign(self, ordinal: int, handle: str | None, attrs: Mapping[str, str] | None) -> None:
        """Allocate one given ordinal (reservations are not consulted: explicit requests win, as in Calico)."""
        if self.allocations[ordinal] is not None:
            raise AlreadyExistsError(
                f"resource already exists: {self.address(ordinal)} (address already assigned in block {self.cidr})")
        self.unallocated.remove(ordinal)
        self._unalloc_json.clear()
        if self.released_at:
            self._forget_released((ordinal,))
        self.allocations[ordinal] = self._attribute_index(handle, attrs)
        if self._alloc_json:
            self._alloc_json[ordinal] = str(self.allocations[ordinal])
        self._set_seq(ordinal)

    def release(self, ordinals: Iterable[int], handle: str | None = None, seq: int | None = None,
                now: float | None = None, keep: float = 0.0) -> ReleaseOutcome:
        """Free ``ordinals``. With ``handle``/``seq``, an ordinal held under another handle or allocated
        at another sequence number is left alone (a late release must not free a reused address).
        With ``now``, each freed ordinal's release time is recorded (for the cooldown) and records
        older than ``keep`` seconds are dropped (at most one per ordinal is kept either way)."""
        out = ReleaseOutcome()
        for o in dict.fromkeys(ordinals):  # de-duplicated, order kept
            if self.allocations[o] is None:
                out.not_allocated.append(o)
                continue
            owner = self.handle_of(o)
            if (handle is not None and owner != handle) or (seq is not None and self.seq_for_allocation.get(o) != seq):
                out.fenced.append(o)
                continue
            self.allocations[o] = None
            self.unallocated.append(o)  # reused last
            if self._alloc_json:
                self._alloc_json[o] = "null"
            if self._unalloc_json:
                self._unalloc_json[0] = f"{self._unalloc_json[0]},{o}" if self._unalloc_json[0] else str(o)
            self.seq_for_allocation.pop(o, None)
            out.released.append(o)
            if owner is not None:
                out.by_handle[owner] = out.by_handle.get(owner, 0) + 1
        if out.released:
            self._seq_json.clear()
            self._compact_attributes()
            if now is not None:
                self._record_released(out.released, now, keep)
        return out

    def _record_released(self, ordinals: list[int], now: float, keep: float) -> None:
        rel, stamp = self.released_at, -int(-now // 1)  # rounded up: the cooldown is never shortened
        for o in [o for o, t in rel.items() if now - t >= keep]:
            del rel[o]
        for o in ordinals:
            rel[o] = stamp
        self._rel_json.clear()

    def _compact_attributes(self) -> None:
        """Drop attribute entries no ordinal refers to; renumber the rest in order."""
        used = sorted({idx for idx in self.allocations if idx is not None})
        if len(used) == len(self.attributes):
            return
        renumber = {old: new for new, old in enumerate(used)}
        cache = self._attr_json
        self._attr_json = [cache[old] for old in used] if len(cache) == len(self.attributes) else []
        self._attr_keys = {}
        self.attributes = [self.attributes[old] for old in used]
        self.allocations = [None if idx is None else renumber[idx] for idx in self.allocations]
        self._alloc_json = []

    def copy(self) -> "Block":
        """An independent copy (attribute entries are never changed in place, so they are shared)."""
        return Block(self.cidr, self.affinity, self.claim_time, list(self.allocations), list(self.unallocated),
                     list(self.attributes), self.sequence_number, dict(self.seq_for_allocation),
                     dict(self.released_at), list(self._attr_json), dict(self._attr_keys), list(self._seq_json), list(self._alloc_json),
                     list(self._unalloc_json), self._cidr_json, list(self._head_json), list(self._rel_json))

    # -- stored form --------------------------------------------------------------
    def _encoded_seq(self) -> str:
        seq, cache = self.seq_for_allocation, self._seq_json
        if not cache or cache[0] != len(seq):
            cache[:] = [len(seq), ",".join([f'"{k}":{v}' for k, v in seq.items()])]
        return cache[1]

    def _encoded_allocations(self) -> str:
        parts = self._alloc_json
        if len(parts) != len(self.allocations):
            parts[:] = ["null" if idx is None else str(idx) for idx in self.allocations]
        return ",".join(parts)

    def _encoded_unallocated(self) -> str:
        if not self._unalloc_json:
            self._unalloc_json.append(",".join(map(str, self.unallocated)))
        return self._unalloc_json[0]

    def to_json(self) -> bytes:
        """The stored form: Calico's field names, compact; written on every assignment, so the parts
        that rarely change (attribute entries, the allocation sequence numbers) are encoded once."""
        head = self._head_json
        if not head or head[0] != self.affinity or head[1] != self.claim_time:  # encoded again only on a change
            head[:] = [self.affinity, self.claim_time,
                       f'{{"cidr":"{self.cidr_text}","affinity":{dumps_compact(self.affinity)},'
                       f'"affinityClaimTime":{dumps_compact(self.claim_time)},']
        return (f'{head[2]}"allocations":[{self._encoded_allocations()}],'
                f'"unallocated":[{self._encoded_unallocated()}],"attributes":{self._encoded_attributes()},'
                f'"sequenceNumber":{int(self.sequence_number)},'
                f'"sequenceNumberForAllocation":{{{self._encoded_seq()}}},{self._encoded_released()}"deleted":false}}'
                ).encode()

    def _encoded_released(self) -> str:
        """``"releasedAt":{...},`` while any release time is kept, else nothing (Calico's form)."""
        if not self.released_at:
            return ""
        cache = self._rel_json
        if not cache:
            cache.append('"releasedAt":{' + ",".join([f'"{o}":{t}' for o, t in self.released_at.items()]) + "},")
        return cache[0]

    @classmethod
    def from_json(cls, data: bytes) -> "Block":
        d = leanjson.loads(data)
        return cls(
            cidr=_network(d["cidr"]),
            affinity=d.get("affinity"),
            claim_time=d.get("affinityClaimTime"),
            allocations=list(d["allocations"]),
            unallocated=list(d["unallocated"]),
            attributes=list(d.get("attributes") or []),
            sequence_number=int(d.get("sequenceNumber", 0)),
            seq_for_allocation={int(k): int(v) for k, v in (d.get("sequenceNumberForAllocation") or {}).items()},
            released_at={int(k): int(v) for k, v in (d.get("releasedAt") or {}).items()},
        )


#: Compact JSON, as every stored record is written (also used by ipam/blocks.py).
dumps_compact = leanjson.compact_encoder(check_circular=False)
dumps_str = leanjson.quote_ascii  # dumps_compact of a str, without its Python frame
_INTERFACE = {4: (ipaddress.IPv4Interface, ipaddress.IPv4Address), 6: (ipaddress.IPv6Interface, ipaddress.IPv6Address)}


def _entry_key(entry: dict) -> tuple:
    """The (handle, attrs) key of an attribute entry; an entry with other fields matches no request."""
    if not entry.keys() <= {"handle_id", "secondary"}:
        return (object(),)
    attrs = entry.get("secondary")
    key = entry.get("handle_id"), (None if "secondary" not in entry else tuple(sorted((attrs or {}).items())))
    try:
        hash(key)
    except TypeError:  # not string attributes (foreign data): never shared
        return (object(),)
    return key


@lru_cache(maxsize=4096)
def _network(text: str) -> Network:
    return ipaddress.ip_network(text)  # networks are immutable: parse each block CIDR once


def reserved_ordinals(cidr: Network, reserved: Iterable[Network]) -> frozenset[int]:
    """Ordinals of ``cidr`` covered by any reserved network."""
    base = int(cidr.network_address)
    last = int(cidr.broadcast_address)
    out: set[int] = set()
    for net in reserved:
        if net.version != cidr.version:
            continue
        lo = max(base, int(net.network_address))
        hi = min(last, int(net.broadcast_address))
        if lo <= hi:
            out.update(range(lo - base, hi - base + 1))
    return frozenset(out)


#: ``L2Segment.gateway``: each block's first usable address (network address + 1) is its gateway.
FIRST_USABLE = "first-usable"


@dataclass(frozen=True)
class L2Segment:
    """A request's rule for the ordinals it may not be given: its workload sits on one L2 segment with
    the block's prefix (a bridge, macvlan or ipvlan), so the prefix's network address, IPv4's
    broadcast address and the segment's gateway are not host addresses (host-local's rule: IPv6
    keeps its last address). ``gateway4``/``gateway6``: ``FIRST_USABLE`` (each block's own), an
    address (excluded where it lies in a block), or None (no gateway). Blocks of 2 addresses or
    fewer (/31, /32, /127, /128) are point-to-point: only an explicit gateway is excluded there.
    Without a rule (routed main plugins, Calico's way) every ordinal is usable."""

    gateway4: object = FIRST_USABLE
    gateway6: object = FIRST_USABLE

    def gateway_of(self, cidr: Network) -> Address | None:
        """The gateway a workload with an address of ``cidr`` is given."""
        gateway = self.gateway4 if cidr.version == 4 else self.gateway6
        if gateway == FIRST_USABLE:
            return cidr.network_address + 1 if cidr.num_addresses > 2 else None
        return gateway

    def unusable(self, cidr: Network) -> frozenset[int]:
        return _segment_unusable(cidr, self.gateway_of(cidr))


@lru_cache(maxsize=4096)
def _segment_unusable(cidr: Network, gateway: Address | None) -> frozenset[int]:
    size = cidr.num_addresses
    out = set()
    if size > 2:
        out.add(0)
        if cidr.version == 4:
            out.add(size - 1)
    if gateway is not None and gateway.version == cidr.version and gateway in cidr:
        out.add(int(gateway) - int(cidr.network_address))
    return frozenset(out)
