"""In-process datastore for unit tests: a dict under a lock, same contract as the others."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence

from topoipam.errors import AlreadyExistsError, ConflictError
from topoipam.store.base import Check, Create, Delete, Op, Record, Store, Update, check_one_op_per_key


class MemoryStore(Store):
    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._lock = threading.Lock()
        self._records: dict[str, Record] = {}
        self._keys: list[str] = []  # sorted, for prefix and range listing
        self._revision = 0

    @classmethod
    def copy_of(cls, store: Store, prefix: str) -> "MemoryStore":
        """A private copy of ``store``'s records under ``prefix``, revisions kept, read in one listing:
        what a dry run changes instead of the real datastore (it can never write there)."""
        copy = cls("memory://copy")
        for record in store.list(prefix):
            copy._records[record.key] = record
            copy._keys.append(record.key)
            copy._revision = max(copy._revision, record.revision)
        copy._keys.sort()
        return copy

    def get(self, key: str) -> Record | None:
        with self._lock:
            return self._records.get(key)

    def list(self, prefix: str, *, start: str | None = None, limit: int | None = None) -> list[Record]:
        with self._lock:
            i = bisect.bisect_left(self._keys, max(prefix, start or prefix))
            out: list[Record] = []
            while i < len(self._keys) and self._keys[i].startswith(prefix):
                if limit is not None and len(out) >= limit:
                    break
                out.append(self._records[self._keys[i]])
                i += 1
            return out

    def commit(self, ops: Sequence[Op]) -> int:
        check_one_op_per_key(ops)
        with self._lock:
            for op in ops:
                self._check(op)
            if not any(not isinstance(op, Check) for op in ops):
                return self._revision
            self._revision += 1
            for op in ops:
                self._apply(op, self._revision)
            return self._revision

    def _check(self, op: Op) -> None:
        current = self._records.get(op.key)
        if isinstance(op, Create):
            if current is not None:
                raise AlreadyExistsError(f"key {op.key} already exists")
            return
        have = current.revision if current is not None else 0
        if have != op.revision:
            raise ConflictError(f"update conflict on key {op.key}: revision {op.revision} expected, found {have}")

    def _apply(self, op: Op, revision: int) -> None:
        if isinstance(op, (Create, Update)):
            if op.key not in self._records:
                bisect.insort(self._keys, op.key)
            self._records[op.key] = Record(op.key, op.value, revision)
        elif isinstance(op, Delete):
            del self._records[op.key]
            self._keys.pop(bisect.bisect_left(self._keys, op.key))
