"""A store wrapper that counts datastore operations, for benchmarks and tests.

``CountingStore(inner)`` forwards every call to ``inner`` and counts:

* ``reads``: calls of ``get``, ``list`` and ``get_many``;
* ``writes``: calls of ``commit`` (the ``create``/``update``/``delete``
  shortcuts are commits too), whether they succeed or fail;
* ``round_trips``: requests that reach the backend: one per read or commit,
  except that a ``get_many`` the backend does not override (the contract's
  default does one ``get`` per key) counts one per key;
* ``failed_writes``: commits that raised (lost compare-and-swap, ...).

``counts()`` returns an immutable snapshot; subtracting two snapshots gives
the operations done in between ("datastore operations per assignment").
"""

from __future__ import annotations

import threading
from topoipam.structs import dataclass, fields
from collections.abc import Iterable, Sequence

from topoipam.store.base import Op, Record, Store


@dataclass(frozen=True, slots=True)
class Counts:
    reads: int = 0
    writes: int = 0
    round_trips: int = 0
    failed_writes: int = 0

    def __sub__(self, other: "Counts") -> "Counts":
        return Counts(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))


class CountingStore(Store):
    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.url = inner.url
        self._lock = threading.Lock()
        self._counts = Counts()
        # The contract's default get_many is one get per key: count what really happens.
        self._get_many_per_key = type(inner).get_many is Store.get_many

    def counts(self) -> Counts:
        with self._lock:
            return self._counts

    def reset(self) -> Counts:
        """Zero the counters; return what they were."""
        with self._lock:
            before, self._counts = self._counts, Counts()
            return before

    def _add(self, **delta: int) -> None:
        with self._lock:
            c = self._counts
            self._counts = Counts(*(getattr(c, f.name) + delta.get(f.name, 0) for f in fields(c)))

    def get(self, key: str) -> Record | None:
        self._add(reads=1, round_trips=1)
        return self.inner.get(key)

    def list(self, prefix: str, *, start: str | None = None, limit: int | None = None) -> list[Record]:
        self._add(reads=1, round_trips=1)
        return self.inner.list(prefix, start=start, limit=limit)

    def get_many(self, keys: Iterable[str]) -> dict[str, Record]:
        keys = list(keys)
        self._add(reads=1, round_trips=len(keys) if self._get_many_per_key else 1)
        return self.inner.get_many(keys)

    def commit(self, ops: Sequence[Op]) -> int:
        self._add(writes=1, round_trips=1)
        try:
            return self.inner.commit(ops)
        except Exception:
            self._add(failed_writes=1)
            raise

    def close(self) -> None:
        self.inner.close()
