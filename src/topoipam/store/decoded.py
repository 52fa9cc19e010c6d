"""Records decoded once per (key, revision), for a caller that reads the same store twice.

A record at a given revision never changes (every write gives the key a new revision, a delete and
re-create too), so what was decoded from it stays right for as long as the store still returns that
revision. A dry run reads its in-memory copy before and after the change: the second read decodes only
the records the change wrote (a pool delete or a relabel writes a few of 100,000 handles and blocks).
"""

from __future__ import annotations

from collections.abc import Callable

from topoipam.store.base import Record


class Decoded:
    """``decode(record, *args)`` memoised per decoder, arguments and key, valid while the key's revision
    is unchanged. ``decode`` must be a module-level function (its identity is part of the key); its
    result is shared between readers, who read it and never change it. A decode that raises (a damaged
    record) is not memoised: it raises again on the next read."""

    def __init__(self) -> None:
        self._seen: dict[tuple, tuple[int, object]] = {}

    def of(self, record: Record, decode: Callable[..., object], *args):
        key = (decode, args, record.key)
        hit = self._seen.get(key)
        if hit is not None and hit[0] == record.revision:
            return hit[1]
        value = decode(record, *args)
        self._seen[key] = (record.revision, value)
        return value
