"""The IPAM service and the node agent on a real etcd (started here on loopback, stopped by pid).

Figures, each next to its baseline measured in the same run:

1. assignments/s through ``IpamService`` on etcd, kept between calls as the agent
   keeps its one service (fenced kept topology, kept blocks and affinities; one new
   handle per assignment, node-affine blocks), against a raw compare-and-swap loop
   (``get`` + ``update`` of one key) with the same client, from 1 and from 4
   processes (target: service >= 70% of raw);
2. datastore round trips per assignment in steady state, counted with
   ``store.counting.CountingStore`` (target: <= 2, + 1 for handle bookkeeping);
3. compare-and-swap retries (failed commits) per assignment, 4 processes, one
   node each (target: <= 0.05);
4. CNI ADD exec'd through the agent's socket, median and p99, against the
   reference host-local plugin (target: p50 within 10x);
5. the agent's resident memory with 10,000 blocks in the datastore
   (target: 40 MiB + 512 bytes per block).

    .venv/bin/python bench/agent_bench.py [--seconds 3] [--adds 200] [--blocks 10000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from etcd_cluster import EtcdCluster  # noqa: E402

from topoipam.ipam import AssignRequest, IpamService, keys  # noqa: E402
from topoipam.store import open_store  # noqa: E402
from topoipam.store.counting import CountingStore  # noqa: E402

VENV = REPO / ".venv" / "bin"
POOL = """
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: bench-pool}
spec: {cidr: 10.0.0.0/8, blockSize: 26}
"""
SPAWN = multiprocessing.get_context("spawn")


def setup(url: str) -> None:
    from topoipam.model.codec import decode_documents
    from topoipam.resources.service import ResourceService
    from topoipam.ipam.pool_blocks import PoolBlocks

    with open_store(url) as store:
        ResourceService(store, PoolBlocks(store)).create(decode_documents(POOL, "bench"))


def register(store, node: str) -> None:
    from topoipam.agent.node import register_node

    register_node(store, node, {})




# --- 1 + 3: throughput and retries --------------------------------------------------------------
def raw_worker(url: str, key: str, seconds: float, start_at: float, q) -> None:
    store = open_store(url)
    store.create(key, b"0")
    while time.time() < start_at:
        time.sleep(0.001)
    n, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        rec = store.get(key)
        store.update(key, str(int(rec.value) + 1).encode(), rec.revision)
        n += 1
    q.put((n, seconds, 0))
    store.close()


def service_worker(url: str, tag: str, seconds: float, start_at: float, q) -> None:
    """Assignments with a new handle each; a fresh node every 1,000 (the default limit is 20 blocks per node)."""
    counting = CountingStore(open_store(url))
    nodes = [f"{tag}-n{i}" for i in range(50)]
    for node in nodes[:1]:
        register(counting, node)
    svc = IpamService(counting)  # as the agent's: default topology, kept (fenced) between calls
    svc.auto_assign(AssignRequest(node=nodes[0], handle=f"{tag}.warmup", attrs={"node": nodes[0]}))
    while time.time() < start_at:
        time.sleep(0.001)
    before = counting.counts()
    n, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        node = nodes[n // 1000]
        if n % 1000 == 0 and n:
            register(counting.inner, node)
        svc.auto_assign(AssignRequest(node=node, handle=f"{tag}.{n}", attrs={"node": node}))
        n += 1
    spent = counting.counts() - before
    q.put((n, seconds, spent.failed_writes))
    counting.close()


def worker_entry(kind: str, url: str, tag: str, seconds: float, start_at: float, q) -> None:
    """A worker process; on failure it puts None on the queue so the parent stops waiting at once."""
    target = {"raw": raw_worker, "service": service_worker}[kind]
    try:
        target(url, tag, seconds, start_at, q)
    except BaseException:
        q.put(None)
        raise


def run_parallel(kind: str, url: str, tags: list[str], seconds: float) -> tuple[float, int, int]:
    q = SPAWN.Queue()
    start_at = time.time() + 3.0  # every process connected and warm before the clock starts
    procs = [SPAWN.Process(target=worker_entry, args=(kind, url, tag, seconds, start_at, q)) for tag in tags]
    for p in procs:
        p.start()
    results = []
    for _ in procs:
        results.append(q.get(timeout=120))
        if results[-1] is None:
            raise RuntimeError("a worker failed (its traceback is above)")
    for p in procs:
        p.join(30)
    total = sum(n for n, _, _ in results)
    return total / seconds, total, sum(r for _, _, r in results)


# --- 2: round trips --------------------------------------------------------------------------------
def round_trips(url: str, n: int = 200) -> dict[str, float]:
    from topoipam.cni import handler

    out = {}
    with open_store(url) as inner:
        counting = CountingStore(inner)
        register(inner, "rt-node")
        svc = IpamService(counting)  # the agent's: one service, kept between requests
        svc.auto_assign(AssignRequest(node="rt-node", handle="rt.warm", attrs={}))
        before = counting.counts()
        for i in range(n):
            svc.auto_assign(AssignRequest(node="rt-node", handle=f"rt.{i}", attrs={"node": "rt-node"}))
        spent = counting.counts() - before
        out["service kept between calls (the agent's)"] = spent.round_trips / n
        out["  of which writes"] = spent.writes / n
        before = counting.counts()
        for i in range(n):
            IpamService(counting).auto_assign(AssignRequest(node="rt-node", handle=f"rt-cold.{i}",
                                                            attrs={"node": "rt-node"}))
        out["service made per assignment (the plugin without agent)"] = (counting.counts() - before).round_trips / n
        conf = json.dumps({"cniVersion": "1.0.0", "name": "rt", "type": "bridge",
                           "ipam": {"type": "topoipam-cni", "nodename": "rt-node"}}).encode()
        before = counting.counts()
        for i in range(n):
            env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": f"rt{i}", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0"}
            code, _ = handler.respond(env, conf, lambda _u: (counting, svc))
            assert code == 0
        spent = counting.counts() - before
        out["CNI ADD in the agent (incl. the DEL-first check)"] = spent.round_trips / n
        out["  CAS retries per ADD"] = spent.failed_writes / n
        before = counting.counts()
        for i in range(n):
            if i % 20 == 0:  # another process changes the topology every 20 ADDs (no watch here)
                from topoipam.resources.service import ResourceService

                ResourceService(inner).label("Node", "rt-node", "gen", str(i), overwrite=True)
            env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": f"rt-l{i}", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0"}
            code, _ = handler.respond(env, conf, lambda _u: (counting, svc))
            assert code == 0
        spent = counting.counts() - before
        out["CNI ADD in the agent, node relabelled every 20 ADDs"] = spent.round_trips / n
        out["  CAS retries per ADD (the fence refusing the stale topology)"] = spent.failed_writes / n
    return out


# --- 4 + 5: the agent process ----------------------------------------------------------------------
def start_agent(tmp: Path, url: str, node: str) -> tuple[subprocess.Popen, str]:
    sock = str(tmp / f"{node}.sock")
    log = open(tmp / f"{node}.log", "wb")
    proc = subprocess.Popen([str(VENV / "topoipam"), "agent", "--node", node, "--socket", sock, "--datastore", url],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if os.path.exists(sock) and b"(labels" in (tmp / f"{node}.log").read_bytes():
            return proc, sock
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError((tmp / f"{node}.log").read_text())


def exec_times(cmd: list[str], conf: dict, n: int, prefix: str) -> list[float]:
    stdin = json.dumps(conf).encode()
    times = []
    for i in range(n):
        env = {"PATH": "/usr/bin:/bin", "CNI_COMMAND": "ADD", "CNI_CONTAINERID": f"{prefix}{i}",
               "CNI_NETNS": "/var/run/netns/x", "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni"}
        t = time.perf_counter()
        proc = subprocess.run(cmd, input=stdin, env=env, capture_output=True)
        times.append(time.perf_counter() - t)
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {proc.stdout!r} {proc.stderr[-500:]!r}")
    return times


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def cni_latency(tmp: Path, url: str, n: int) -> dict[str, float]:
    proc, sock = start_agent(tmp, url, "lat-node")
    try:
        ours = {"cniVersion": "1.0.0", "name": "lat", "type": "bridge",
                "ipam": {"type": "topoipam-cni", "agent_socket": sock}}
        hl = {"cniVersion": "1.0.0", "name": "lat", "type": "bridge",
              "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.250.0.0/16"}]], "dataDir": str(tmp / "hl")}}
        exec_times([str(VENV / "topoipam-cni")], ours, 5, "warm")  # page cache, bytecode
        a, b = [], []
        for i in range(0, n, 20):  # interleaved, so both see the same machine load
            a += exec_times([str(VENV / "topoipam-cni")], ours, 20, f"t{i}-")
            b += exec_times(["/usr/lib/cni/host-local"], hl, 20, f"h{i}-")
        return {"agent p50": statistics.median(a), "agent p99": pct(a, 0.99),
                "host-local p50": statistics.median(b), "host-local p99": pct(b, 0.99), "agent pid": proc.pid}
    finally:
        proc.terminate()
        proc.wait(30)


def claim_worker(url: str, index: int, count: int) -> None:
    """Claim ``count`` blocks of 10.<64+index>.0.0/16.. for nodes mem-<index>-<k> (50 blocks per node)."""
    import ipaddress

    with open_store(url) as store:
        svc = IpamService(store)
        base = ipaddress.ip_network(f"10.{64 + 16 * index}.0.0/12")
        blocks = list(base.subnets(new_prefix=26))[:count]
        for k in range(0, count, 50):
            node = f"mem-{index}-{k // 50}"
            register(store, node)
            for net in blocks[k:k + 50]:
                svc.claim_affinity(str(net), node)


def count_keys(store, prefix: str, page: int = 500) -> int:
    """Count records in pages (one list of 10,000 blocks is over gRPC's 4 MiB message limit)."""
    n, start = 0, None
    while True:
        recs = store.list(prefix, start=start, limit=page)
        n += len(recs)
        if len(recs) < page:
            return n
        start = recs[-1].key + "\0"


def rss_kib(pid: int) -> tuple[int, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def agent_memory(tmp: Path, url: str, blocks: int, adds: int) -> dict[str, float]:
    per = blocks // 4
    run = [SPAWN.Process(target=claim_worker, args=(url, i, per)) for i in range(4)]
    t = time.perf_counter()
    for p in run:
        p.start()
    for p in run:
        p.join()
    with open_store(url) as store:
        n_blocks = count_keys(store, keys.block_prefix(4))
    claimed = time.perf_counter() - t
    proc, sock = start_agent(tmp, url, "mem-0-0")  # a node holding 50 of the blocks
    try:
        conf = {"cniVersion": "1.0.0", "name": "mem", "type": "bridge",
                "ipam": {"type": "topoipam-cni", "agent_socket": sock}}
        exec_times([str(VENV / "topoipam-cni")], conf, adds, "m")
        rss, hwm = rss_kib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    return {"blocks in datastore": n_blocks, "claim seconds": claimed, "rss MiB": rss / 1024, "peak MiB": hwm / 1024,
            "target MiB": 40 + 512 * n_blocks / 2**20}


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # unwind, so that etcd is stopped by pid
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--adds", type=int, default=200)
    ap.add_argument("--blocks", type=int, default=10000)
    ap.add_argument("--parts", default="throughput,roundtrips,cni,memory", help="which figures, comma-separated")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="agent-bench-"))
    with EtcdCluster(tmp / "etcd") as cluster:
        url = cluster.url()
        setup(url)
        print(f"etcd 1 member on loopback, client {url}; {os.cpu_count()} CPUs")
        print("\n== assignments/s (service kept as the agent keeps it, one handle each; raw: get + CAS update of one key)")
        for procs in ((1, 4) if "throughput" in parts else ()):
            raw, _, _ = run_parallel("raw", url, [f"/bench/raw/{procs}/{i}" for i in range(procs)], args.seconds)
            tags = [f"p{procs}x{i}s" for i in range(procs)]  # own nodes each run
            svc, total, retries = run_parallel("service", url, tags, args.seconds)
            print(f"{procs} process(es): service {svc:6.0f}/s   raw CAS {raw:6.0f}/s   ratio {svc / raw:5.1%}"
                  f"   CAS retries/assignment {retries / max(total, 1):.4f} ({retries} in {total})")
        print("\n== datastore round trips per assignment, steady state (CountingStore)")
        for name, value in (round_trips(url).items() if "roundtrips" in parts else ()):
            print(f"{name:64s} {value:5.2f}")
        if "cni" in parts:
            cni_figures(tmp, url, args.adds)
        if "memory" in parts:
            memory_figures(tmp, url, args.blocks)


def cni_figures(tmp: Path, url: str, adds: int) -> None:
    print(f"\n== CNI ADD exec'd, {adds} each, interleaved")
    lat = cni_latency(tmp, url, adds)
    print(f"topoipam-cni via agent: p50 {lat['agent p50'] * 1e3:6.1f} ms  p99 {lat['agent p99'] * 1e3:6.1f} ms")
    print(f"host-local:             p50 {lat['host-local p50'] * 1e3:6.1f} ms  p99 "
          f"{lat['host-local p99'] * 1e3:6.1f} ms")
    print(f"p50 ratio {lat['agent p50'] / lat['host-local p50']:.1f}x (target <= 10x)")


def memory_figures(tmp: Path, url: str, blocks: int) -> None:
    print(f"\n== agent memory with {blocks} blocks in the datastore")
    mem = agent_memory(tmp, url, blocks, 50)
    print(f"blocks {mem['blocks in datastore']} (claimed in {mem['claim seconds']:.0f}s); agent RSS "
          f"{mem['rss MiB']:.1f} MiB, peak {mem['peak MiB']:.1f} MiB; target {mem['target MiB']:.1f} MiB")


if __name__ == "__main__":
    main()
