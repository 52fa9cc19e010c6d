"""EtcdStore against the raw etcd client: the cost of the datastore layer on a CAS loop.

Baseline: etcd-sdk-python's own client (``pyetcd``), each iteration ``get`` then
a ``transaction`` comparing the key's mod_revision and putting the new value.
Measured in the same run, against the same etcd member, alternating rounds:
``EtcdStore.get`` + ``EtcdStore.update`` (one Txn with the same compare). Both
loops read linearizably and wait for the write's commit, so the ratio is the
cost of our layer (request building, hasleader metadata, error mapping).

Starts a throwaway single-member etcd on loopback (tests/etcd_cluster.py),
or uses ``--endpoint host:port``.

    .venv/bin/python bench/etcd_bench.py [--seconds 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def raw_loop(endpoint: str, key: str, seconds: float) -> float:
    import pyetcd

    host, _, port = endpoint.rpartition(":")
    client = pyetcd.client(host, int(port), timeout=5)
    try:
        client.put(key, "0")
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            value, meta = client.get(key)
            ok, _ = client.transaction(
                compare=[client.transactions.mod(key) == meta.mod_revision],
                success=[client.transactions.put(key, str(int(value) + 1))],
                failure=[],
            )
            assert ok, "lost a CAS with no competitor"
            n += 1
        return n / (time.perf_counter() - start)
    finally:
        client.close()


def store_loop(endpoint: str, key: str, seconds: float) -> float:
    from topoipam.store.etcd import EtcdStore

    with EtcdStore(f"etcd://{endpoint}") as store:
        rec = store.get(key)
        if rec is None:
            store.create(key, b"0")
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            rec = store.get(key)
            store.update(key, str(int(rec.value) + 1).encode(), rec.revision)
            n += 1
        return n / (time.perf_counter() - start)


def run(endpoint: str, seconds: float, rounds: int) -> None:
    raw, ours = [], []
    raw_loop(endpoint, "/bench/warm", 0.3)
    store_loop(endpoint, "/bench/warm2", 0.3)
    for _ in range(rounds):
        raw.append(raw_loop(endpoint, "/bench/raw", seconds))
        ours.append(store_loop(endpoint, "/bench/store", seconds))
    r, o = statistics.median(raw), statistics.median(ours)
    print(f"etcd at {endpoint}, {rounds} rounds x {seconds:g}s each, median ops/s (one get + one CAS per op)")
    print(f"  raw pyetcd client get+txn      {r:8.0f} ops/s   (rounds: {', '.join(f'{x:.0f}' for x in raw)})")
    print(f"  EtcdStore get+update           {o:8.0f} ops/s   (rounds: {', '.join(f'{x:.0f}' for x in ours)})")
    print(f"  ratio EtcdStore / raw          {o / r:8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--endpoint", help="host:port of a running etcd (default: start one on loopback)")
    args = ap.parse_args()
    if args.endpoint:
        run(args.endpoint, args.seconds, args.rounds)
        return
    from etcd_cluster import HAVE_ETCD, SKIP_REASON, EtcdCluster

    if not HAVE_ETCD:
        sys.exit(SKIP_REASON)
    with tempfile.TemporaryDirectory(prefix="etcd-bench-") as tmp, EtcdCluster(Path(tmp)) as cluster:
        print(f"etcd pid {cluster.members[0].proc.pid}, python pid {os.getpid()}")
        run(cluster.endpoints(), args.seconds, args.rounds)


if __name__ == "__main__":
    main()
