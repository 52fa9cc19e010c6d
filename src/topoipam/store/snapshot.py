"""A read-only, in-memory copy of a key range taken in ONE consistent read of a store.

    snap = read_snapshot(store)          # every topoipam record, as of one moment
    World(snap, now)                     # any read-only analysis then sees no write half-applied

Each backend's ``list`` of one prefix is already one consistent read: SQLite answers it
with one SELECT (one read transaction: WAL shows it the file as of its start), etcd
reads every page at the revision of the first (``etcd_pages``), the memory store copies
under its lock. Reading pools, nodes, blocks and handles in separate listings instead
would let an assignment or a relabelling land between two of them, so that a scrape
could count an address both free in its block and held by its handle.

``revision`` is the highest revision among the records read: it moves on every write
to the range that is still visible (a deletion of the newest record is the exception),
so two snapshots with the same count and revision saw the same data.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from topoipam.errors import ValidationError
from topoipam.store.base import Op, Record, Store

TOPOIPAM_PREFIX = "/topoipam/"  # every record the project writes (resources, guards, IPAM)


class SnapshotStore(Store):
    """The records of one listing, served by ``get``/``list``; ``commit`` is refused."""

    def __init__(self, records: list[Record], url: str) -> None:
        self.url = url
        self._records = {r.key: r for r in records}
        self._keys = sorted(self._records)
        self.revision = max((r.revision for r in records), default=0)

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, key: str) -> Record | None:
        return self._records.get(key)

    def list(self, prefix: str, *, start: str | None = None, limit: int | None = None) -> list[Record]:
        keys = self._keys
        i = bisect.bisect_left(keys, max(prefix, start or prefix))
        j = len(keys) if not prefix else bisect.bisect_left(keys, prefix[:-1] + chr(ord(prefix[-1]) + 1))
        if limit is not None:
            j = min(j, i + max(0, limit))
        return [self._records[k] for k in keys[i:j]]

    def commit(self, ops: Sequence[Op]) -> int:
        raise ValidationError(f"a snapshot of {self.url} is read-only")


def read_snapshot(store: Store, prefix: str = TOPOIPAM_PREFIX) -> SnapshotStore:
    """Every record under ``prefix``, read in one listing (see the module docstring)."""
    return SnapshotStore(store.list(prefix), store.url)
