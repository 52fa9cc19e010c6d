"""Domain-affinity benchmark (not a test): host affinity next to rack-domain affinity, same run.

    .venv/bin/python bench/domain_bench.py            # ~1 minute
    .venv/bin/python bench/domain_bench.py --quick

One rack of 8 nodes under a /16 pool, SQLite (WAL, synchronous NORMAL), the default (fenced, kept)
topology. For each mode ("host": Calico's per-node blocks; "domain": the pool annotated
``topoipam.io/affinity-label: rack``, so the 8 nodes share the rack's blocks) it prints:
1. in one process, assignments round-robin over the 8 nodes: assignments/s (wall and CPU: the
   machine is shared, CPU time is the steadier figure), and datastore reads, commits and round trips
   per assignment (CountingStore), over rounds that also fill and claim blocks;
2. from 4 processes on 4 nodes of the rack at once: compare-and-swap retries (failed commits) per
   assignment. Domain nodes share blocks, so they contend for the same block records where host
   nodes never do: the price of sharing, shown next to host affinity.
Figures go to docs/domain-affinity.md with the machine-load caveat.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from topoipam.core.affinity import AFFINITY_LABEL_ANNOTATION  # noqa: E402
from topoipam.ipam import AssignRequest, IpamService  # noqa: E402
from topoipam.model.storage import to_storage  # noqa: E402
from topoipam.model.types import IPPool, IPPoolSpec, Metadata, Node  # noqa: E402
from topoipam.model.validate import validate  # noqa: E402
from topoipam.resources.keys import resource_key  # noqa: E402
from topoipam.store import open_store  # noqa: E402
from topoipam.store.base import Create  # noqa: E402
from topoipam.store.counting import CountingStore  # noqa: E402

NODES = 8
MODES = ("host", "domain")


def setup(url: str, mode: str) -> None:
    annotations = {AFFINITY_LABEL_ANNOTATION: "rack"} if mode == "domain" else {}
    pool = validate(IPPool(Metadata("rack-0", annotations=annotations),
                           IPPoolSpec(cidr="10.0.0.0/16", node_selector='rack == "0"')))
    ops = [Create(resource_key("IPPool", pool.name), to_storage(pool))]
    for i in range(NODES):
        node = validate(Node(Metadata(f"node-{i}", labels={"rack": "0"})))
        ops.append(Create(resource_key("Node", node.name), to_storage(node)))
    store = open_store(url)
    store.commit(ops)
    store.close()


def one_process(tmp: str, mode: str, per_round: int, rounds: int):
    url = f"sqlite://{tmp}/{mode}-rates.db?synchronous=NORMAL"
    setup(url, mode)
    store = CountingStore(open_store(url))
    svc = IpamService(store)
    times = []
    for rnd in range(rounds + 1):  # round 0 warms the service (first reads of what it keeps)
        if rnd == 1:
            start = store.counts()
        t, cpu = time.perf_counter(), time.process_time()
        for i in range(per_round):
            node = f"node-{i % NODES}"
            svc.auto_assign(AssignRequest(node=node, handle=f"{mode}.{rnd}.{i}", attrs={"node": node}))
        if rnd:
            times.append((per_round / (time.perf_counter() - t), per_round / (time.process_time() - cpu)))
    c = store.counts() - start
    n = per_round * rounds
    blocks = len(svc.block_usage())
    store.close()
    return (statistics.median(t[0] for t in times), statistics.median(t[1] for t in times),
            c.reads / n, c.writes / n, c.round_trips / n, c.failed_writes / n, blocks)


def _worker(url: str, node: str, n: int, start_queue, queue) -> None:
    store = CountingStore(open_store(url))
    svc = IpamService(store)
    start_queue.get()  # the start signal: every worker begins together
    start = store.counts()
    for i in range(n):
        svc.auto_assign(AssignRequest(node=node, handle=f"{node}.{i}", attrs={"node": node}))
    c = store.counts() - start
    store.close()
    queue.put((c.failed_writes, c.writes, c.reads))


def four_processes(tmp: str, mode: str, n: int):
    url = f"sqlite://{tmp}/{mode}-race.db?synchronous=NORMAL"
    setup(url, mode)
    ctx = multiprocessing.get_context("spawn")
    start, done = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, f"node-{i}", n, start, done)) for i in range(4)]
    for p in procs:
        p.start()
    try:
        time.sleep(2.0)
        for _ in procs:
            start.put(True)
        results = [done.get(timeout=300) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=120)
            if p.is_alive():
                p.kill()
    failed = sum(r[0] for r in results)
    return failed / (4 * n), sum(r[1] for r in results) / (4 * n), sum(r[2] for r in results) / (4 * n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    args = parser.parse_args()
    per_round, rounds, race = (256, 3, 100) if args.quick else (640, 5, 250)
    with tempfile.TemporaryDirectory(prefix="domain-bench-") as tmp:
        print(f"1. one process, {NODES} nodes of one rack, {rounds} x {per_round} assignments "
              "(median of rounds; operations over all rounds)")
        for mode in MODES:
            wall, cpu, r, w, rt, f, blocks = one_process(tmp, mode, per_round, rounds)
            print(f"  {mode:>6}: {wall:7.0f}/s wall {cpu:7.0f}/s CPU; per assignment {r:.3f} reads + {w:.3f} "
                  f"commits ({rt:.3f} round trips, {f:.3f} failed); {blocks} blocks claimed")
        print(f"2. four processes on four nodes of the rack at once, {race} assignments each")
        for mode in MODES:
            failed, writes, reads = four_processes(tmp, mode, race)
            print(f"  {mode:>6}: {failed:.3f} CAS retries, {writes:.3f} commits, {reads:.3f} reads per assignment")


if __name__ == "__main__":
    main()
