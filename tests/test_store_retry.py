"""The one retry loop (store/retry.py): lost races are retried on fresh reads, and both loops are bounded."""

from __future__ import annotations

import pytest

from topoipam.errors import RetriesExhaustedError
from topoipam.store.base import Update
from topoipam.store.memory import MemoryStore
from topoipam.store.retry import MAX_RETRIES, Plan, rerun, run_cas


def test_run_cas_rereads_after_a_lost_race_and_lands_once():
    store = MemoryStore()
    store.create("/k", b"0")
    seen = []

    def attempt(n):
        record = store.get("/k")
        seen.append(record.value)
        if n == 0:  # another writer moves the key between our read and our commit
            store.update("/k", b"other", record.revision)
        return Plan([Update("/k", record.value + b"+1", record.revision)], result=n)

    assert run_cas(store, attempt, "bump /k") == 1
    assert seen == [b"0", b"other"]
    assert store.get("/k").value == b"other+1"


def test_run_cas_gives_up_after_max_retries_with_the_operation_named():
    store = MemoryStore()
    store.create("/k", b"0")

    def always_stale(n):
        return Plan([Update("/k", b"x", 999)])

    with pytest.raises(RetriesExhaustedError, match="bump /k"):
        run_cas(store, always_stale, "bump /k")
    assert store.get("/k").value == b"0"


class Moved(Exception):
    pass


def test_rerun_refreshes_and_tries_again_until_the_inputs_hold():
    calls, refreshes = [], []

    def run():
        calls.append(1)
        if len(calls) < 3:
            raise Moved()
        return "done"

    assert rerun(run, moved=Moved, refresh=lambda: refreshes.append(1), what="x") == "done"
    assert (len(calls), len(refreshes)) == (3, 2)


def test_rerun_is_bounded():
    calls = []

    def run():
        calls.append(1)
        raise Moved()

    with pytest.raises(RetriesExhaustedError, match="kept changing"):
        rerun(run, moved=Moved, what=lambda: "assign 10.0.0.1")
    assert len(calls) == MAX_RETRIES


def test_rerun_lets_other_errors_through():
    def run():
        raise ValueError("an answer, not a race")

    with pytest.raises(ValueError):
        rerun(run, moved=Moved, what="x")
