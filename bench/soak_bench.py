"""Soak: 20,000 CNI ADD/DEL cycles through the node agent on etcd (started here on loopback, stopped by pid).

Most cycles are in-process client calls over the agent's unix socket (``cni.agent_client.call``, what
the exec'd plugin does after its start-up); every ``--exec-every``-th cycle execs the installed
``topoipam-cni`` for ADD and DEL instead. Figures:

1. the agent's resident memory (VmRSS from /proc/PID/status) after a warm-up of ``--warmup``
   cycles and at the end, and every ``--sample`` cycles in between (target: end within 10% of start);
2. its open file descriptors (entries of /proc/PID/fd) at the same moments (target: flat);
3. what is left in the datastore after every DEL: handles, allocated addresses, and blocks beyond
   the node's first (target: 0 handles and addresses; the one block stays affine, as Calico keeps it);
4. cycles per second, for context.

    .venv/bin/python bench/soak_bench.py [--cycles 20000] [--warmup 1000] [--exec-every 100]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from agent_bench import start_agent  # noqa: E402  (bench/ is the script's own directory on sys.path)
from etcd_cluster import EtcdCluster  # noqa: E402
from invariants import allocated, check_invariants  # noqa: E402

from topoipam.cni.agent_client import call  # noqa: E402
from topoipam.ipam import keys  # noqa: E402
from topoipam.store import open_store  # noqa: E402

VENV = REPO / ".venv" / "bin"
NODE = "soak-node"
WORLD = f"""
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {{name: soak-pool}}
spec: {{cidr: 10.60.0.0/16, blockSize: 26}}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {{name: {NODE}}}
"""
NETCONF = {"cniVersion": "1.0.0", "name": "soak", "type": "bridge", "ipam": {"type": "topoipam-cni"}}


def proc_figures(pid: int) -> tuple[int, int]:
    """(VmRSS KiB, open file descriptors) of ``pid``."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def env_for(command: str, cid: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "CNI_COMMAND": command, "CNI_CONTAINERID": cid,
            "CNI_NETNS": f"/var/run/netns/{cid}", "CNI_IFNAME": "eth0", "CNI_ARGS": "IgnoreUnknown=1"}


def cycle(sock: str, cid: str, exec_plugin: bool) -> None:
    conf = {**NETCONF, "ipam": {**NETCONF["ipam"], "agent_socket": sock}}
    stdin = json.dumps(conf).encode()
    for command in ("ADD", "DEL"):
        if exec_plugin:
            proc = subprocess.run([str(VENV / "topoipam-cni")], input=stdin, env=env_for(command, cid),
                                  capture_output=True)
            code, out = proc.returncode, proc.stdout
        else:
            code, out = call(sock, env_for(command, cid), stdin)
        if code != 0:
            raise RuntimeError(f"{command} {cid}: {out[:300]!r}")


def leftovers(store) -> dict[str, int]:
    return {"handles": len(store.list(keys.HANDLE_PREFIX)), "addresses": len(allocated(store)),
            "blocks": len(store.list(keys.block_prefix(4)))}


def soak(url: str, tmp: Path, args) -> dict:
    import topoipam

    with open_store(url) as store:
        topoipam.ResourceService(store, topoipam.PoolBlocks(store)).create(topoipam.decode_documents(WORLD, "soak"))
    proc, sock = start_agent(tmp, url, NODE)
    samples = []
    try:
        start = time.perf_counter()
        for i in range(args.warmup + args.cycles):
            if i == args.warmup:
                start = time.perf_counter()
            if i >= args.warmup and (i - args.warmup) % args.sample == 0:
                samples.append((i - args.warmup, *proc_figures(proc.pid)))
            cycle(sock, f"s{i}", exec_plugin=i % args.exec_every == 0)
        elapsed = time.perf_counter() - start
        samples.append((args.cycles, *proc_figures(proc.pid)))
    finally:
        proc.terminate()
        proc.wait(30)
    with open_store(url) as store:
        left, problems = leftovers(store), check_invariants(store)
    return {"samples": samples, "elapsed": elapsed, "left": left, "problems": problems}


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # unwind, so that etcd is stopped by pid
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=20_000)
    ap.add_argument("--warmup", type=int, default=1_000)
    ap.add_argument("--exec-every", type=int, default=100)
    ap.add_argument("--sample", type=int, default=2_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="topoipam-soak-") as tmp, EtcdCluster(Path(tmp) / "etcd") as cluster:
        r = soak(cluster.url(), Path(tmp), args)
    print(f"{args.cycles} ADD/DEL cycles after {args.warmup} warm-up, every {args.exec_every}th exec'd: "
          f"{args.cycles / r['elapsed']:.0f} cycles/s")
    print("cycle      RSS KiB   fds")
    for n, rss, fds in r["samples"]:
        print(f"{n:>6} {rss:>12} {fds:>5}")
    (_, rss0, fd0), (_, rss1, fd1) = r["samples"][0], r["samples"][-1]
    growth = (rss1 - rss0) / rss0 * 100
    print(f"RSS start {rss0} KiB, end {rss1} KiB: {growth:+.1f}% (target within 10%): {'ok' if abs(growth) <= 10 else 'FAIL'}")
    print(f"fds start {fd0}, end {fd1}, max {max(s[2] for s in r['samples'])}: "
          f"{'flat' if fd1 == fd0 else 'NOT flat'}")
    print(f"left in the datastore: {r['left']} (handles and addresses target 0); "
          f"invariant violations: {len(r['problems'])}")
    for p in r["problems"][:10]:
        print("  ", p)


if __name__ == "__main__":
    main()
