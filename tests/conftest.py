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


class CliResult:
    """Exit code, stdout and stderr of one CLI run."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"CliResult(code={self.code!r}, out={self.out!r}, err={self.err!r})"


@pytest.fixture
def cli(sqlite_url, capsys, monkeypatch):
    """Run the real CLI entry point in-process against ``sqlite_url``.

    ``cli("get", "ippool", "-o", "wide", stdin=None) -> CliResult``; ``--datastore`` is added.
    """
    import io

    from topoipam.cli.main import main

    def run(*argv: str, stdin: str | None = None) -> CliResult:
        capsys.readouterr()
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin or ""))
        code = main(["--datastore", sqlite_url, *argv])
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


def sqlite_dump(url: str) -> list[str]:
    """Every row of an SQLite datastore file (all tables, incl. the revision counter), as SQL text."""
    import sqlite3

    path = url[len("sqlite://"):]
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()
