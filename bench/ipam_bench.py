"""IPAM benchmark (not a test): assignment rate, datastore operations per assignment, CAS retries, claim cost.

    .venv/bin/python bench/ipam_bench.py            # full run (~2-3 minutes)
    .venv/bin/python bench/ipam_bench.py --quick    # smaller sizes
    .venv/bin/python bench/ipam_bench.py --l2       # every assignment under an L2 segment's rule
                                                    # (network, broadcast, gateway unusable: core.block.L2Segment)

Prints, in one run on this machine:
1. a raw sqlite3 read-modify-write loop of one row (WAL; synchronous NORMAL and FULL): the baseline;
2. in-process auto_assign rate on the SQLite store (same synchronous modes) with the default topology
   (kept between calls, fenced in every commit), with a warm topology given by the caller (the agent),
   and the default run's datastore calls replayed alone (the floor the store sets);
3. datastore operations per assignment (CountingStore) and time per assignment at 10 and 10,000 nodes;
4. compare-and-swap retries per assignment from 4 processes assigning on 4 nodes (node-affine blocks)
   on one SQLite file;
5. reads to claim a new block in a /8 pool that already has 100,000 blocks claimed, from exactly where
   the new node starts, next to the same claim in an empty pool and to one listing of every block
   (what Calico's findUsableBlock does);
6. round trips and CAS retries per assignment on a real etcd (started on loopback, stopped by pid),
   from 1 and 4 processes on their own nodes.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sqlite3
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from topoipam.core import blockgen  # noqa: E402
from topoipam.core.block import L2Segment  # noqa: E402
from topoipam.ipam import AssignRequest, IpamService, StaticTopology, StoreTopology, keys  # noqa: E402
from topoipam.model.storage import to_storage  # noqa: E402
from topoipam.model.types import IPPool, IPPoolSpec, Metadata, Node  # noqa: E402
from topoipam.model.validate import validate  # noqa: E402
from topoipam.resources.keys import resource_key  # noqa: E402
from topoipam.store import open_store  # noqa: E402
from topoipam.store.base import Create  # noqa: E402
from topoipam.store.counting import CountingStore  # noqa: E402

CLOCK = 1_800_000_000.0


def raw_rmw(path: str, sync: str, n: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={sync}")
    conn.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, revision INTEGER NOT NULL) WITHOUT ROWID")
    conn.execute("INSERT INTO kv VALUES ('k', ?, 1)", (b'{"n":0}',))
    t, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        conn.execute("BEGIN IMMEDIATE")
        value, rev = conn.execute("SELECT value, revision FROM kv WHERE key = 'k'").fetchone()
        doc = json.loads(value)
        doc["n"] += 1
        conn.execute("UPDATE kv SET value = ?, revision = ? WHERE key = 'k' AND revision = ?",
                     (json.dumps(doc).encode(), rev + 1, rev))
        conn.execute("COMMIT")
    rates = (n / (time.perf_counter() - t), n / (time.process_time() - cpu))
    conn.close()
    return rates


def setup(store, cidr: str, nodes: int, warm: bool = False):
    """A pool and ``nodes`` nodes written in batches (as resources/ would, validated)."""
    pool = validate(IPPool(Metadata("pool"), IPPoolSpec(cidr=cidr)))
    ops = [Create(resource_key("IPPool", "pool"), to_storage(pool))]
    for i in range(nodes):
        node = validate(Node(Metadata(f"node-{i}", labels={"rack": str(i % 4)})))
        ops.append(Create(resource_key("Node", node.name), to_storage(node)))
        if len(ops) >= 500:
            store.commit(ops)
            ops = []
    if ops:
        store.commit(ops)
    svc = IpamService(store, clock=lambda: CLOCK)
    if warm:  # every node holds a block and one address, as in a running cluster
        for i in range(nodes):
            svc.auto_assign(AssignRequest(node=f"node-{i}", handle=f"warm-{i}"))
    return svc


def warm_topology(store, nodes: int) -> StaticTopology:
    st = StoreTopology(store)
    return StaticTopology(st.pools(), {f"node-{i}": st.node(f"node-{i}") for i in range(nodes)},
                          st.ipam_config(), st.reservations())


UNUSABLE = None  # --l2: L2Segment(), the rule of an assignment under bridge/macvlan/ipvlan


def assign_rate(svc, n: int, nodes: int, tag: str) -> tuple[float, float]:
    """(wall-clock rate, CPU-time rate): the machine is shared, so CPU time is the steadier figure."""
    t, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        node = f"node-{i % nodes}"
        svc.auto_assign(AssignRequest(node=node, handle=f"{tag}.{i}", attrs={"node": node, "pod": f"pod-{i}"},
                                      unusable=UNUSABLE))
    return n / (time.perf_counter() - t), n / (time.process_time() - cpu)


class Recorder:
    """Forwards to a store and records every call, so that the datastore share can be replayed alone."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, []

    def __getattr__(self, name):
        target = getattr(self.inner, name)
        if name not in ("get", "get_many", "list", "commit"):
            return target

        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return target(*args, **kwargs)
        return call


def replay_rate(path: str, sync: str, calls, n: int, untimed: int = 0) -> tuple[float, float]:
    """Replay the recorded datastore calls on a copy of the database as it was before the run; the
    first ``untimed`` ones (the recording service's warm-up) are replayed before the clock starts."""
    store = open_store(f"sqlite://{path}?synchronous={sync}")
    for name, args, kwargs in calls[:untimed]:
        getattr(store, name)(*args, **kwargs)
    t, cpu = time.perf_counter(), time.process_time()
    for name, args, kwargs in calls[untimed:]:
        getattr(store, name)(*args, **kwargs)
    rates = n / (time.perf_counter() - t), n / (time.process_time() - cpu)
    store.close()
    return rates


def snapshot_db(src: str, dst: str) -> None:
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)


def _rates_round(tmp: str, sync: str, n_raw: int, n: int, rnd: int) -> tuple:
    """One round: the raw loop, the default service, its datastore calls replayed alone, the warm service.

    The measured run goes to the store directly; the same run is then done again on a copy of the
    database as it was before, through a Recorder (which costs time: it is not measured), and its
    calls are replayed alone on another copy."""
    raw = raw_rmw(os.path.join(tmp, f"raw-{sync}-{rnd}.db"), sync, n_raw)
    path = f"{tmp}/rate-{sync}-{rnd}.db"
    store = open_store(f"sqlite://{path}?synchronous={sync}")
    svc = setup(store, "10.0.0.0/8", 10)
    assign_rate(svc, n // 10, 10, "pre")  # the service's first calls read what it keeps
    for copy in ("rec", "replay"):
        snapshot_db(path, f"{path}.{copy}")
    default = assign_rate(svc, n, 10, "default")
    store.close()
    store = open_store(f"sqlite://{path}.rec?synchronous={sync}")
    recorder = Recorder(store)
    svc = IpamService(recorder, clock=lambda: CLOCK)
    assign_rate(svc, n // 10, 10, "warm-up")  # a fresh service's first calls read what it keeps
    warmed = len(recorder.calls)
    assign_rate(svc, n, 10, "default")
    store.close()
    floor = replay_rate(f"{path}.replay", sync, recorder.calls, n, untimed=warmed)
    store = open_store(f"sqlite://{tmp}/rate-warm-{sync}-{rnd}.db?synchronous={sync}")
    setup(store, "10.0.0.0/8", 10)
    warm = assign_rate(IpamService(store, clock=lambda: CLOCK, topology=warm_topology(store, 10)), n, 10, "warm")
    store.close()
    return raw, default, warm, floor


def section_rates(tmp: str, quick: bool, rounds: int = 3) -> None:
    print(f"1-2. per second, SQLite WAL, in-process, one writer; wall clock / per CPU second (% of the raw loop "
          f"of the same round); {rounds} rounds, then the medians (of rates and of the ratios)")
    print(f"  {'synchronous':12s} {'raw RMW of one row':>22s} {'assign (default: kept, fenced)':>34s} "
          f"{'assign (warm topology given)':>34s}")

    def median(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2

    for sync, n_raw, n in (("NORMAL", 20000, 3000), ("FULL", 2000, 400)):
        if quick:
            n_raw, n = n_raw // 4, n // 4
        results = [_rates_round(tmp, sync, n_raw, n, rnd) for rnd in range(rounds)]

        def fmt(i):  # column i of every round: median rates, median of the same-round ratios
            r = [median([res[i][k] for res in results]) for k in (0, 1)]
            q = [median([res[i][k] / res[0][k] for res in results]) for k in (0, 1)]
            return f"{r[0]:7.0f} ({q[0]:5.1%}) / {r[1]:7.0f} ({q[1]:5.1%})"
        for raw, default, warm, floor in results:
            print(f"  {sync + ' round':12s} {raw[0]:9.0f} / {raw[1]:9.0f}   "
                  + "   ".join(f"{r[0]:7.0f} ({r[0] / raw[0]:5.1%}) / {r[1]:7.0f} ({r[1] / raw[1]:5.1%})"
                             for r in (default, warm))
                  + f"   replayed alone: {floor[0]:7.0f} ({floor[0] / raw[0]:5.1%}) / {floor[1]:7.0f} "
                  f"({floor[1] / raw[1]:5.1%})")
        raw = [median([res[0][k] for res in results]) for k in (0, 1)]
        print(f"  {sync + ' median':12s} {raw[0]:9.0f} / {raw[1]:9.0f}   {fmt(1)}   {fmt(2)}")
        print(f"  {'':12s} {'':21s}   datastore calls of the default run replayed alone: {fmt(3)}")


def section_nodes(tmp: str, quick: bool) -> None:
    big = 2000 if quick else 10_000
    print(f"3. per assignment at 10 and {big:,} nodes (SQLite NORMAL; 3 x 640 assignments on node-0..9: "
          "operations over all three rounds, time of the best round)")
    rows = []
    for nodes in (10, big):
        store = CountingStore(open_store(f"sqlite://{tmp}/nodes-{nodes}.db"))
        svc = setup(store, "10.0.0.0/8", nodes, warm=True)
        n, times = 640, []  # 64 per node and round: each round fills (and claims) one block per node
        for rnd in range(4):  # round 0 warms the service (first reads of what it keeps)
            if rnd == 1:
                start = store.counts()
            t, cpu = time.perf_counter(), time.process_time()
            for i in range(n):
                svc.auto_assign(AssignRequest(node=f"node-{i % 10}", handle=f"m{rnd}.{i}"))
            times.append(((time.perf_counter() - t) / n, (time.process_time() - cpu) / n))
        c = store.counts() - start
        dt = (min(x[0] for x in times[1:]), min(x[1] for x in times[1:]))
        rows.append((nodes, c.reads / (3 * n), c.writes / (3 * n), c.round_trips / (3 * n), dt))
        store.close()
    for nodes, r, w, rt, dt in rows:
        print(f"  {nodes:>6,} nodes: {r:.3f} reads + {w:.3f} commits ({rt:.3f} round trips) per assignment, "
              f"{dt[0] * 1e6:.0f} us wall, {dt[1] * 1e6:.0f} us CPU")
    print(f"  cost ratio {big:,} / 10 nodes: {rows[1][4][0] / rows[0][4][0]:.2f}x wall, "
          f"{rows[1][4][1] / rows[0][4][1]:.2f}x CPU")


def _retry_worker(url: str, node: str, n: int, queue) -> None:
    store = CountingStore(open_store(url))
    svc = IpamService(store, clock=lambda: CLOCK)
    for i in range(n):
        svc.auto_assign(AssignRequest(node=node, handle=f"{node}.{i}", attrs={"node": node, "pod": f"pod-{i}"}))
    c = store.counts()
    store.close()
    queue.put((c.reads, c.writes, c.failed_writes))


def section_retries(tmp: str, quick: bool) -> None:
    import multiprocessing
    n = 250 if quick else 1000
    print(f"4. compare-and-swap retries, 4 processes x {n} assignments, each on its own node (one SQLite file)")
    url = f"sqlite://{tmp}/retries.db"
    store = open_store(url)
    setup(store, "10.0.0.0/8", 4)
    store.close()
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_retry_worker, args=(url, f"node-{i}", n, queue)) for i in range(4)]
    t = time.perf_counter()
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    dt = time.perf_counter() - t
    reads, writes, failed = (sum(r[i] for r in results) for i in range(3))
    total = 4 * n
    print(f"  {failed / total:.4f} failed commits (CAS retries) per assignment; {reads / total:.3f} reads + "
          f"{writes / total:.3f} commits per assignment; {total / dt:,.0f} assignments/s together (wall clock)")


def _etcd_worker(url: str, node: str, n: int, tag: str, queue) -> None:
    store = CountingStore(open_store(url))
    svc = IpamService(store, clock=lambda: CLOCK)
    for i in range(20):  # the service's first calls read what it keeps
        svc.auto_assign(AssignRequest(node=node, handle=f"{tag}.{node}.w{i}"))
    before, t = store.counts(), time.perf_counter()
    for i in range(n):
        svc.auto_assign(AssignRequest(node=node, handle=f"{tag}.{node}.{i}", attrs={"node": node, "pod": f"pod-{i}"}))
    dt, c = time.perf_counter() - t, store.counts() - before
    store.close()
    queue.put((c.reads, c.writes, c.round_trips, c.failed_writes, n / dt))


def section_etcd(tmp: str, quick: bool) -> None:
    """Round trips and CAS retries per assignment on a real etcd (tests/etcd_cluster.py starts one on
    loopback and stops it by its pid), from 1 and from 4 processes, each on its own node."""
    import multiprocessing
    from pathlib import Path
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from etcd_cluster import HAVE_ETCD, EtcdCluster
    n = 100 if quick else 300
    print(f"6. on etcd (one member on loopback), default service, {n} assignments per process after 20 to warm up")
    if not HAVE_ETCD:
        print("  skipped: no etcd binary")
        return
    with EtcdCluster(Path(tmp) / "etcd") as cluster:  # started here, stopped by pid on the way out
        url = cluster.url()
        store = open_store(url)
        setup(store, "10.0.0.0/8", 4)
        store.close()
        ctx = multiprocessing.get_context("spawn")
        for procs in (1, 4):
            queue = ctx.Queue()
            workers = [ctx.Process(target=_etcd_worker, args=(url, f"node-{i}", n, f"p{procs}", queue))
                       for i in range(procs)]
            for w in workers:
                w.start()
            results = [queue.get() for _ in workers]
            for w in workers:
                w.join()
            total = n * procs
            reads, commits, trips, failed = (sum(r[i] for r in results) / total for i in range(4))
            print(f"  {procs} process(es): {reads:.3f} reads + {commits:.3f} commits = {trips:.3f} round trips, "
                  f"{failed:.4f} CAS retries per assignment; {sum(r[4] for r in results):,.0f} assignments/s")


def section_claim(tmp: str, quick: bool) -> None:
    claimed = 20_000 if quick else 100_000
    print(f"5. claiming a new block in a /8 with {claimed:,} blocks claimed from the new node's start point")
    pool = ipaddress.ip_network("10.0.0.0/8")
    start = blockgen.start_index("node-1", blockgen.num_blocks(pool, 26))
    for count in (0, claimed):
        store = CountingStore(open_store(f"sqlite://{tmp}/claim-{count}.db"))
        svc = setup(store, str(pool), 2)
        t = time.perf_counter()
        if count:
            first = pool.network_address + (start << 6)  # /26 blocks: 64 addresses each
            last = pool.network_address + ((start + count) << 6) - 1
            for cidr in ipaddress.summarize_address_range(first, last):
                svc.claim_affinity(str(cidr), "node-0")
        fill = time.perf_counter() - t
        before = store.counts()
        t = time.perf_counter()
        res = svc.auto_assign(AssignRequest(node="node-1", handle="probe"))
        dt = time.perf_counter() - t
        c = store.counts() - before
        print(f"  {count:>7,} blocks claimed (filled in {fill:.0f} s): first assignment on node-1 -> {res.ipv4[0]}: "
              f"{c.reads} reads, {c.writes} write, {dt * 1e3:.1f} ms")
        if count:
            t = time.perf_counter()
            n_blocks = len(store.inner.list(keys.block_prefix(4)))
            print(f"  for comparison, one listing of all {n_blocks:,} blocks (Calico's findUsableBlock): "
                  f"{time.perf_counter() - t:.2f} s")
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--only", choices=["rates", "nodes", "retries", "claim", "etcd"], help="run one section")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of section 1-2 (medians printed)")
    parser.add_argument("--l2", action="store_true", help="assign under an L2 segment's rule (bridge)")
    args = parser.parse_args()
    if args.l2:
        global UNUSABLE
        UNUSABLE = L2Segment()
    with tempfile.TemporaryDirectory() as tmp:
        for name, section in (("rates", section_rates), ("nodes", section_nodes), ("retries", section_retries),
                              ("claim", section_claim), ("etcd", section_etcd)):
            if args.only in (None, name):
                section(tmp, args.quick, args.rounds) if name == "rates" else section(tmp, args.quick)


if __name__ == "__main__":
    main()
