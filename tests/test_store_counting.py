"""CountingStore: counts reads, writes and round trips of the store it wraps."""

from __future__ import annotations

import pytest

from topoipam.errors import ConflictError
from topoipam.store import Create, open_store
from topoipam.store.counting import Counts, CountingStore


def test_counts_reads_writes_and_round_trips(store):
    c = CountingStore(store)
    rev = c.create("/k/a", b"1")
    c.commit([Create("/k/b", b"2"), Create("/k/c", b"3")])
    assert c.get("/k/a").value == b"1"
    assert [r.key for r in c.list("/k/", limit=2)] == ["/k/a", "/k/b"]
    assert c.counts() == Counts(reads=2, writes=2, round_trips=4, failed_writes=0)
    before = c.counts()
    with pytest.raises(ConflictError):
        c.update("/k/a", b"x", rev + 100)
    c.delete("/k/a", rev)
    assert c.counts() - before == Counts(reads=0, writes=2, round_trips=2, failed_writes=1)
    assert c.get("/k/a") is None and store.get("/k/a") is None  # calls really reach the inner store


def test_get_many_is_one_round_trip_where_the_backend_batches(tmp_path):
    with CountingStore(open_store(f"sqlite://{tmp_path}/s.db")) as c:
        c.commit([Create(f"/m/{i}", b"") for i in range(5)])
        c.reset()
        assert len(c.get_many(f"/m/{i}" for i in range(7))) == 5
        assert c.counts() == Counts(reads=1, round_trips=1)


def test_get_many_on_the_contract_default_counts_one_round_trip_per_key():
    with CountingStore(open_store("memory://")) as c:
        c.get_many(["/a", "/b", "/c"])
        assert c.reset() == Counts(reads=1, round_trips=3)
        assert c.counts() == Counts()
