"""The SQLite backend beyond the contract: the file on disk, options, many processes, broken files."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import traceback

import pytest

from topoipam.errors import AlreadyExistsError, ConflictError, DatastoreUnavailableError, ValidationError
from topoipam.store import Check, Create, Record, Update, open_store
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


# -- the commit's guessed counter, and forks -------------------------------------------


def _counter(path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT revision FROM meta WHERE id = 0").fetchone()[0]
    finally:
        conn.close()


def test_commit_after_another_store_committed_on_the_same_file(tmp_path):
    """The counter one store last saw is stale once another store on the file commits: the commit still lands right."""
    path = tmp_path / "s.db"
    with SqliteStore(f"sqlite://{path}") as one, SqliteStore(f"sqlite://{path}") as two:
        r1 = one.commit([Create("/block", b"1"), Create("/node", b"n")])
        r2 = one.commit([Update("/block", b"2", r1), Check("/node", r1)])  # guessed from one's own last commit
        assert r2 == r1 + 1
        r3 = two.commit([Create("/other", b"x")])
        r4 = one.commit([Update("/block", b"3", r2), Check("/node", r1), Check("/absent", 0)])
        assert (r3, r4) == (r2 + 1, r2 + 2)
        assert two.get("/block") == Record("/block", b"3", r4)
        assert two.commit([Update("/other", b"y", r3)]) == r4 + 1  # two's guess is stale too
        assert one.commit([Update("/block", b"4", r4)]) == r4 + 2
        assert _counter(path) == r4 + 2


def test_check_moved_by_another_store_fails_and_writes_nothing(tmp_path):
    path = tmp_path / "s.db"
    with SqliteStore(f"sqlite://{path}") as one, SqliteStore(f"sqlite://{path}") as two:
        r1 = one.commit([Create("/block", b"1"), Create("/node", b"n")])
        two.update("/node", b"m", r1)
        with pytest.raises(ConflictError, match="/node: revision 1 expected, found 2"):
            one.commit([Update("/block", b"2", r1), Create("/handle", b"h"), Check("/node", r1)])
        assert one.get("/block") == Record("/block", b"1", r1)
        assert one.get("/handle") is None
        assert _counter(path) == r1 + 1


@pytest.mark.parametrize("ops, error, match", [
    # the counter guess is right (the store made the last commit), so only the Checks can fail the bump
    (lambda r: [Update("/block", b"2", r), Create("/handle", b"h"), Check("/node", r + 5)],
     ConflictError, "key /node: revision 6 expected, found 1"),
    (lambda r: [Update("/block", b"2", r), Check("/node", 0)], ConflictError, "key /node: revision 0 expected, found 1"),
    (lambda r: [Update("/block", b"2", r), Check("/absent", r)], ConflictError, "key /absent: revision 1 expected, found 0"),
    # the first op whose condition fails is named, also when a later Check fails as well
    (lambda r: [Update("/block", b"2", r + 1), Check("/node", r + 1)], ConflictError, "key /block"),
    (lambda r: [Create("/node", b"again"), Check("/absent", r)], AlreadyExistsError, "key /node already exists"),
    # every Check holds: the writes judge themselves after the bump, which is rolled back
    (lambda r: [Check("/node", r), Update("/block", b"2", r + 1)], ConflictError, "key /block: revision 2 expected"),
    (lambda r: [Update("/block", b"2", r), Create("/node", b"again"), Check("/absent", 0)],
     AlreadyExistsError, "key /node already exists"),
])
def test_failed_condition_with_the_counter_guessed_right_writes_nothing(tmp_path, ops, error, match):
    path = tmp_path / "s.db"
    with SqliteStore(f"sqlite://{path}") as s:
        r = s.commit([Create("/block", b"1"), Create("/node", b"n")])
        with pytest.raises(error, match=match):
            s.commit(ops(r))
        assert s.get("/block") == Record("/block", b"1", r)
        assert s.get("/node") == Record("/node", b"n", r)
        assert s.get("/handle") is None and s.get("/absent") is None
        assert _counter(path) == r
        assert s.commit([Check("/node", r)]) == r  # only Checks: the current revision, nothing written
        assert s.commit([Update("/block", b"2", r), Check("/node", r), Check("/absent", 0)]) == r + 1


def _forked(child) -> int:
    """Run ``child()`` in a forked child; its exit status (0: it returned without raising)."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            signal.alarm(30)  # a child stuck on a lock dies (SIGALRM) instead of hanging the test
            child()
            code = 0
        except BaseException:
            traceback.print_exc()  # the child's own failure, on the test's captured stderr
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_forked_child_opens_its_own_connection_and_the_parent_keeps_its(tmp_path):
    path = tmp_path / "s.db"
    with SqliteStore(f"sqlite://{path}") as s:
        r = s.create("/k", b"parent")
        conn = s._guarded(lambda c: c)

        def child():
            assert s._guarded(lambda c: c) is not conn
            assert s.get("/k").value == b"parent"
            s.commit([Update("/k", b"child", r), Create("/born", b"in child")])

        assert _forked(child) == 0
        assert s._guarded(lambda c: c) is conn  # the parent's connection was neither closed nor replaced
        assert s.get("/k") == Record("/k", b"child", r + 1)
        assert s.commit([Update("/k", b"parent again", r + 1), Check("/born", r + 1)]) == r + 2


def test_forked_child_can_use_a_store_whose_lock_a_parent_thread_held_at_the_fork(tmp_path):
    path = tmp_path / "s.db"
    with SqliteStore(f"sqlite://{path}") as s:
        s.create("/k", b"v")
        inside, leave = threading.Event(), threading.Event()
        holder = threading.Thread(target=lambda: s._guarded(lambda c: (inside.set(), leave.wait(30))))
        holder.start()
        try:
            assert inside.wait(30)  # the thread is in a store call, holding the store's lock
            assert _forked(lambda: s.create("/from-child", b"c")) == 0
        finally:
            leave.set()
            holder.join()
        assert s.get("/from-child").value == b"c"


def test_commit_waits_for_a_writer_that_lets_go_within_the_timeout(tmp_path):
    path = tmp_path / "s.db"
    with SqliteStore(f"sqlite://{path}?timeout=20") as s:
        r = s.create("/k", b"v")  # the store's connection is open: the commit below takes the inline path
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        release = threading.Timer(0.3, lambda: holder.execute("ROLLBACK"))
        release.start()
        try:
            assert s.update("/k", b"w", r) == r + 1
        finally:
            release.join()
            holder.close()
        assert s.get("/k").value == b"w"


def test_steady_state_commit_is_one_statement_per_write_plus_the_bump(tmp_path):
    """The guessed bump judges the Checks: no separate read of the counter while this store is the only writer."""
    with SqliteStore(f"sqlite://{tmp_path}/s.db") as s:
        r = s.commit([Create("/block", b"1"), Create("/node", b"n")])
        statements: list[str] = []
        s._guarded(lambda c: c.set_trace_callback(statements.append))
        r2 = s.commit([Update("/block", b"2", r), Create("/handle", b"h"), Check("/node", r), Check("/absent", 0)])
        s._guarded(lambda c: c.set_trace_callback(None))
    assert r2 == r + 1
    assert [st.split()[0] for st in statements] == ["BEGIN", "UPDATE", "UPDATE", "INSERT", "COMMIT"], statements
    assert statements[1].startswith("UPDATE meta SET revision = 2 WHERE id = 0 AND revision = 1 AND")
