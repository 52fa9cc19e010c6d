"""The datastore contract (store/base.py), run against every backend through the ``store`` fixture."""

from __future__ import annotations

import threading

import pytest

from topoipam.errors import AlreadyExistsError, ConflictError, ValidationError
from topoipam.store import Check, Create, Delete, Record, Update


def _snapshot(store):
    return [(r.key, r.value, r.revision) for r in store.list("")]


# -- revisions ---------------------------------------------------------------


def test_revisions_grow_and_are_per_key_mod_revisions(store):
    r1 = store.create("/k/a", b"1")
    r2 = store.create("/k/b", b"2")
    assert r2 > r1
    r3 = store.update("/k/a", b"1b", r1)
    assert r3 > r2
    assert store.get("/k/a") == Record("/k/a", b"1b", r3)
    assert store.get("/k/b").revision == r2  # untouched key keeps its own mod revision


def test_one_commit_gives_all_its_writes_the_same_new_revision(store):
    base = store.create("/t/old", b"o")
    rev = store.commit([Create("/t/x", b"x"), Create("/t/y", b"y"), Update("/t/old", b"o2", base)])
    assert rev > base
    assert {r.key: r.revision for r in store.list("/t/")} == {"/t/old": rev, "/t/x": rev, "/t/y": rev}


def test_deleted_and_recreated_key_gets_a_new_larger_revision(store):
    first = store.create("/r/k", b"v")
    store.delete("/r/k", first)
    assert store.get("/r/k") is None
    again = store.create("/r/k", b"v")
    assert again > first
    with pytest.raises(ConflictError):
        store.update("/r/k", b"w", first)  # the old revision does not come back to life


def test_revision_counter_is_store_wide_and_survives_deleting_everything(store):
    rev = store.create("/z/only", b"v")
    store.delete("/z/only", rev)
    assert store.create("/y/other", b"v") > rev + 1  # the delete itself used a revision


# -- create / update / delete ------------------------------------------------


def test_create_if_absent(store):
    rev = store.create("/c/k", b"first")
    with pytest.raises(AlreadyExistsError, match="/c/k"):
        store.create("/c/k", b"second")
    assert store.get("/c/k") == Record("/c/k", b"first", rev)


def test_update_cas_success_and_stale_revision(store):
    r1 = store.create("/u/k", b"1")
    r2 = store.update("/u/k", b"2", r1)
    with pytest.raises(ConflictError, match="/u/k"):
        store.update("/u/k", b"3", r1)
    assert store.get("/u/k") == Record("/u/k", b"2", r2)


def test_update_of_deleted_or_missing_key_conflicts(store):
    rev = store.create("/u/gone", b"1")
    store.delete("/u/gone", rev)
    with pytest.raises(ConflictError, match="/u/gone"):
        store.update("/u/gone", b"2", rev)
    with pytest.raises(ConflictError, match="/u/never"):
        store.update("/u/never", b"2", 1)
    assert store.get("/u/gone") is None and store.get("/u/never") is None


def test_delete_cas_success_and_conflict(store):
    r1 = store.create("/d/k", b"1")
    r2 = store.update("/d/k", b"2", r1)
    with pytest.raises(ConflictError, match="/d/k"):
        store.delete("/d/k", r1)
    assert store.get("/d/k").revision == r2
    store.delete("/d/k", r2)
    assert store.get("/d/k") is None
    with pytest.raises(ConflictError, match="/d/k"):
        store.delete("/d/k", r2)


# -- Check and transactions ---------------------------------------------------


def test_check_op_holds_fails_and_writes_nothing(store):
    rev = store.create("/chk/k", b"v")
    before = _snapshot(store)
    assert store.commit([Check("/chk/k", rev)]) == rev  # a holding Check alone writes nothing
    assert store.commit([Check("/chk/absent", 0)]) == rev
    with pytest.raises(ConflictError, match="/chk/k"):
        store.commit([Check("/chk/k", rev + 100)])
    with pytest.raises(ConflictError, match="/chk/k"):
        store.commit([Check("/chk/k", 0)])  # 0 means absent, but it exists
    with pytest.raises(ConflictError, match="/chk/absent"):
        store.commit([Check("/chk/absent", rev)])
    assert _snapshot(store) == before
    assert store.commit([]) == rev  # the failures consumed no revision


def test_check_guards_a_write_on_another_key(store):
    guard = store.create("/g/guard", b"g")
    rev = store.commit([Check("/g/guard", guard), Create("/g/child", b"c")])
    assert store.get("/g/child").revision == rev
    store.update("/g/guard", b"g2", guard)
    with pytest.raises(ConflictError, match="/g/guard"):
        store.commit([Check("/g/guard", guard), Create("/g/child2", b"c")])
    assert store.get("/g/child2") is None


@pytest.mark.parametrize(
    "bad, error",
    [
        (lambda revs: Create("/m/b", b"dup"), AlreadyExistsError),
        (lambda revs: Update("/m/b", b"stale", revs["/m/b"] + 1000), ConflictError),
        (lambda revs: Delete("/m/missing", 1), ConflictError),
        (lambda revs: Check("/m/b", 0), ConflictError),
    ],
    ids=["create-exists", "update-stale", "delete-missing", "check-absent"],
)
def test_failing_condition_in_the_middle_writes_nothing(store, bad, error):
    revs = {"/m/a": store.create("/m/a", b"a"), "/m/b": store.create("/m/b", b"b")}
    before = _snapshot(store)
    ops = [Update("/m/a", b"a2", revs["/m/a"]), Create("/m/new1", b"n"), bad(revs), Create("/m/new2", b"n")]
    with pytest.raises(error) as caught:
        store.commit(ops)
    assert ops[2].key in str(caught.value)
    assert _snapshot(store) == before
    assert store.commit([]) == max(revs.values())


def test_multi_key_transaction_all_ops_land(store):
    ra = store.create("/x/a", b"a")
    rb = store.create("/x/b", b"b")
    rev = store.commit([Update("/x/a", b"A", ra), Delete("/x/b", rb), Create("/x/c", b"C"), Check("/x/none", 0)])
    assert [(r.key, r.value, r.revision) for r in store.list("/x/")] == [("/x/a", b"A", rev), ("/x/c", b"C", rev)]


def test_empty_commit_is_a_no_op_returning_the_current_revision(store):
    start = store.commit([])
    rev = store.create("/e/k", b"v")
    assert rev > start
    assert store.commit([]) == rev
    assert store.commit(()) == rev


def test_one_key_twice_in_one_commit_is_rejected(store):
    with pytest.raises(ValidationError, match="/dup/k"):
        store.commit([Create("/dup/k", b"1"), Create("/dup/k", b"2")])
    assert store.get("/dup/k") is None


# -- listing -----------------------------------------------------------------


def _fill(store, keys):
    for key in keys:
        store.create(key, key.encode())


def test_list_is_in_key_order_whatever_the_insert_order(store):
    keys = ["/l/b", "/l/a/2", "/l/c", "/l/a/10", "/l/a/1", "/l/a"]
    _fill(store, keys)
    assert [r.key for r in store.list("/l/")] == sorted(keys)
    assert [r.value for r in store.list("/l/")] == [k.encode() for k in sorted(keys)]


def test_list_prefix_boundaries(store):
    _fill(store, ["/a/b", "/a/b/1", "/a/bc", "/a/bc/1", "/a/b0", "/a/c", "/a/a", "/a/b\U0010ffff"])
    assert [r.key for r in store.list("/a/b/")] == ["/a/b/1"]
    assert [r.key for r in store.list("/a/bc")] == ["/a/bc", "/a/bc/1"]
    assert [r.key for r in store.list("/a/b")] == ["/a/b", "/a/b/1", "/a/b0", "/a/bc", "/a/bc/1", "/a/b\U0010ffff"]
    assert [r.key for r in store.list("/a/b\U0010ffff")] == ["/a/b\U0010ffff"]
    assert store.list("/a/d") == [] and store.list("/b") == []
    assert len(store.list("")) == 8


def test_list_start_and_limit(store):
    keys = [f"/p/{i:03d}" for i in range(20)]
    _fill(store, keys)
    _fill(store, ["/o/before", "/q/after"])
    assert [r.key for r in store.list("/p/", start="/p/015")] == keys[15:]
    assert [r.key for r in store.list("/p/", start="/p/0145")] == keys[15:]  # start need not exist
    assert [r.key for r in store.list("/p/", limit=3)] == keys[:3]
    assert [r.key for r in store.list("/p/", start="/p/010", limit=4)] == keys[10:14]
    assert [r.key for r in store.list("/p/", start="/p/018", limit=10)] == keys[18:]
    assert store.list("/p/", start="/p/999") == []
    assert store.list("/p/", limit=0) == []


def test_paging_through_with_start_and_limit_sees_every_key_once(store):
    keys = [f"/pg/{i:04d}" for i in range(0, 95, 3)]
    _fill(store, keys)
    seen, start = [], None
    while True:
        page = store.list("/pg/", start=start, limit=7)
        if not page:
            break
        seen += [r.key for r in page]
        start = page[-1].key + "\x00"
    assert seen == keys


# -- get_many and values ------------------------------------------------------


def test_get_many_returns_only_present_keys(store):
    ra = store.create("/gm/a", b"a")
    rc = store.create("/gm/c", b"c")
    assert store.get_many(["/gm/a", "/gm/b", "/gm/c", "/gm/a"]) == {
        "/gm/a": Record("/gm/a", b"a", ra),
        "/gm/c": Record("/gm/c", b"c", rc),
    }
    assert store.get_many([]) == {}
    assert store.get_many(iter(["/gm/none"])) == {}


def test_get_many_with_more_keys_than_one_query_binds(store):
    keys = [f"/big/{i:05d}" for i in range(1200)]
    store.commit([Create(k, k.encode()) for k in keys])
    got = store.get_many(keys + ["/big/absent"])
    assert sorted(got) == keys
    assert all(got[k].value == k.encode() for k in keys)


@pytest.mark.parametrize(
    "value",
    [b"", b"\x00", bytes(range(256)), b"\xff\xfe\x80 not utf-8 \xc3", "ünïcødé ✓".encode(), b"x" * 1_000_000],
    ids=["empty", "nul", "all-bytes", "invalid-utf8", "utf8", "1MB"],
)
def test_values_round_trip_exactly(store, value):
    rev = store.create("/v/k", value)
    got = store.get("/v/k")
    assert type(got.value) is bytes and got.value == value
    assert store.list("/v/")[0].value == value
    assert store.get_many(["/v/k"])["/v/k"].value == value
    store.update("/v/k", value + b"!", rev)
    assert store.get("/v/k").value == value + b"!"


def test_unicode_keys_round_trip(store):
    store.create("/u/ключ/é", b"1")
    assert store.get("/u/ключ/é").value == b"1"
    assert [r.key for r in store.list("/u/ключ/")] == ["/u/ключ/é"]


# -- concurrency --------------------------------------------------------------


def test_threads_racing_on_cas_increments_lose_no_update(store):
    store.create("/race/counter", b"0")
    threads_n, per_thread = 8, 40
    conflicts = []
    errors = []

    def worker():
        try:
            done = 0
            while done < per_thread:
                rec = store.get("/race/counter")
                try:
                    store.update("/race/counter", str(int(rec.value) + 1).encode(), rec.revision)
                    done += 1
                except ConflictError:
                    conflicts.append(1)
        except Exception as exc:  # surfaced below: a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert int(store.get("/race/counter").value) == threads_n * per_thread
