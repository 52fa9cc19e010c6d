"""Insights and metrics at scale (not a test): coverage, headroom, drift and a /metrics scrape on a large world.

    .venv/bin/python bench/insights_bench.py                      # 10,000 nodes, 100,000 allocations
    .venv/bin/python bench/insights_bench.py --nodes 1000 --allocations 10000 --runs 3    # quick
    .venv/bin/python bench/insights_bench.py --db /tmp/w.db       # keep the world (reused if it exists)

Builds the world with ``world.build_world`` (SQLite; racks, a pool per rack, one workload per
assignment), then prints, per operation, the median and p99 of ``--runs`` runs (wall clock; CPU time
of the process doing the work: this one, the CLI child, the server; the steadier figure on a shared machine), next to baselines measured in the
same run: one full listing of the store's records (what any whole-store analysis reads at least), and
for the CLI rows the interpreter start (``topoipam --help``) and ``ipam show`` (which lists every block).

1. in process: the listing, ``coverage``, ``headroom --by rack``, ``drift`` (each reads the store);
2. the CLI as an operator runs it (a new interpreter each time): ``ipam coverage``,
   ``ipam headroom --by rack``, ``ipam drift``;
3. ``topoipam metrics serve --by rack`` scraped over loopback HTTP: cold (``--max-age 0``: every
   scrape reads the datastore and computes) and cached (``--max-age 3600``, after one warm-up scrape;
   its ratio is against the cold row).
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "src"))

from world import build_world  # noqa: E402

from topoipam.ipam.insights import coverage, drift, headroom  # noqa: E402
from topoipam.store import open_store  # noqa: E402

TOPOIPAM = os.path.join(os.path.dirname(os.path.realpath(sys.executable)), "topoipam")
if not os.path.exists(TOPOIPAM):
    TOPOIPAM = os.path.join(os.path.dirname(sys.executable), "topoipam")


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


def row(name: str, walls: list[float], cpus: list[float] | None = None, base: float | None = None) -> None:
    """One line: wall median and p99, CPU median, and the CPU median as a multiple of ``base`` (a CPU median)."""
    text = f"  {name:<40} median {statistics.median(walls):7.3f} s  p99 {p99(walls):7.3f} s"
    if cpus:
        cpu = statistics.median(cpus)
        text += f"  CPU median {cpu:6.3f} s"
        if base:
            text += f" = {cpu / base:5.1f}x baseline"
    print(text, flush=True)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a running process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(fn, runs: int, cpu=time.process_time) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of each run; ``cpu``: the clock to read (this process, its children, a server)."""
    walls, cpus = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), cpu()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(cpu() - c)
    return walls, cpus


def in_process(url: str, runs: int) -> None:
    print("1. in process (each call reads the store itself)")
    store = open_store(url)
    try:
        walls, cpus = timed(lambda: store.list("/topoipam/"), runs)
        base = statistics.median(cpus)
        row(f"baseline: list all {len(store.list('/topoipam/')):,} records", walls, cpus)
        now = time.time()
        for name, fn in (("coverage", lambda: coverage(store, now)),
                         ("headroom --by rack", lambda: headroom(store, "rack", now)),
                         ("drift", lambda: drift(store))):
            row(name, *timed(fn, runs), base=base)
    finally:
        store.close()


def cli(url: str, runs: int) -> None:
    print("2. the CLI, a new interpreter per run (exit 4 from coverage/drift counts as a result)")
    env = dict(os.environ, TOPOIPAM_DATASTORE=url)

    def run(*argv):
        return lambda: subprocess.run([TOPOIPAM, *argv], env=env, stdout=subprocess.DEVNULL, check=False)

    row("baseline: topoipam --help", *timed(run("--help"), runs, children_cpu))
    walls, cpus = timed(run("ipam", "show"), runs, children_cpu)
    base = statistics.median(cpus)
    row("baseline: ipam show (lists every block)", walls, cpus)
    for argv in (("ipam", "coverage"), ("ipam", "headroom", "--by", "rack"), ("ipam", "drift")):
        row(" ".join(argv), *timed(run(*argv), runs, children_cpu), base=base)


def serve(url: str, max_age: str, log: str):
    proc = subprocess.Popen([TOPOIPAM, "--datastore", url, "metrics", "serve", "--listen", "127.0.0.1:0",
                             "--by", "rack", "--max-age", max_age], stdout=subprocess.DEVNULL,
                            stderr=open(log, "wb"), start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = open(log, errors="replace").read()
        if "http://127.0.0.1:" in text:
            return proc, text[text.index("http://"):].split()[0]
        if proc.poll() is not None:
            raise SystemExit(f"metrics serve exited: {text}")
        time.sleep(0.05)
    raise SystemExit("metrics serve did not start")


def scrape(metrics_url: str) -> int:
    with urllib.request.urlopen(metrics_url, timeout=300) as resp:
        return len(resp.read())


def scrapes(url: str, runs: int, tmp: str) -> None:
    print("3. GET /metrics of `topoipam metrics serve --by rack` over loopback")
    base = None
    for label, max_age in (("cold (--max-age 0)", "0"), ("cached (--max-age 3600)", "3600")):
        proc, metrics_url = serve(url, max_age, os.path.join(tmp, f"serve-{max_age}.log"))
        try:
            size = scrape(metrics_url)  # a warm-up: imports, and the cache for the cached row
            walls, cpus = timed(lambda: scrape(metrics_url), runs, lambda: process_cpu(proc.pid))
            row(f"{label}, {size / 1e6:.1f} MB", walls, cpus, base)
            base = base or statistics.median(cpus)  # the cached row as a multiple of the cold one
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--allocations", type=int, default=100_000)
    ap.add_argument("--racks", type=int, default=20)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--db", help="SQLite file of the world: built if missing, reused if present")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="insights-bench-") as tmp:
        path = a.db or os.path.join(tmp, "world.db")
        if not os.path.exists(path):
            info = build_world(path, a.nodes, a.allocations, a.racks)
            print(f"world: {info.nodes:,} nodes in {info.racks} racks, {info.allocations:,} allocations, "
                  f"{info.records:,} records, built in {info.seconds:.1f} s ({info.cpu_seconds:.1f} s CPU)")
        else:
            print(f"world: reusing {path}")
        print(f"load average at start: {os.getloadavg()[0]:.2f} (2 cores shared: figures vary with load)")
        url = f"sqlite://{os.path.abspath(path)}"
        in_process(url, a.runs)
        cli(url, a.runs)
        scrapes(url, a.runs, tmp)
        print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
