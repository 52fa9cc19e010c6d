"""An optimistic read cache for the agent's assignment path: blocks and the node's own affinities.

``BlockCacheStore(inner, node)`` is a ``Store`` in front of the datastore. It
remembers

* block records (``.../assignment/...``) it has read or written, and
* the complete list of this node's affinity records (one list per family),

and answers reads of them from memory for ``ttl`` seconds after the datastore
last confirmed them (a read, or a commit of ours that wrote them). Everything
else goes to the datastore.

Why this is safe: a cached record is only ever the *starting point* of a
compare-and-swap. Every write the IPAM service plans from it is committed
conditionally on the cached revision, so if anyone else changed the block
meanwhile the commit fails with ``ConflictError``, this wrapper forgets every
key of that commit, and the service's one retry loop reads them fresh and
plans again. A stale cache costs one failed commit, never a wrong address:
invariants 1 and 2 of DESIGN.md hold exactly as without it. Absence is never
cached (a missing key is always read again), so nothing is ever created over
a record we did not see. A commit whose outcome is unknown (datastore
unavailable) also forgets its keys.

What it saves: in steady state an assignment from an affine block reads
neither the affinity list nor the block (they are the ones this agent wrote
last), so it costs the handle read and the commit: two round trips instead
of three.

The agent uses it only for ADD and DEL (whose every decision ends in a
compare-and-swap); CHECK, GC and STATUS read the datastore directly.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterable, Sequence

from topoipam.errors import TopoipamError
from topoipam.ipam import keys
from topoipam.store.base import Create, Delete, Op, Record, Store, Update

BLOCKS = keys.ROOT + "assignment/"
DEFAULT_TTL = 5.0  # seconds a record is used after the datastore last confirmed it


class BlockCacheStore(Store):
    def __init__(self, inner: Store, node: str, *, ttl: float = DEFAULT_TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.url = inner.url
        self.ttl = ttl
        self.clock = clock
        self._affinity_prefixes = (keys.affinity_prefix(node, 4), keys.affinity_prefix(node, 6))
        self._lock = threading.Lock()
        self._blocks: dict[str, tuple[float, Record]] = {}  # key -> (confirmed at, record)
        self._lists: dict[str, tuple[float, dict[str, Record]]] = {}  # affinity prefix -> (listed at, records)
        self._affinity_writes = 0  # a list read that overlapped one of our affinity writes is not kept
        self.hits = 0
        self.misses = 0

    # --- reads ----------------------------------------------------------------------
    def get(self, key: str) -> Record | None:
        return self.get_many([key]).get(key)

    def get_many(self, keys_: Iterable[str]) -> dict[str, Record]:
        wanted = list(dict.fromkeys(keys_))
        found: dict[str, Record] = {}
        now = self.clock()
        with self._lock:
            for key in wanted:
                entry = self._blocks.get(key)
                if entry is not None and now - entry[0] < self.ttl:
                    found[key] = entry[1]
            self.hits += len(found)
            self.misses += len(wanted) - len(found)
        rest = [k for k in wanted if k not in found]
        if rest:
            fresh = self.inner.get_many(rest) if len(rest) > 1 else self._get_one(rest[0])
            with self._lock:
                for key, rec in fresh.items():
                    if key.startswith(BLOCKS):
                        self._remember(rec, now)
            found.update(fresh)
        return found

    def _get_one(self, key: str) -> dict[str, Record]:
        rec = self.inner.get(key)
        return {key: rec} if rec is not None else {}

    def list(self, prefix: str, *, start: str | None = None, limit: int | None = None) -> list[Record]:
        cacheable = prefix in self._affinity_prefixes and start is None and limit is None
        if cacheable:
            with self._lock:
                entry = self._lists.get(prefix)
                if entry is not None and self.clock() - entry[0] < self.ttl:
                    self.hits += 1
                    return [entry[1][k] for k in sorted(entry[1])]
                self.misses += 1
                writes_before = self._affinity_writes
        now = self.clock()
        records = self.inner.list(prefix, start=start, limit=limit)
        if cacheable:
            with self._lock:
                if self._affinity_writes == writes_before:
                    self._lists[prefix] = (now, {r.key: r for r in records})
        return records

    def _remember(self, rec: Record, now: float) -> None:
        """Keep the newest revision seen: a slow read must not replace what a later commit wrote."""
        entry = self._blocks.get(rec.key)
        if entry is None or entry[1].revision <= rec.revision:
            self._blocks[rec.key] = (now, rec)

    # --- writes ---------------------------------------------------------------------
    def commit(self, ops: Sequence[Op]) -> int:
        now = self.clock()
        try:
            revision = self.inner.commit(ops)
        except TopoipamError:
            self._forget(ops)  # lost a race, or the outcome is unknown: read these keys fresh next time
            raise
        with self._lock:
            for op in ops:
                self._apply(op, revision, now)
        return revision

    def _apply(self, op: Op, revision: int, now: float) -> None:
        written = Record(op.key, op.value, revision) if isinstance(op, (Create, Update)) else None
        if op.key.startswith(BLOCKS):
            if written is not None:
                self._remember(written, now)
            elif isinstance(op, Delete):
                self._blocks.pop(op.key, None)
            return
        for prefix in self._affinity_prefixes:
            if not op.key.startswith(prefix):
                continue
            self._affinity_writes += 1
            entry = self._lists.get(prefix)
            if entry is None:
                continue
            if written is not None:
                entry[1][op.key] = written
            elif isinstance(op, Delete):
                entry[1].pop(op.key, None)

    def _forget(self, ops: Sequence[Op]) -> None:
        with self._lock:
            for op in ops:
                self._blocks.pop(op.key, None)
                for prefix in self._affinity_prefixes:
                    if op.key.startswith(prefix):
                        self._lists.pop(prefix, None)

    def clear(self) -> None:
        with self._lock:
            self._blocks.clear()
            self._lists.clear()

    def close(self) -> None:
        self.inner.close()
