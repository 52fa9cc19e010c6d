"""SqliteStore against raw sqlite3: the cost of the datastore layer on a read-modify-write loop.

Baseline: plain sqlite3 with the same pragmas (WAL, same synchronous), each
iteration ``BEGIN IMMEDIATE; SELECT; UPDATE; COMMIT`` on one row.
Measured: ``SqliteStore.get`` + ``SqliteStore.update`` (a compare-and-swap
commit) on one key. Also: the cost of opening a store on an existing file and
doing the first read (what each CNI plugin invocation pays).

Assignment-shaped commit (``--assign``): the steady-state IPAM assignment
commit, ``[Update(block, ~2 KB), Create(handle with a random 64-hex key),
Check(topology), Check(node)]``, through ``SqliteStore.commit`` next to the same
SQL issued directly with sqlite3 on a file SqliteStore made (the floor: BEGIN
IMMEDIATE; SELECT counter + checks; UPDATE meta; UPDATE kv; INSERT kv;
COMMIT) and the raw one-row read-modify-write loop above. Each round runs the
three variants back to back for the same number of commits; medians over
rounds, and the median of the per-round ratios (the machine is shared).

    .venv/bin/python bench/store_bench.py [--seconds 1] [--rounds 3]
    .venv/bin/python bench/store_bench.py --assign [--commits 3000] [--rounds 9]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

from topoipam.store.base import Check, Create, Update
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


# -- the assignment-shaped commit --------------------------------------------------

_BLOCK = "/topoipam/ipam/v2/assignment/ipv4/block/10.65.0.0-26"
_TOPOLOGY = "/topoipam/ipam/v2/topology"
_NODE = "/topoipam/resources/nodes/node-1"
_HANDLE = "/topoipam/ipam/v2/handle/"


def _assign_fixture(path: str, commits: int, synchronous: str) -> tuple[int, int, int, list[bytes], list[str]]:
    """A store file with the block, topology and node records; (block rev, topology rev, node rev, values, handles)."""
    with SqliteStore(f"sqlite://{path}?synchronous={synchronous}") as s:
        s.commit([Create(f"/topoipam/filler/{i:04d}", b"x" * 200) for i in range(300)])
        rev = s.commit([Create(_BLOCK, b"{}" * 1000), Create(_TOPOLOGY, b"7"), Create(_NODE, b"{}" * 300)])
    values = [os.urandom(1000).hex().encode() for _ in range(16)]  # ~2 KB, a new value every commit
    handles = [_HANDLE + os.urandom(32).hex() for _ in range(commits)]
    return rev, rev, rev, values, handles


def assign_store(path: str, synchronous: str, commits: int) -> float:
    """Microseconds per assignment-shaped commit through SqliteStore.commit."""
    block_rev, topo_rev, node_rev, values, handles = _assign_fixture(path, commits, synchronous)
    with SqliteStore(f"sqlite://{path}?synchronous={synchronous}") as s:
        commit = s.commit
        start = time.perf_counter()
        for i, handle in enumerate(handles):
            block_rev = commit([Update(_BLOCK, values[i & 15], block_rev), Create(handle, b"h" * 100),
                                Check(_TOPOLOGY, topo_rev), Check(_NODE, node_rev)])
        elapsed = time.perf_counter() - start
        assert s.get(_BLOCK).revision == block_rev
    return elapsed / commits * 1e6


_FOLDED_BUMP = ("UPDATE meta SET revision = ? WHERE id = 0 AND revision = ?"
                + " AND coalesce((SELECT revision FROM kv WHERE key = ?), 0) = ?" * 2)


def assign_floor(path: str, synchronous: str, commits: int, folded: bool = False) -> float:
    """Microseconds per commit of the same SQL issued directly with sqlite3 (what SqliteStore cannot beat).

    Not ``folded``: read counter and Checks in one SELECT, then bump the counter (what SqliteStore did up
    to 2026-11; it still does when its guess of the counter misses). ``folded``: one UPDATE bumps the
    counter from its known value if every Check holds (what SqliteStore does in the steady state).
    """
    block_rev, topo_rev, node_rev, values, handles = _assign_fixture(path, commits, synchronous)
    conn = sqlite3.connect(path, isolation_level=None, timeout=10.0, check_same_thread=False)
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    execute = conn.cursor().execute
    last = execute("SELECT revision FROM meta WHERE id = 0").fetchone()[0]
    start = time.perf_counter()
    for i, handle in enumerate(handles):
        execute("BEGIN IMMEDIATE")
        if folded:
            revision = last + 1
            assert execute(_FOLDED_BUMP, (revision, last, _TOPOLOGY, topo_rev, _NODE, node_rev)).rowcount == 1
        else:
            row = execute("SELECT (SELECT revision FROM meta WHERE id = 0), (SELECT revision FROM kv WHERE key = ?),"
                          " (SELECT revision FROM kv WHERE key = ?)", (_TOPOLOGY, _NODE)).fetchone()
            assert row[1] == topo_rev and row[2] == node_rev
            revision = row[0] + 1
            execute("UPDATE meta SET revision = ? WHERE id = 0", (revision,))
        assert execute("UPDATE kv SET value = ?, revision = ? WHERE key = ? AND revision = ?",
                       (values[i & 15], revision, _BLOCK, block_rev)).rowcount == 1
        execute("INSERT INTO kv (key, value, revision) VALUES (?, ?, ?)", (handle, b"h" * 100, revision))
        execute("COMMIT")
        block_rev = last = revision
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed / commits * 1e6


def assign_main(tmp: str, synchronous: str, commits: int, rounds: int) -> None:
    print(f"assignment-shaped commit (Update ~2 KB block + Create handle + 2 Checks), synchronous={synchronous}, "
          f"{commits} commits per variant per round, {rounds} rounds")
    print("floor: read counter + Checks, then bump; folded: one guarded bump (the store's steady-state SQL);"
          " store-fold: the store's Python overhead")
    print(f"{'round':<7}{'raw rmw us':>11}{'floor us':>10}{'folded us':>10}{'store us':>10}{'store-fold':>11}"
          f"{'floor/store':>12}{'rmw/store':>10}")
    rows = []
    for r in range(rounds):
        rmw = 1e6 / raw_loop(os.path.join(tmp, f"a-raw-{r}.db"), synchronous, 0.5)
        floor = assign_floor(os.path.join(tmp, f"a-floor-{r}.db"), synchronous, commits)
        folded = assign_floor(os.path.join(tmp, f"a-folded-{r}.db"), synchronous, commits, folded=True)
        ours = assign_store(os.path.join(tmp, f"a-store-{r}.db"), synchronous, commits)
        rows.append((rmw, floor, folded, ours, ours - folded, floor / ours, rmw / ours))
        print(f"{r:<7}" + "".join(f"{v:>{w}.{p}f}" for v, w, p in zip(rows[-1], _WIDTHS, _PLACES)))
    med = [statistics.median(col) for col in zip(*rows)]
    print(f"{'median':<7}" + "".join(f"{v:>{w}.{p}f}" for v, w, p in zip(med, _WIDTHS, _PLACES)))


_WIDTHS = (11, 10, 10, 10, 11, 12, 10)
_PLACES = (1, 1, 1, 1, 1, 2, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="duration of each loop")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per variant (best is kept)")
    ap.add_argument("--dir", default=None, help="directory for the database files (default: a temp dir)")
    ap.add_argument("--assign", action="store_true", help="only the assignment-shaped commit section")
    ap.add_argument("--commits", type=int, default=3000, help="commits per variant per round (--assign)")
    ap.add_argument("--synchronous", default="NORMAL", choices=("OFF", "NORMAL", "FULL"), help="for --assign")
    args = ap.parse_args()
    if args.assign:
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            print(f"sqlite {sqlite3.sqlite_version}, python {sys.version.split()[0]}, files in {tmp}")
            assign_main(tmp, args.synchronous, args.commits, args.rounds)
        return
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
