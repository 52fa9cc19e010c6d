"""Handle records as ``ipam check`` reports them and the fenced clean-up ``ipam release --from-report`` does.

A report names each leaked handle (one that holds no address) with the
revision it had when the check read it. Deleting it is a compare-and-swap on
that revision, so a handle that gained an address since the report is left
alone (calicoctl's ``'x' = skip, handle missing/changed``).
"""

from __future__ import annotations

import json
from topoipam.structs import dataclass

from topoipam.errors import AlreadyExistsError, ConflictError, DamagedRecordError, NotFoundError
from topoipam.ipam import keys
from topoipam.store.base import Delete, Store
from topoipam.store.decoded import Decoded


@dataclass(frozen=True)
class HandleRecord:
    handle: str
    revision: int
    counts: dict  # block CIDR -> number of addresses the handle claims there
    attrs: dict  # the workload's attributes (those of its allocations whose block entry has none)


def handle_records(store: Store, prefix: str = "", damaged: list | None = None,
                   decoded: Decoded | None = None) -> list[HandleRecord]:
    """Every handle (whose id starts with ``prefix``) in the datastore, in key order. A record that
    does not decode is left out (and, given ``damaged``, appended there as a DamagedRecordError).
    ``decoded``: records already decoded by an earlier read of the same store are not decoded again."""
    out = []
    for rec in store.list(keys.HANDLE_PREFIX + prefix):
        try:
            out.append(decoded.of(rec, _decode_handle) if decoded is not None else _decode_handle(rec))
        except DamagedRecordError as exc:
            if damaged is not None:
                damaged.append(exc)
    return out


def _decode_handle(rec) -> HandleRecord:
    try:
        doc = json.loads(rec.value)
        counts, attrs = doc.get("block", {}), doc.get("secondary") or {}
        if not isinstance(counts, dict) or not isinstance(attrs, dict) \
                or not all(isinstance(n, int) for n in counts.values()):
            raise ValueError("its block counts or attributes are not objects of numbers / strings")
    except (ValueError, AttributeError) as exc:
        raise DamagedRecordError(rec.key, rec.revision, f"it does not decode ({exc})") from None
    return HandleRecord(rec.key[len(keys.HANDLE_PREFIX):], rec.revision, counts, attrs)


def delete_handle_if_unchanged(store: Store, handle: str, revision: int) -> bool:
    """Delete the handle only if it is still at ``revision``; False if it is gone or has changed."""
    try:
        store.commit([Delete(keys.handle_key(handle), revision)])
    except (ConflictError, NotFoundError, AlreadyExistsError):
        return False
    return True
