"""``store.decoded.Decoded``: a record decoded once per revision, never a stale decode after a write.

The dry run shares one between its before and after reads of its in-memory copy; a stale entry would
make the after state show a record as it was before the change (tests/test_dry_run.py checks the
whole prediction against the real change)."""

from __future__ import annotations

import json

import pytest

from test_cli_ipam import assign
from topoipam.errors import DamagedRecordError
from topoipam.ipam import IpamService
from topoipam.ipam.check import iter_blocks
from topoipam.ipam.leaks import handle_records
from topoipam.store import open_store
from topoipam.store.base import Create, Delete, Update
from topoipam.store.decoded import Decoded
from topoipam.store.memory import MemoryStore

KEY = "/topoipam/x/a"


def parse(record):
    doc = json.loads(record.value)
    if "bad" in doc:
        raise DamagedRecordError(record.key, record.revision, "bad")
    return doc


def test_unchanged_record_is_decoded_once_and_shared():
    store = MemoryStore()
    store.commit([Create(KEY, b'{"n": 1}')])
    memo = Decoded()
    first = memo.of(store.get(KEY), parse)
    assert memo.of(store.get(KEY), parse) is first


def test_a_write_delete_or_recreate_is_decoded_again():
    store = MemoryStore()
    rev = store.commit([Create(KEY, b'{"n": 1}')])
    memo = Decoded()
    assert memo.of(store.get(KEY), parse) == {"n": 1}
    rev = store.commit([Update(KEY, b'{"n": 2}', rev)])
    assert memo.of(store.get(KEY), parse) == {"n": 2}
    store.commit([Delete(KEY, rev)])
    store.commit([Create(KEY, b'{"n": 3}')])  # same key, same length of value: a new revision
    assert memo.of(store.get(KEY), parse) == {"n": 3}


def test_a_copy_keeps_revisions_so_a_later_write_is_seen():
    store = MemoryStore()
    store.commit([Create(KEY, b'{"n": 1}')])
    copy = MemoryStore.copy_of(store, "/topoipam/")
    memo = Decoded()
    assert memo.of(copy.get(KEY), parse) == {"n": 1}
    copy.commit([Update(KEY, b'{"n": 2}', copy.get(KEY).revision)])
    assert memo.of(copy.get(KEY), parse) == {"n": 2}


def test_decoders_and_their_arguments_do_not_share_entries():
    store = MemoryStore()
    store.commit([Create(KEY, b'{"n": 1}')])
    memo = Decoded()
    assert memo.of(store.get(KEY), parse) == {"n": 1}
    assert memo.of(store.get(KEY), lambda r, k: (k, json.loads(r.value)["n"]), "kind") == ("kind", 1)


def test_a_damaged_record_raises_every_time():
    store = MemoryStore()
    store.commit([Create(KEY, b'{"bad": 1}')])
    memo = Decoded()
    for _ in range(2):
        with pytest.raises(DamagedRecordError):
            memo.of(store.get(KEY), parse)


def test_handles_and_blocks_read_through_a_memo_see_a_release(cli, sqlite_url):
    """A workload released between two reads: the handle is gone and its block shows one fewer."""
    assert cli("create", "-f", "-", stdin="apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n"
               "  name: p\nspec:\n  cidr: 10.9.0.0/24\n---\napiVersion: projectcalico.org/v3\nkind: Node\n"
               "metadata:\n  name: n1\n").code == 0
    assign(cli, "--node", "n1", "--handle", "w1")
    assign(cli, "--node", "n1", "--handle", "w2")
    real = open_store(sqlite_url)
    try:
        copy = MemoryStore.copy_of(real, "/topoipam/")
    finally:
        real.close()
    memo = Decoded()
    assert {h.handle for h in handle_records(copy, decoded=memo)} == {"w1", "w2"}
    assert [s.block.in_use for s in iter_blocks(copy, decoded=memo)] == [2]
    IpamService(copy).release_by_handle("w1")
    assert {h.handle for h in handle_records(copy, decoded=memo)} == {"w2"}
    assert [s.block.in_use for s in iter_blocks(copy, decoded=memo)] == [1]

