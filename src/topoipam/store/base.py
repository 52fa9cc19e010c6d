"""The datastore contract every backend implements (memory, SQLite, etcd).

Keys are ``/``-separated strings; values are opaque bytes (the layers above store
JSON). Every record carries the *revision* of its last write. Revisions come
from one store-wide counter that only grows (etcd's ``mod_revision``), so a
record's revision changes on every write and is never reused, even after the
key is deleted and created again.

Writes are conditional:

* ``create`` fails with ``AlreadyExistsError`` if the key exists;
* ``update`` and ``delete`` take the revision the caller read and fail with
  ``ConflictError`` if the record has moved on or is gone;
* ``commit`` applies several operations all-or-nothing: either every
  condition holds and every write lands under one new revision, or nothing is
  written and the first failed condition is raised.

There is no blind write: every change is a compare-and-swap on what was read
(DESIGN.md invariant 2). Backend-specific exceptions never escape a backend:
each maps them in one place to ``DatastoreUnavailableError`` (unreachable,
busy, timed out) or to the errors above.

Listing returns records in byte order of their keys. ``list`` takes a prefix
and optionally ``start`` (inclusive) and ``limit`` so that callers can page
through a large keyspace or find the first key at or after a point with one
read.
"""

from __future__ import annotations

import abc
from topoipam.structs import dataclass
from collections.abc import Iterable, Sequence

from topoipam.errors import ValidationError


@dataclass(frozen=True, slots=True)
class Record:
    key: str
    value: bytes
    revision: int


@dataclass(frozen=True, slots=True)
class Create:
    """Write ``value`` at ``key``; the key must not exist."""

    key: str
    value: bytes


@dataclass(frozen=True, slots=True)
class Update:
    """Replace ``key``'s value; its revision must still be ``revision``."""

    key: str
    value: bytes
    revision: int


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove ``key``; its revision must still be ``revision``."""

    key: str
    revision: int


@dataclass(frozen=True, slots=True)
class Check:
    """Write nothing; the key's revision must still be ``revision`` (0: the key must be absent)."""

    key: str
    revision: int


Op = Create | Update | Delete | Check


def check_one_op_per_key(ops: Sequence[Op]) -> None:
    """Reject a commit that names a key twice (etcd refuses such a transaction too)."""
    if len({op.key for op in ops}) == len(ops):  # the common case, on every commit: one set, no loop
        return
    seen: set[str] = set()
    for op in ops:
        if op.key in seen:
            raise ValidationError(f"one transaction names key {op.key} twice; at most one operation per key")
        seen.add(op.key)


class Store(abc.ABC):
    """A key-value datastore with revisions and compare-and-swap. Thread-safe."""

    #: The URL the store was opened with (credentials removed).
    url: str = ""

    @abc.abstractmethod
    def get(self, key: str) -> Record | None:
        """The record at ``key``, or None."""

    @abc.abstractmethod
    def list(self, prefix: str, *, start: str | None = None, limit: int | None = None) -> list[Record]:
        """Records whose key starts with ``prefix``, in key order.

        ``start``: only keys >= start (start must itself begin with prefix).
        ``limit``: at most this many records.
        """

    @abc.abstractmethod
    def commit(self, ops: Sequence[Op]) -> int:
        """Apply ``ops`` atomically; return the new store revision.

        Raises ``AlreadyExistsError`` (a Create found its key) or ``ConflictError``
        (an Update/Delete/Check found another revision, or no record); the
        message names the key. On any error nothing was written. At most one op
        per key (else ``ValidationError``, see ``check_one_op_per_key``). An
        empty ``ops``, or one of only Checks that hold, writes nothing and
        returns the current revision.
        """

    def create(self, key: str, value: bytes) -> int:
        """Create ``key``; return its revision."""
        return self.commit([Create(key, value)])

    def update(self, key: str, value: bytes, revision: int) -> int:
        """Compare-and-swap ``key`` from ``revision``; return the new revision."""
        return self.commit([Update(key, value, revision)])

    def delete(self, key: str, revision: int) -> None:
        """Compare-and-delete ``key`` at ``revision``."""
        self.commit([Delete(key, revision)])

    def get_many(self, keys: Iterable[str]) -> dict[str, Record]:
        """The records that exist among ``keys``. Backends may do this in one read."""
        found = {}
        for key in keys:
            record = self.get(key)
            if record is not None:
                found[key] = record
        return found

    def close(self) -> None:
        """Release connections and file handles. Idempotent."""

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
