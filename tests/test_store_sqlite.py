"""The SQLite backend beyond the contract: the file on disk, options, many processes, broken files."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import textwrap

import pytest

from topoipam.errors import DatastoreUnavailableError, ValidationError
from topoipam.store import Create, open_store
from topoipam.store.sqlite import SqliteStore, parse_url, prefix_upper


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_file_and_directory_are_private_whatever_the_umask(tmp_path):
    path = tmp_path / "new" / "dir" / "store.db"
    old = os.umask(0o000)  # the most permissive umask must not leak into the file mode
    try:
        with SqliteStore(f"sqlite://{path}", create_dirs=True) as s:  # as for the default datastore
            s.create("/k", b"v")
            assert _mode(path) == 0o600
            assert _mode(str(path) + "-wal") == 0o600
            assert _mode(path.parent) == 0o700
    finally:
        os.umask(old)


def test_restrictive_umask_still_gives_owner_read_write(tmp_path):
    path = tmp_path / "store.db"
    old = os.umask(0o277)
    try:
        with SqliteStore(f"sqlite://{path}") as s:
            s.create("/k", b"v")
    finally:
        os.umask(old)
    assert _mode(path) == 0o600


def test_wal_journal_and_synchronous_default_normal(tmp_path):
    path = tmp_path / "store.db"
    with SqliteStore(f"sqlite://{path}") as s:
        assert s.synchronous == "NORMAL"
        assert s._guarded(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) == 1  # NORMAL
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # stored in the file
    finally:
        conn.close()


@pytest.mark.parametrize("option, level", [("FULL", 2), ("full", 2), ("EXTRA", 3), ("NORMAL", 1)])
def test_synchronous_url_option(tmp_path, option, level):
    with SqliteStore(f"sqlite://{tmp_path}/s.db?synchronous={option}") as s:
        assert s._guarded(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) == level
        s.create("/k", b"v")
        assert s.get("/k").value == b"v"


@pytest.mark.parametrize("url", ["sqlite:///x.db?synchronous=SOMETIMES", "sqlite:///x.db?cache=big", "sqlite://",
                                 "sqlite:///x.db?timeout=-1"])
def test_bad_url_options_are_rejected(url):
    with pytest.raises(ValidationError, match="datastore URL"):
        parse_url(url)


def test_url_forms(tmp_path, monkeypatch):
    assert parse_url("sqlite:///abs/p.db?timeout=2.5") == ("/abs/p.db", "NORMAL", 2.5)
    assert parse_url("sqlite://rel/p.db")[0] == "rel/p.db"
    assert parse_url("/plain/p.db")[0] == "/plain/p.db"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rel").mkdir()
    with open_store("sqlite://rel/p.db") as s:
        s.create("/k", b"v")
    with open_store(str(tmp_path / "rel" / "p.db")) as s:
        assert s.get("/k").value == b"v"


def test_reopen_sees_data_and_revision_keeps_growing(tmp_path):
    url = f"sqlite://{tmp_path}/store.db"
    with open_store(url) as s:
        s.commit([Create("/a", b"1"), Create("/b", b"\xff")])
        rev = s.create("/c", b"3")
    with open_store(url) as s:
        assert [(r.key, r.value) for r in s.list("/")] == [("/a", b"1"), ("/b", b"\xff"), ("/c", b"3")]
        assert s.commit([]) == rev
        assert s.create("/d", b"4") == rev + 1


def test_two_store_objects_on_one_file_see_each_others_writes(tmp_path):
    url = f"sqlite://{tmp_path}/store.db"
    with open_store(url) as one, open_store(url) as two:
        rev = one.create("/k", b"1")
        assert two.get("/k").revision == rev
        two.update("/k", b"2", rev)
        assert one.get("/k").value == b"2"


def test_listing_uses_an_index_range_scan(tmp_path):
    with SqliteStore(f"sqlite://{tmp_path}/s.db") as s:
        plan = s._guarded(lambda c: c.execute(
            "EXPLAIN QUERY PLAN SELECT key, value, revision FROM kv WHERE key >= ? AND key < ? ORDER BY key LIMIT ?",
            ("/a/", "/a0", -1)).fetchall())
    detail = " ".join(row[-1] for row in plan)
    # a rowid table (files created now) scans its primary-key index; WITHOUT ROWID (older files) its own B-tree
    assert ("SEARCH kv USING INDEX sqlite_autoindex_kv_1 (key>? AND key<?)" in detail
            or "SEARCH kv USING PRIMARY KEY (key>? AND key<?)" in detail), detail
    assert "TEMP B-TREE" not in detail


def test_prefix_upper_bound():
    assert prefix_upper("/a/b") == "/a/c"
    assert prefix_upper("") is None
    assert prefix_upper("/a\U0010ffff") == "/b"
    assert prefix_upper("\U0010ffff") is None
    assert prefix_upper("/\ud7ff") == "/\ue000"


def test_closed_store_says_so(tmp_path):
    s = SqliteStore(f"sqlite://{tmp_path}/s.db")
    s.close()
    s.close()  # idempotent
    with pytest.raises(DatastoreUnavailableError, match="closed"):
        s.get("/k")


# -- unusable places and files --------------------------------------------------


def test_path_below_a_regular_file_is_unavailable_and_names_the_path(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    target = blocker / "sub" / "store.db"
    with pytest.raises(DatastoreUnavailableError, match=str(target)):
        open_store(f"sqlite://{target}")


def test_path_in_a_place_nobody_can_create_is_unavailable():
    target = "/proc/topoipam-test/store.db"  # not creatable, not even by root
    with pytest.raises(DatastoreUnavailableError, match=target):
        open_store(f"sqlite://{target}")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_unwritable_directory_is_unavailable(tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o500)
    with pytest.raises(DatastoreUnavailableError, match=str(locked / "store.db")):
        open_store(f"sqlite://{locked}/store.db")


@pytest.mark.parametrize("content", [b"this is not a database at all" * 200, b"SQLite format 3\x00" + b"\xde\xad" * 4000])
def test_garbage_file_is_unavailable_with_a_clear_message(tmp_path, content):
    path = tmp_path / "garbage.db"
    path.write_bytes(content)
    with pytest.raises(DatastoreUnavailableError, match=f"{path} is not a usable database"):
        open_store(f"sqlite://{path}")
    assert path.read_bytes() == content  # nothing written over the operator's file


def test_directory_in_place_of_the_file_is_unavailable(tmp_path):
    with pytest.raises(DatastoreUnavailableError, match=str(tmp_path)):
        open_store(f"sqlite://{tmp_path}")


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "s.db"
    with SqliteStore(f"sqlite://{path}") as s:
        s._guarded(lambda c: c.execute("PRAGMA user_version = 99"))
    with pytest.raises(DatastoreUnavailableError, match="schema version 99"):
        SqliteStore(f"sqlite://{path}")


def test_lock_held_past_the_timeout_is_unavailable(tmp_path):
    path = tmp_path / "s.db"
    with SqliteStore(f"sqlite://{path}") as s:
        s.create("/k", b"v")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer keeps the write lock
    try:
        with SqliteStore(f"sqlite://{path}?timeout=0.2") as s:
            assert s.get("/k").value == b"v"  # WAL: readers are not blocked
            with pytest.raises(DatastoreUnavailableError, match="busy"):
                s.update("/k", b"w", 1)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with SqliteStore(f"sqlite://{path}") as s:
        assert s.get("/k").value == b"v"


# -- many processes on one file ---------------------------------------------------

_WORKER = textwrap.dedent(
    """
    import sys
    from topoipam.errors import ConflictError
    from topoipam.store import open_store

    url, key, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    conflicts = 0
    with open_store(url) as s:
        if count == 0:  # only create the key (racing on a brand-new file)
            s.create(key, b"0")
        done = 0
        while done < count:
            rec = s.get(key)
            try:
                s.update(key, str(int(rec.value) + 1).encode(), rec.revision)
                done += 1
            except ConflictError:
                conflicts += 1
    print(conflicts)
    """
)

PROCESSES = 8
INCREMENTS = 400


def _run_workers(url, keys, increments=INCREMENTS):
    procs = []
    try:
        for key in keys:
            procs.append(subprocess.Popen([sys.executable, "-c", _WORKER, url, key, str(increments)],
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err.decode()
    return sum(int(out) for out, _ in results)


@pytest.mark.slow
def test_processes_racing_on_one_key_lose_no_update(tmp_path):
    url = f"sqlite://{tmp_path}/race.db"
    with open_store(url) as s:
        s.create("/counter", b"0")
    conflicts = _run_workers(url, ["/counter"] * PROCESSES)
    with open_store(url) as s:
        rec = s.get("/counter")
        assert int(rec.value) == PROCESSES * INCREMENTS
        assert s.commit([]) == 1 + PROCESSES * INCREMENTS  # one revision per successful commit, none per conflict
    print(f"{conflicts} conflicts")


@pytest.mark.slow
def test_processes_on_distinct_keys_of_one_file_lose_no_update(tmp_path):
    url = f"sqlite://{tmp_path}/race.db"
    keys = [f"/counter/{i}" for i in range(PROCESSES)]
    with open_store(url) as s:
        s.commit([Create(k, b"0") for k in keys])
    assert _run_workers(url, keys) == 0  # distinct keys never conflict
    with open_store(url) as s:
        assert {r.key: int(r.value) for r in s.list("/counter/")} == {k: INCREMENTS for k in keys}


@pytest.mark.slow
def test_processes_creating_a_brand_new_file_at_once_all_succeed(tmp_path):
    url = f"sqlite://{tmp_path}/fresh/new.db"
    (tmp_path / "fresh").mkdir()
    keys = [f"/born/{i}" for i in range(PROCESSES)]
    assert _run_workers(url, keys, increments=0) == 0
    with open_store(url) as s:
        assert [r.key for r in s.list("/born/")] == sorted(keys)
        assert s.commit([]) == PROCESSES  # the schema was set up once, each create took one revision
    assert _mode(tmp_path / "fresh" / "new.db") == 0o600


def test_named_path_in_a_missing_directory_fails_and_creates_nothing(tmp_path, capsys):
    """Only the default datastore's directories are made; a named path in a missing directory is exit 3."""
    from topoipam.cli.main import main

    target = tmp_path / "nonexistent" / "dir" / "x.db"
    assert main(["--datastore", f"sqlite://{target}", "get", "ippool"]) == 3
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"cannot open SQLite datastore {target}: directory {target.parent} does not exist\n"
    assert not (tmp_path / "nonexistent").exists()
