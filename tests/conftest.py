"""Shared fixtures.

``store``: the datastore contract fixture. Every test that takes it runs once per
backend: memory, SQLite (a real file in tmp_path) and etcd (a real etcd started
on loopback by the tests; skipped with a reason where no etcd binary exists).
"""

from __future__ import annotations

import pytest

from topoipam.store import open_store

BACKENDS = ["memory", "sqlite", "etcd"]


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    if request.param == "memory":
        s = open_store("memory://")
    elif request.param == "sqlite":
        s = open_store(f"sqlite://{tmp_path}/store.db")
    elif request.param == "etcd":
        server = request.getfixturevalue("etcd_server")
        server.wipe()
        s = open_store(server.url())
    else:  # pragma: no cover
        pytest.skip(f"backend {request.param} not available")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory):
    """One real single-member etcd on loopback for the session (tests/etcd_cluster.py); stopped by pid."""
    from etcd_cluster import HAVE_ETCD, SKIP_REASON, EtcdCluster

    if not HAVE_ETCD:
        pytest.skip(SKIP_REASON)
    with EtcdCluster(tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster


@pytest.fixture
def sqlite_url(tmp_path):
    """URL of a fresh SQLite datastore file, for CLI tests that run the real entry point."""
    return f"sqlite://{tmp_path}/topoipam.db"
