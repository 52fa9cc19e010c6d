"""Dry-run benchmark (not a test): ``--dry-run`` of a pool delete and of a relabel on a large world.

    .venv/bin/python bench/dryrun_bench.py                 # 10,000 nodes, 100,000 allocations
    .venv/bin/python bench/dryrun_bench.py --nodes 1000    # smaller
    .venv/bin/python bench/dryrun_bench.py --baseline-src /work/main/src   # also each row on that code

The world, in one SQLite file: 50 racks, one pool per rack (``10.<rack>.0.0/16``, nodeSelector
``rack == "<rack>"``), ``--nodes`` nodes spread over the racks, and on every node ``--per-node``
workloads of one address each (auto-assigned by the IPAM service, so each node holds its own
block). Then, each run as the CLI (a fresh interpreter per run, median of ``--runs``):

- ``ipam coverage -o json`` and ``ipam drift -o json``: the baseline (what a dry run computes
  twice, before and after, on a copy of the datastore);
- ``delete ippool rack-7-ippool --dry-run -o json``: 200 nodes lose coverage, their workloads drift,
  their blocks lose their affinity;
- ``label nodes <a node of rack 7> rack=8 --overwrite --dry-run -o json``.

The dry runs must leave the file unchanged (checked by its size and modification time).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from topoipam.ipam import AssignRequest, IpamService  # noqa: E402
from topoipam.model.storage import to_storage  # noqa: E402
from topoipam.model.types import IPPool, IPPoolSpec, Metadata, Node  # noqa: E402
from topoipam.model.validate import validate  # noqa: E402
from topoipam.resources.keys import resource_key  # noqa: E402
from topoipam.store import open_store  # noqa: E402
from topoipam.store.base import Create  # noqa: E402

RACKS = 50
PYTHON = sys.executable  # .venv/bin/python as invoked (never a pyenv shim)


def node_name(i: int) -> str:
    return f"node-{i:05d}"


def build(url: str, nodes: int, per_node: int) -> None:
    """Pools and nodes written in batches (validated, as resources/ writes them), then the workloads."""
    store = open_store(url)
    try:
        ops = []
        for r in range(RACKS):
            pool = validate(IPPool(Metadata(f"rack-{r}-ippool"),
                                   IPPoolSpec(cidr=f"10.{r}.0.0/16", node_selector=f'rack == "{r}"')))
            ops.append(Create(resource_key("IPPool", pool.name), to_storage(pool)))
        for i in range(nodes):
            node = validate(Node(Metadata(node_name(i), labels={"rack": str(i % RACKS)})))
            ops.append(Create(resource_key("Node", node.name), to_storage(node)))
            if len(ops) >= 500:
                store.commit(ops)
                ops = []
        store.commit(ops)
        svc = IpamService(store)
        for i in range(nodes):
            node = node_name(i)
            for w in range(per_node):
                svc.auto_assign(AssignRequest(node=node, handle=f"k8s-pod-network.{i}-{w}",
                                              attrs={"node": node, "namespace": "default", "pod": f"pod-{i}-{w}"}))
    finally:
        store.close()


def timed(url: str, argv: list[str], runs: int, expect: int, sources: list) -> list[tuple[float, float]]:
    """Per entry of ``sources`` (the topoipam src/ to import, None: the installed one), the median
    (wall-clock, CPU) seconds of the CLI command, a fresh interpreter each run, the sources alternating
    run by run (the load of this shared machine changes by the minute). CPU time (user + system of the
    child) is the steadier figure."""
    walls: list[list] = [[] for _ in sources]
    cpus: list[list] = [[] for _ in sources]
    for _ in range(runs):
        for i, src in enumerate(sources):
            env = dict(os.environ, PYTHONPATH=src) if src else None
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            r = subprocess.run([PYTHON, "-m", "topoipam.cli.main", "--datastore", url, *argv], capture_output=True,
                               env=env)
            walls[i].append(time.perf_counter() - t)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus[i].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            if r.returncode != expect:
                raise SystemExit(f"{' '.join(argv)}: exit {r.returncode}, expected {expect}: "
                                 f"{r.stderr.decode()[:500]}")
    return [(statistics.median(w), statistics.median(c)) for w, c in zip(walls, cpus)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--per-node", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--baseline-src", help="a topoipam src/ directory (another checkout) to time each row on too, "
                    "in the same run: before/after figures of a change")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "world.db")
        url = f"sqlite://{path}"
        t = time.perf_counter()
        build(url, args.nodes, args.per_node)
        print(f"world: {args.nodes} nodes in {RACKS} racks, {args.nodes * args.per_node} allocations "
              f"(built in {time.perf_counter() - t:.0f} s, {os.path.getsize(path) / 1e6:.0f} MB)")
        moved = next(node_name(i) for i in range(args.nodes) if i % RACKS == 7)
        stat = os.stat(path)
        rows = [
            ("ipam coverage -o json", ["ipam", "coverage", "-o", "json"], 0),
            ("ipam drift -o json", ["ipam", "drift", "-o", "json"], 0),
            ("delete ippool rack-7-ippool --dry-run", ["delete", "ippool", "rack-7-ippool", "--dry-run", "-o", "json"], 4),
            (f"label nodes {moved} rack=8 --dry-run", ["label", "nodes", moved, "rack=8", "--overwrite", "--dry-run",
                                                        "-o", "json"], 4),
        ]
        sources = [args.baseline_src, None] if args.baseline_src else [None]
        timings = {name: timed(url, argv, args.runs, code, sources) for name, argv, code in rows}
        figures = {name: t[-1] for name, t in timings.items()}
        baseline = {name: t[0] for name, t in timings.items()} if args.baseline_src else {}
        after = os.stat(path)
        if (after.st_size, after.st_mtime_ns) != (stat.st_size, stat.st_mtime_ns):
            raise SystemExit("a dry run changed the datastore file")
        print(f"median of {args.runs} runs, fresh interpreter each, alternating ({PYTHON}); load average "
              f"{os.getloadavg()[0]:.1f}:")
        for label, table in (("baseline " + (args.baseline_src or ""), baseline), ("this checkout", figures)):
            if not table:
                continue
            base = table["ipam coverage -o json"][1] + table["ipam drift -o json"][1]
            if baseline:
                print(f" {label}:")
            for name, (wall, cpu) in table.items():
                print(f"  {name:<44} wall {wall:6.2f} s   CPU {cpu:6.2f} s   {cpu / base:4.2f} x (coverage + drift CPU)")


if __name__ == "__main__":
    main()
