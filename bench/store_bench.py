"""SqliteStore against raw sqlite3: the cost of the datastore layer on a read-modify-write loop.

Baseline: plain sqlite3 with the same pragmas (WAL, same synchronous), each
iteration ``BEGIN IMMEDIATE; SELECT; UPDATE; COMMIT`` on one row.
Measured: ``SqliteStore.get`` + ``SqliteStore.update`` (a compare-and-swap
commit) on one key. Also: the cost of opening a store on an existing file and
doing the first read (what each CNI plugin invocation pays).

    .venv/bin/python bench/store_bench.py [--seconds 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time

from topoipam.store.sqlite import SqliteStore


def raw_loop(path: str, synchronous: str, seconds: float, counter: bool = False) -> float:
    """Raw sqlite3 ops/s; ``counter``: also bump a store-wide revision row, as SqliteStore does."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, revision INTEGER NOT NULL)"
                 " WITHOUT ROWID")
    conn.execute("CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY, revision INTEGER NOT NULL)")
    conn.execute("INSERT OR REPLACE INTO meta VALUES (0, 1)")
    conn.execute("INSERT OR REPLACE INTO kv VALUES ('/counter', CAST('0' AS BLOB), 1)")
    n, deadline = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        conn.execute("BEGIN IMMEDIATE")
        value, revision = conn.execute("SELECT value, revision FROM kv WHERE key = ?", ("/counter",)).fetchone()
        if counter:
            revision = conn.execute("UPDATE meta SET revision = revision + 1 WHERE id = 0 RETURNING revision").fetchone()[0]
        else:
            revision += 1
        conn.execute("UPDATE kv SET value = ?, revision = ? WHERE key = ?",
                     (str(int(value) + 1).encode(), revision, "/counter"))
        conn.execute("COMMIT")
        n += 1
    elapsed = time.perf_counter() - start
    conn.close()
    return n / elapsed


def store_loop(path: str, synchronous: str, seconds: float) -> float:
    with SqliteStore(f"sqlite://{path}?synchronous={synchronous}") as s:
        s.create("/counter", b"0")
        n, deadline = 0, time.perf_counter() + seconds
        start = time.perf_counter()
        while time.perf_counter() < deadline:
            rec = s.get("/counter")
            s.update("/counter", str(int(rec.value) + 1).encode(), rec.revision)
            n += 1
        elapsed = time.perf_counter() - start
        assert int(s.get("/counter").value) == n
    return n / elapsed


_OPEN_SNIPPET = """
import time
t0 = time.perf_counter()
from topoipam.store.sqlite import SqliteStore
t1 = time.perf_counter()
s = SqliteStore({url!r})
s.get("/counter")
t2 = time.perf_counter()
print((t1 - t0) * 1e3, (t2 - t1) * 1e3)
"""


def open_cost(path: str, runs: int = 15) -> tuple[float, float]:
    """Median (import ms, open + first get ms) in fresh interpreters on an existing file.

    Bytecode is cached (in a temporary prefix, as an installed package has it),
    whatever PYTHONDONTWRITEBYTECODE says; the first run only warms that cache.
    """
    env = dict(os.environ, PYTHONPYCACHEPREFIX=os.path.join(os.path.dirname(path), "pycache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    with SqliteStore(f"sqlite://{path}") as s:
        if s.get("/counter") is None:
            s.create("/counter", b"0")
    samples = []
    for i in range(runs + 1):
        out = subprocess.run([sys.executable, "-c", _OPEN_SNIPPET.format(url=f"sqlite://{path}")],
                             check=True, capture_output=True, text=True, env=env).stdout
        if i:
            samples.append(tuple(float(x) for x in out.split()))
    samples.sort(key=lambda s: s[1])
    imports = sorted(s[0] for s in samples)
    return imports[len(imports) // 2], samples[len(samples) // 2][1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="duration of each loop")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per variant (best is kept)")
    ap.add_argument("--dir", default=None, help="directory for the database files (default: a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        print(f"sqlite {sqlite3.sqlite_version}, python {sys.version.split()[0]}, files in {tmp}")
        print("raw: one row, BEGIN IMMEDIATE/SELECT/UPDATE/COMMIT; raw+rev: also bumps a revision row (as the store)")
        print(f"{'synchronous':<12}{'raw ops/s':>12}{'raw+rev ops/s':>15}{'store ops/s':>13}"
              f"{'store/raw':>11}{'store/raw+rev':>15}")
        for sync in ("NORMAL", "FULL"):
            # Interleaved rounds, best of each: the machine is shared, so a slow spell hits one round, not one variant.
            raw = raw_rev = ours = 0.0
            for r in range(args.rounds):
                raw = max(raw, raw_loop(os.path.join(tmp, f"raw-{sync}-{r}.db"), sync, args.seconds))
                raw_rev = max(raw_rev, raw_loop(os.path.join(tmp, f"rawrev-{sync}-{r}.db"), sync, args.seconds,
                                                counter=True))
                ours = max(ours, store_loop(os.path.join(tmp, f"store-{sync}-{r}.db"), sync, args.seconds))
            print(f"{sync:<12}{raw:>12,.0f}{raw_rev:>15,.0f}{ours:>13,.0f}{ours / raw:>11.2f}{ours / raw_rev:>15.2f}")
        imp, first = open_cost(os.path.join(tmp, "store-NORMAL-0.db"))
        print(f"fresh interpreter, existing file (median of 15): import topoipam.store.sqlite {imp:.1f} ms, "
              f"open + first get {first:.2f} ms")


if __name__ == "__main__":
    main()
