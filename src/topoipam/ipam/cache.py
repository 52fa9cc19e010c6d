"""What an ``IpamService`` remembers between calls: decoded blocks and each host's affinity records.

Everything here is only ever the *starting point* of a compare-and-swap, never
an answer by itself:

* a block is kept at the newest revision this process has seen (read, or
  written by one of its commits). An assignment planned from it commits
  ``Update(block, revision)``; if anyone else wrote the block meanwhile the
  commit fails, the keys of that commit are forgotten, and the retry reads them.
  The block's own ``affinity`` field (fenced by that same revision) is what
  says the block is the host's, not the cached affinity list;
* a host's affinity records (one list per family) say which blocks to try
  first and which are full (the hint). A stale list can only make the service
  try a block that then fails its CAS, skip a block whose hint is out of date,
  or miss a block claimed meanwhile; so before deciding that the host needs a
  *new* block the service always lists the affinities fresh.

Absence is never kept (a key missing from the cache is read). A block is
handed out either as a copy (``get``) or taken out of the cache (``take``): the
taker changes it freely, no other thread plans from the same object, and the
landed commit puts the written value back. Thread-safe.
"""

from __future__ import annotations

from _thread import allocate_lock  # threading.Lock, without importing threading (CNI path)
from collections.abc import Iterable, Mapping, Sequence

from topoipam.core.block import Block
from topoipam.ipam.keys import HANDLE_PREFIX as HANDLES
from topoipam.store.base import Check, Create, Delete, Op, Record, Update

MAX_BLOCKS = 1024


class ServiceCache:
    def __init__(self, size: int = MAX_BLOCKS) -> None:
        self.size = size
        self._lock = allocate_lock()
        self._blocks: dict[str, tuple[int, Block]] = {}  # block key -> (revision, block), newest seen
        self._affinities: dict[str, dict[str, Record]] = {}  # affinity prefix -> {key: record}
        self._sorted: dict[str, tuple[int, list[Record]]] = {}  # affinity prefix -> (version, records in order)
        self._versions: dict[str, int] = {}
        self._counter = 0

    # -- blocks ---------------------------------------------------------------------
    def get(self, key: str, revision: int) -> Block | None:
        """The decoded block at exactly ``revision`` (a revision names one write: never reused)."""
        with self._lock:  # so that no thread takes the block (and changes it) while it is copied
            hit = self._blocks.get(key)
            return hit[1].copy() if hit is not None and hit[0] == revision else None

    def take(self, key: str) -> tuple[int, Block] | None:
        """(revision, block) kept for ``key``, removed from the cache: the caller may change it without a
        copy, and no other thread plans from it meanwhile (they read the block instead). A landed
        commit puts the written value back."""
        with self._lock:  # not while get() copies it
            return self._blocks.pop(key, None)

    def has_settled_free(self, key: str, now: float, cooldown: float) -> bool | None:
        """Whether the block kept for ``key`` has a free ordinal not released within ``cooldown``
        seconds of ``now`` (None: nothing kept). For the release cooldown's choice only."""
        with self._lock:  # not while a taker changes it
            hit = self._blocks.get(key)
            if hit is None:
                return None
            rel = hit[1].released_at
            return any(o not in rel or now - rel[o] >= cooldown for o in hit[1].unallocated)

    def put(self, key: str, revision: int, block: Block) -> None:
        """Keep ``block`` as of ``revision`` unless a newer one is kept (a slow read must not replace
        what a later commit wrote). The caller hands over ``block``: it must not change it afterwards."""
        with self._lock:
            hit = self._blocks.get(key)
            if hit is not None and hit[0] > revision:
                return
            if hit is None and len(self._blocks) >= self.size:
                self._blocks.pop(next(iter(self._blocks)))  # oldest entry
            self._blocks[key] = (revision, block)

    # -- affinity lists -------------------------------------------------------------
    def affinities(self, prefix: str) -> tuple[int, list[Record]] | None:
        """(version, the host's affinity records under ``prefix`` in key order), as last listed and
        since changed by this service's own commits; None if not kept. The version grows with every
        change, so that what is derived from a list can be kept with it."""
        listed = self._sorted.get(prefix)  # the common case, without the lock: a (version, list) pair
        if listed is not None and listed[0] == self._versions.get(prefix) and prefix in self._affinities:
            return listed  # read before a concurrent change is the state just before it: consistent
        with self._lock:  # other threads' commits change these dicts (committed, forget)
            found = self._affinities.get(prefix)
            if found is None:
                return None
            listed = self._sorted.get(prefix)
            if listed is None or listed[0] != self._versions.get(prefix):
                listed = self._sorted[prefix] = (self._versions.get(prefix), [found[k] for k in sorted(found)])
            return listed

    def affinity(self, key: str, prefix: str) -> Record | None:
        found = self._affinities.get(prefix)  # dict reads: atomic, no lock needed
        return None if found is None else found.get(key)

    def put_affinities(self, prefix: str, records: Iterable[Record]) -> None:
        with self._lock:
            if prefix not in self._affinities and len(self._affinities) >= self.size:
                oldest = next(iter(self._affinities))
                self._affinities.pop(oldest)
                self._sorted.pop(oldest, None)
            self._affinities[prefix] = {r.key: r for r in records}
            self._changed(prefix)

    def _changed(self, prefix: str) -> None:
        self._counter += 1
        self._versions[prefix] = self._counter

    def clear_affinities(self) -> None:
        with self._lock:
            self._affinities.clear()
            self._sorted.clear()

    # -- outcome of a commit ----------------------------------------------------------
    def committed(self, ops: Sequence[Op], revision: int, blocks: Mapping[str, Block] | None = None) -> None:
        """Apply one of our landed commits: ``blocks`` (key -> the decoded value written, handed over)
        are kept at ``revision``, deleted blocks are dropped, the affinity lists follow."""
        for key, block in (blocks or {}).items():
            self.put(key, revision, block)
        with self._lock:
            for op in ops:
                if type(op) is Check or (blocks and op.key in blocks) or op.key.startswith(HANDLES):
                    continue
                prefix = _parent(op.key)
                found = self._affinities.get(prefix)
                if found is not None:
                    if isinstance(op, (Create, Update)):
                        found[op.key] = Record(op.key, op.value, revision)
                    elif isinstance(op, Delete):
                        found.pop(op.key, None)
                    self._changed(prefix)
                else:  # a block deleted, or written without its decoded value here: read it next time
                    self._blocks.pop(op.key, None)

    def forget(self, ops: Sequence[Op]) -> None:
        """A commit of these ops failed (lost race, or outcome unknown): read its keys fresh next time."""
        with self._lock:
            for op in ops:
                self._blocks.pop(op.key, None)
                if self._affinities.pop(_parent(op.key), None) is not None:
                    self._changed(_parent(op.key))


def _parent(key: str) -> str:
    """The listing prefix a key belongs to (an affinity key's host prefix: network suffixes hold no '/')."""
    return key[:key.rfind("/") + 1]
