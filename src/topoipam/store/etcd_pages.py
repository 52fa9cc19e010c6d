"""Paged, revision-pinned reads of the etcd backend (``EtcdStore.list``, ``pages``, ``get_many``).

A listing reads a prefix in range requests of a bounded size (``PAGE_BYTES``,
adapting the key count to the record sizes seen), each continuing after the last
key of the previous page and all pinned to the revision of the first page, so
the result is one consistent snapshot however many pages it takes. ``get_many``
reads in transactions of at most ``MAX_TXN_OPS`` ranges, bounded the same way.
A response over the channel's receive limit (``TooLarge``) makes the request ask
for half as many keys. ``Compacted``: the pinned revision was compacted away
mid-read; the store starts the read again once from a fresh revision.

The functions here build requests and follow pages; sending them (deadline,
failover, error mapping) stays with the store: ``read(method, request)``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from topoipam.errors import ConflictError, DatastoreUnavailableError, ValidationError

MAX_TXN_OPS = 128  # etcd's default --max-txn-ops; get_many reads in chunks of at most this size
PAGE_BYTES = 2 << 20  # aim for range responses of about this size: half gRPC's default receive limit
FIRST_PAGE_KEYS = 256  # keys in a listing's first page, before any record size is known
MAX_PAGE_KEYS = 10_000

Read = Callable[[str, Any], Any]  # (KV method, request) -> response


class TooLarge(DatastoreUnavailableError):
    """A response exceeded the channel's receive limit; the paged reads ask for fewer keys."""


class Compacted(ConflictError):
    """The revision a paged read is pinned to was compacted away; the read starts again once."""


def prefix_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with ``prefix`` (etcd's range_end for a prefix)."""
    b = bytearray(prefix)
    while b and b[-1] == 0xFF:
        b.pop()
    if not b:
        return b"\0"  # the whole keyspace
    b[-1] += 1
    return bytes(b)


def next_count(kvs, asked: int, cap: int) -> int:
    """How many keys the next page may ask for so that its response stays near ``PAGE_BYTES``."""
    size = sum(len(kv.key) + len(kv.value) + 32 for kv in kvs)  # +32: per-record framing and header fields
    if not size:
        return cap
    return max(1, min(cap, PAGE_BYTES * asked // size))


def read_shrinking(read: Read, method: str, make_request, count: int):
    """Send ``make_request(count)``, halving ``count`` while the response is over the receive limit.

    Returns the response and the count it was asked with.
    """
    while True:
        try:
            return read(method, make_request(count)), count
        except TooLarge as e:
            if count == 1:
                raise DatastoreUnavailableError(
                    f"{e.message}; a single record is larger than that", details=e.details
                ) from None
            count = max(1, count // 2)


def range_pages(read: Read, pb, prefix: str, start: str | None, limit: int | None) -> Iterator[list]:
    """The key-values under ``prefix`` (from ``start``, at most ``limit``), one bounded page at a time,
    every page read at the revision of the first; raises ``Compacted`` if that revision goes."""
    if start is not None and not start.startswith(prefix):
        raise ValidationError(f"list start {start!r} does not begin with the prefix {prefix!r}")
    key, end = (start or prefix).encode() or b"\0", prefix_end(prefix.encode())
    revision, left, count = 0, limit, FIRST_PAGE_KEYS
    while left is None or left > 0:
        def request(n: int, key=key, revision=revision):
            return pb.RangeRequest(key=key, range_end=end, limit=n, revision=revision)

        resp, asked = read_shrinking(read, "Range", request, count if left is None else min(count, left))
        revision = revision or resp.header.revision
        if resp.kvs:
            yield list(resp.kvs)
        if not resp.more or not resp.kvs:
            return
        key = resp.kvs[-1].key + b"\0"  # the next page starts right after this one's last key
        if left is not None:
            left -= len(resp.kvs)
        count = next_count(resp.kvs, asked, MAX_PAGE_KEYS)


def read_keys(read: Read, pb, keys: list[str]) -> list:
    """The key-values of ``keys`` that exist: transactions of at most MAX_TXN_OPS reads and about
    PAGE_BYTES each, all at one revision; raises ``Compacted`` if that revision goes."""
    found: list = []
    revision, i, count = 0, 0, MAX_TXN_OPS
    while i < len(keys):
        def request(n: int, i=i, revision=revision):
            reads = [pb.RequestOp(request_range=pb.RangeRequest(key=k.encode(), revision=revision))
                     for k in keys[i:i + n]]
            return pb.TxnRequest(success=reads)

        resp, asked = read_shrinking(read, "Txn", request, min(count, len(keys) - i))
        revision = revision or resp.header.revision
        kvs = [kv for r in resp.responses for kv in r.response_range.kvs]
        found.extend(kvs)
        i += asked
        count = next_count(kvs, asked, MAX_TXN_OPS)
    return found
