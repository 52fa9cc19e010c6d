"""The agent's own CPU per CNI request in the steady state, next to one bare etcd commit.

Serves ADDs with ``cni.handler.respond`` exactly as the agent does (one kept ``IpamService``,
the node's warm kept block, etcd started here on loopback and stopped by pid), and measures the
serving thread's CPU (``time.thread_time``) per request. The baseline, in the same run and on the
same client: one bare ``store.commit`` of a one-key Create, the least any assignment could cost.
Rows:

* ``warm``: requests back to back (caches warm);
* ``cold``: 16 MiB of memory touched before each request, as a plugin exec on the same core does
  between two requests inside a real agent (caches cold).

Each ADD is a new attachment (one commit, no read); every 50 ADDs their DELs run, so the block
never fills (DEL time is not counted).

    .venv/bin/python bench/agent_request_bench.py [--requests 400] [--l2]

Not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from etcd_cluster import EtcdCluster  # noqa: E402

from topoipam.cni.handler import respond  # noqa: E402
from topoipam.ipam import IpamService  # noqa: E402
from topoipam.ipam.pool_blocks import PoolBlocks  # noqa: E402
from topoipam.model.codec import decode_documents  # noqa: E402
from topoipam.resources.service import ResourceService  # noqa: E402
from topoipam.store import Create, open_store  # noqa: E402

SETUP = """
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n0}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: p0}
spec: {cidr: 10.64.0.0/16, nodeSelector: all()}
"""
COLD_BYTES = 16 << 20


def env(i: int, command: str = "ADD") -> dict[str, str]:
    return {"CNI_COMMAND": command, "CNI_CONTAINERID": f"c{i}", "CNI_NETNS": "/run/netns/x", "CNI_IFNAME": "eth0",
            "CNI_PATH": "/usr/lib/cni", "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p{i}"}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def serve_adds(store, svc, conf: bytes, first: int, count: int, cold: bool) -> list[float]:
    backend = lambda _url: (store, svc)  # noqa: E731 - the agent's own open_backend
    cpu = []
    for i in range(first, first + count):
        if cold:
            bytearray(COLD_BYTES)  # allocated and zeroed: evicts the caches as another process would
        started = time.thread_time()
        code, out = respond(env(i), conf, backend, default_nodename="n0")
        cpu.append(time.thread_time() - started)
        if code != 0:
            raise SystemExit(f"ADD failed: {out.decode()}")
        if (i - first) % 50 == 49:
            for j in range(i - 49, i + 1):
                respond(env(j, "DEL"), conf, backend, default_nodename="n0")
    return cpu


def bare_commits(store, first: int, count: int, cold: bool) -> list[float]:
    cpu = []
    for i in range(first, first + count):
        if cold:
            bytearray(COLD_BYTES)
        started = time.thread_time()
        store.commit([Create(f"/bench/bare/{i}", b'{"x":1}')])
        cpu.append(time.thread_time() - started)
    return cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--l2", action="store_true", help="a bridge network (the L2 rule) instead of ptp")
    args = ap.parse_args()
    conf = json.dumps({"cniVersion": "1.0.0", "name": "net", "type": "bridge" if args.l2 else "ptp",
                       "ipam": {"type": "topoipam-cni"}}).encode()
    with tempfile.TemporaryDirectory(prefix="agent-request-bench-") as tmp, EtcdCluster(Path(tmp)) as cluster:
        store = open_store(cluster.url())
        try:
            ResourceService(store, PoolBlocks(store)).create(decode_documents(SETUP, "bench"))
            svc = IpamService(store)
            serve_adds(store, svc, conf, 0, 50, cold=False)  # warm-up: block claimed, topology kept
            bare_commits(store, 0, 50, cold=False)
            print(f"agent requests on etcd (loopback), {args.requests} ADDs per row, the serving thread's CPU; "
                  f"{'bridge' if args.l2 else 'ptp'} network")
            print(f"{'row':6} {'respond() ADD p50 / p90 ms':28} {'bare commit p50 / p90 ms':26} ratio p50")
            start = 1000
            for row, cold in (("warm", False), ("cold", True)):
                adds = serve_adds(store, svc, conf, start, args.requests, cold)
                bare = bare_commits(store, start, args.requests, cold)
                start += args.requests + 100
                print(f"{row:6} {statistics.median(adds) * 1e3:8.3f} / {pct(adds, .9) * 1e3:6.3f}{'':13}"
                      f"{statistics.median(bare) * 1e3:8.3f} / {pct(bare, .9) * 1e3:6.3f}{'':11}"
                      f"{statistics.median(adds) / statistics.median(bare):5.1f}x")
        finally:
            store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
