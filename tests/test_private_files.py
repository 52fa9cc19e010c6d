"""Files and sockets are private, and no input reaches a shell, a path of its choosing or SQL text (issue 10, item 5).

The audit behind these tests is in docs/robustness.md.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess

from conftest import sqlite_dump
from invariants import assert_invariants
from storm import NODE, TOPOIPAM, make_world


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_database_wal_and_shm_are_0600_whatever_the_umask(tmp_path):
    from topoipam.store.sqlite import SqliteStore

    path = tmp_path / "store.db"
    old = os.umask(0)
    try:
        with SqliteStore(f"sqlite://{path}") as s:
            s.create("/k", b"v")
            for suffix in ("", "-wal", "-shm"):  # SQLite gives its side files the database file's mode
                assert _mode(f"{path}{suffix}") == 0o600, suffix
    finally:
        os.umask(old)


def test_agent_socket_is_0600_whatever_the_umask(tmp_path):
    from topoipam.agent.server import AgentServer

    path = tmp_path / "agent.sock"
    old = os.umask(0)
    try:
        server = AgentServer(str(path), lambda env, stdin: (0, b""))
        server.start()
    finally:
        os.umask(old)
    try:
        assert stat.S_ISSOCK(os.lstat(path).st_mode) and _mode(path) == 0o600
    finally:
        server.shutdown(grace=5)


def test_the_agent_ignores_a_datastore_named_by_its_client(tmp_path):
    """A client of the socket cannot make the agent open (create) a file of its choosing."""
    from topoipam.agent.daemon import Agent
    from topoipam.cni.agent_client import call
    from topoipam.store import open_store

    store = open_store(f"sqlite://{tmp_path}/agent.db")
    agent = Agent(store, NODE, {"rack": "0"}, socket_path=str(tmp_path / "a.sock"))
    try:
        make_world(store)
        agent.start()
        evil = tmp_path / "chosen-by-client.db"
        conf = {"cniVersion": "1.0.0", "name": "net", "type": "bridge",
                "ipam": {"type": "topoipam-cni", "datastore": f"sqlite://{evil}"}}
        env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_NETNS": "/var/run/netns/c1"}
        code, out = call(agent.server.path, env, json.dumps(conf).encode())
        assert code == 0, out
        assert not evil.exists()
    finally:
        agent.stop(grace=10)
        store.close()


HOSTILE_NAMES = ["x'; DROP TABLE kv; --", '" OR 1=1 --', "../../../../tmp/topoipam-escape", "a\x00b",
                 "$(touch shell-ran)", "`touch shell-ran`; touch shell-ran", "%s%s", "\\'"]


def test_hostile_names_are_data_not_sql_paths_or_commands(tmp_path, monkeypatch):
    """Handles, nodes and attributes full of SQL, path and shell syntax: stored and read back as plain keys,
    or rejected; no file appears, the tables stay whole."""
    url = f"sqlite://{tmp_path}/ipam.db"
    from topoipam.store import open_store

    store = open_store(url)
    make_world(store)
    monkeypatch.chdir(tmp_path)
    before_files = set(os.listdir(tmp_path))
    for name in HOSTILE_NAMES:
        if "\x00" in name:  # an argv cannot carry NUL: the library takes it
            continue
        r = subprocess.run([TOPOIPAM, "--datastore", url, "ipam", "assign", "--node", NODE, "--handle", name,
                            "--attr", f"pod={name}"], capture_output=True, text=True)
        assert r.returncode == 0, r
        shown = subprocess.run([TOPOIPAM, "--datastore", url, "ipam", "show", "--ip", r.stdout.strip()],
                               capture_output=True, text=True)
        assert f"Handle ID: {name}" in shown.stdout, shown
        before = sqlite_dump(url)
        r = subprocess.run([TOPOIPAM, "--datastore", url, "ipam", "assign", "--node", name],
                           capture_output=True, text=True)
        assert r.returncode == 1 and "does not exist" in r.stderr, r  # an unknown node, nothing written
        assert sqlite_dump(url) == before
    from topoipam.ipam import AssignRequest, IpamService

    IpamService(store).auto_assign(AssignRequest(node=NODE, handle="a\x00b", attrs={"pod": "a\x00b"}))
    assert set(os.listdir(tmp_path)) == before_files  # no shell-ran, no escape
    assert not os.path.exists("/tmp/topoipam-escape")
    assert_invariants(store, sqlite_path=f"{tmp_path}/ipam.db")
    store.close()
