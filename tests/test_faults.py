"""Faults give a clear error and leave nothing half-written (issue 10, item 4).

Disk full (a small tmpfs this test mounts), a read-only database file (a read-only bind mount of
it) and directory (the tmpfs remounted read-only), the database locked by another process for
longer than the caller's deadline, and etcd killed while transactions are in flight. After each:
the error is a DatastoreUnavailableError / exit 3 / CNI code 11 with the reason, no traceback,
and the invariants hold (tests/invariants.py), every acknowledged assignment included.
The mounts need root; without it those tests are skipped.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time

import pytest

from conftest import sqlite_dump
from invariants import assert_invariants
from netns import PLUGIN, VENV_BIN, run_plugin
from storm import NODE, TOPOIPAM, make_world

pytestmark = pytest.mark.slow
needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None,
                                reason="mounting a small or read-only file system needs root")


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@pytest.fixture
def small_fs(tmp_path):
    """A 4 MiB tmpfs, unmounted afterwards."""
    where = tmp_path / "small"
    where.mkdir()
    _mount("-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(where))
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


def cli(url: str, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([TOPOIPAM, "--datastore", url, *argv], capture_output=True, text=True, timeout=timeout)


def _assign_until_error(url: str, limit: int = 50_000):
    """Assign one address per handle until the datastore fails; (acknowledged, the error)."""
    from topoipam.errors import TopoipamError
    from topoipam.ipam import AssignRequest, IpamService
    from topoipam.store import open_store

    store = open_store(url)
    svc, acks = IpamService(store), []
    try:
        for n in range(limit):
            try:
                res = svc.auto_assign(AssignRequest(node=NODE, handle=f"full.{n}", attrs={"node": NODE}))
            except TopoipamError as exc:
                return acks, exc
            acks.append((str(res.ipv4[0].ip), f"full.{n}"))
    finally:
        store.close()
    raise AssertionError(f"{limit} assignments and the disk is still not full")


@needs_root
def test_disk_full_is_a_clear_error_and_nothing_half_written(small_fs):
    from topoipam.errors import DatastoreUnavailableError
    from topoipam.store import open_store

    path, url = _seeded(small_fs)
    store = open_store(url)
    try:
        ballast = small_fs / "ballast"
        free = shutil.disk_usage(small_fs).free
        ballast.write_bytes(b"\0" * max(0, free - 256 * 1024))  # leave room for a few hundred assignments
        acks, error = _assign_until_error(url)
        assert isinstance(error, DatastoreUnavailableError), error
        assert "the disk is full, nothing was written" in error.message, error.message
        assert acks, "not one assignment fitted: the ballast left no room"
        before = sqlite_dump(url)
        r = cli(url, "ipam", "assign", "--node", NODE, "--handle", "one-more")
        assert r.returncode == 3 and "disk is full" in r.stderr and "Traceback" not in r.stderr, r
        assert sqlite_dump(url) == before
        assert_invariants(store, acks, str(path))
        ballast.unlink()  # room again: assignment works and nothing was lost
        r = cli(url, "ipam", "assign", "--node", NODE, "--handle", "after")
        assert r.returncode == 0, r
        assert_invariants(store, acks + [(r.stdout.strip(), "after")], str(path))
    finally:
        store.close()


def _seeded(small_fs):
    """A database on the small file system with the storm's pool and node, and one address assigned."""
    from topoipam.store import open_store

    path = small_fs / "ipam.db"
    url = f"sqlite://{path}"
    store = open_store(url)
    try:
        make_world(store)
    finally:
        store.close()
    assert cli(url, "ipam", "assign", "--node", NODE, "--handle", "first").returncode == 0
    return path, url


def _assert_write_refused(url: str, path, before) -> None:
    r = cli(url, "ipam", "assign", "--node", NODE, "--handle", "refused")
    assert r.returncode == 3, r
    assert "is read-only" in r.stderr and "nothing was written" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    env = {"PATH": os.environ["PATH"], "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "ro", "CNI_IFNAME": "eth0",
           "CNI_NETNS": "/var/run/netns/ro"}
    conf = {"cniVersion": "1.0.0", "name": "net", "type": "bridge",
            "ipam": {"type": "topoipam-cni", "nodename": NODE, "datastore": url, "agent_socket": ""}}
    call = run_plugin(PLUGIN, env, conf)
    assert call.returncode == 1 and call.json["code"] == 11 and "is read-only" in call.json["msg"], call
    assert "Traceback" not in call.stderr


@needs_root
def test_read_only_database_file(small_fs):
    path, url = _seeded(small_fs)
    before = sqlite_dump(url)
    _mount("--bind", str(path), str(path))
    try:
        _mount("-o", "remount,ro,bind", str(path))
        _assert_write_refused(url, path, before)
    finally:
        subprocess.run(["umount", str(path)], check=True)
    assert sqlite_dump(url) == before
    assert_invariants_at(url, path)


@needs_root
def test_read_only_directory(small_fs):
    path, url = _seeded(small_fs)
    before = sqlite_dump(url)
    _mount("-o", "remount,ro", str(small_fs))
    try:
        _assert_write_refused(url, path, before)
    finally:
        _mount("-o", "remount,rw", str(small_fs))
    assert sqlite_dump(url) == before
    assert_invariants_at(url, path)


def assert_invariants_at(url: str, path) -> None:
    from topoipam.store import open_store

    store = open_store(url)
    try:
        assert_invariants(store, sqlite_path=str(path))
    finally:
        store.close()


LOCK_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")  # the write lock, held until our stdin closes
print("LOCKED", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


def test_database_locked_longer_than_the_deadline(tmp_path):
    """Another process holds the write lock and never lets go while we wait: CNI code 11, CLI exit 3,
    both with the reason, both back while the lock is still held (the bound: ``?timeout=1``)."""
    from topoipam.store import open_store

    path = tmp_path / "ipam.db"
    store = open_store(f"sqlite://{path}")
    make_world(store)
    store.close()
    url = f"sqlite://{path}?timeout=1"
    before = sqlite_dump(f"sqlite://{path}")
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert holder.stdout.readline() == b"LOCKED\n"
        r = cli(url, "ipam", "assign", "--node", NODE, "--handle", "locked", timeout=60)
        assert r.returncode == 3 and "busy" in r.stderr and "Traceback" not in r.stderr, r
        env = {"PATH": os.environ["PATH"], "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "locked", "CNI_IFNAME": "eth0",
               "CNI_NETNS": "/var/run/netns/locked"}
        conf = {"cniVersion": "1.0.0", "name": "net", "type": "bridge",
                "ipam": {"type": "topoipam-cni", "nodename": NODE, "datastore": url, "agent_socket": ""}}
        call = run_plugin(PLUGIN, env, conf, timeout=60)
        assert call.returncode == 1 and call.json["code"] == 11 and "busy" in call.json["msg"], call
        assert holder.poll() is None, "the lock holder let go: the answers were not bounded by the deadline"
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert sqlite_dump(f"sqlite://{path}") == before
    assert_invariants_at(url, path)


@pytest.mark.etcd
def test_etcd_killed_mid_transaction(tmp_path):
    """Assigners on etcd while etcd is SIGKILLed (5 times, at random moments) and restarted: each failure
    is a DatastoreUnavailableError naming the endpoint; afterwards every acknowledged assignment is there
    and the invariants hold (an etcd transaction lands whole or not at all; an unknown outcome is a leak)."""
    from etcd_cluster import HAVE_ETCD, SKIP_REASON, EtcdCluster
    from topoipam.errors import DatastoreUnavailableError, TopoipamError
    from topoipam.ipam import AssignRequest, IpamService
    from topoipam.store import open_store

    if not HAVE_ETCD:
        pytest.skip(SKIP_REASON)
    with EtcdCluster(tmp_path / "etcd") as cluster:
        url = cluster.url() + "?timeout=2"
        store = open_store(url)
        make_world(store)
        acks, errors, lock, stop = [], [], threading.Lock(), threading.Event()

        def assigner(tag):
            own = open_store(url)
            svc, n = IpamService(own), 0
            try:
                while not stop.is_set():
                    handle, n = f"{tag}.{n}", n + 1
                    try:
                        res = svc.auto_assign(AssignRequest(node=NODE, handle=handle, attrs={"node": NODE}))
                    except TopoipamError as exc:
                        with lock:
                            errors.append(exc)
                        time.sleep(0.05)
                        continue
                    with lock:
                        acks.append((str(res.ipv4[0].ip), handle))
            finally:
                own.close()

        threads = [threading.Thread(target=assigner, args=(f"e{t}",)) for t in range(3)]
        for t in threads:
            t.start()
        rng = random.Random(14)
        try:
            for _ in range(5):
                time.sleep(rng.uniform(0.2, 0.8))
                cluster.kill(0)
                time.sleep(0.5)
                cluster.restart(0)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=120)
        assert errors, "etcd was killed five times and no assignment noticed"
        for exc in errors:
            assert isinstance(exc, DatastoreUnavailableError), repr(exc)
            assert "127.0.0.1" in exc.message, exc.message
        assert acks
        assert_invariants(store, acks)
        store.close()
