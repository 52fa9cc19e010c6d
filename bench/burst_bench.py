"""A burst of pod starts: 1,000 CNI ADDs over 10 nodes, 8 at a time, then 1,000 DELs.

Each ADD and DEL is one exec of the installed plugin (``.venv/bin/topoipam-cni``,
the lean launcher), environment and netconf on stdin as a runtime gives them,
from 8 threads at once (a kubelet starts pods in parallel; 8 is what a
10-node burst puts on this 2-core machine's executor). Three rows, same run:

* ``agents``: one etcd member started here on loopback, 10 ``topoipam agent``
  processes on it (one per node, each on its own unix socket; the netconf
  names the pod's node's socket);
* ``sqlite``: the plugin's direct (embedded) mode, 10 node names on one SQLite
  file;
* ``host-local``: the reference host-local IPAM doing the same ADDs and DELs
  (one data directory and one /24 per node), the baseline.

Reported per row: total wall time of the 1,000 ADDs and of the 1,000 DELs,
p50/p99 per ADD, the CPU per ADD of each part (the plugin execs, this bench
as the runtime that forks them, the agents, etcd), failed calls, duplicate addresses among the ADD results (must
be 0) and allocations left after the DELs (leaked handles, must be 0). The
agents log every request's phases (``--slow-request-ms 0``), so the agents'
own CPU per ADD (the serving thread's, from reading the request to sending
the answer) and wall time per ADD inside the agent are reported too. The
machine's load average is printed before and after: these cores are shared.

    .venv/bin/python bench/burst_bench.py [--pods 1000] [--nodes 10] [--parallel 8] [--rows agents,sqlite,host-local]

Every process started here (etcd, agents) is stopped by pid at the end. Not a
test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv" / "bin"
PLUGIN = VENV / "topoipam-cni"
HOST_LOCAL = "/usr/lib/cni/host-local"
sys.path.insert(0, str(REPO / "tests"))

from etcd_cluster import EtcdCluster  # noqa: E402

from topoipam.ipam import IpamService  # noqa: E402
from topoipam.store import open_store  # noqa: E402

POOL = """
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: burst}
spec: {cidr: 10.64.0.0/16, nodeSelector: all(), allowedUses: [Workload]}
"""
NODE = """---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: %s}
"""
AGENT_LOG = ["--log-level", "debug", "--slow-request-ms", "0"]
TIMING = re.compile(r"request ADD \S+ \(exit 0\): ([\d.]+) ms; own CPU ([\d.]+) ms;")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def exec_plugin(argv: list[str], command: str, pod: str, conf: bytes) -> tuple[float, int, bytes]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command, "CNI_CONTAINERID": pod,
           "CNI_NETNS": f"/var/run/netns/{pod}", "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni",
           "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=burst;K8S_POD_NAME={pod}"}
    start = time.perf_counter()
    proc = subprocess.run(argv, input=conf, env=env, capture_output=True)
    return time.perf_counter() - start, proc.returncode, proc.stdout


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_now(servers: dict[str, list[int]]) -> dict[str, float]:
    """CPU used so far by: the plugin execs (this process's reaped children), this process (the
    runtime's part: forks, pipes, threads), and each group of server pids (agents, etcd)."""
    out = {"plugin execs": resource.getrusage(resource.RUSAGE_CHILDREN),
           "this bench (the runtime's part)": resource.getrusage(resource.RUSAGE_SELF)}
    out = {k: u.ru_utime + u.ru_stime for k, u in out.items()}
    out.update({name: sum(process_cpu(p) for p in pids) for name, pids in servers.items()})
    return out


def burst(argv: list[str], confs: list[bytes], pods: int, parallel: int,
          servers: dict[str, list[int]] | None = None) -> dict:
    """ADD every pod (pod i on node i % nodes), then DEL every pod; timings, addresses, failures, and
    the CPU each part used during the ADDs (``servers``: name -> pids of long-running processes)."""
    names = [f"pod{i:04d}" for i in range(pods)]
    out: dict = {}
    for command in ("ADD", "DEL"):
        cpu_before = cpu_now(servers or {})
        started = time.perf_counter()
        with ThreadPoolExecutor(parallel) as pool:
            calls = list(pool.map(lambda i: exec_plugin(argv, command, names[i], confs[i % len(confs)]), range(pods)))
        cpu_after = cpu_now(servers or {})
        out[command] = {"wall": time.perf_counter() - started, "times": [c[0] for c in calls],
                        "failed": [c[2][:300] for c in calls if c[1] != 0],
                        "cpu": {k: cpu_after[k] - cpu_before[k] for k in cpu_after}}
        if command == "ADD":
            out["addresses"] = [json.loads(c[2])["ips"][0]["address"] for c in calls if c[1] == 0]
    return out


def leaked(url: str) -> int:
    store = open_store(url)
    try:
        return sum(1 for a in IpamService(store).allocations() if a.handle and a.handle.startswith("burst."))
    finally:
        store.close()


def create(url: str, text: str) -> None:
    subprocess.run([str(VENV / "topoipam"), "--datastore", url, "create", "-f", "-"], input=text.encode(),
                   check=True, capture_output=True)


def netconf(**ipam) -> bytes:
    return json.dumps({"cniVersion": "1.0.0", "name": "burst", "type": "bridge",
                       "ipam": {"type": "topoipam-cni", **ipam}}).encode()


def run_agents(tmp: Path, nodes: list[str], pods: int, parallel: int) -> tuple[dict, list[str]]:
    with EtcdCluster(tmp / "etcd") as cluster:
        url = cluster.url()
        create(url, POOL)
        agents = []
        try:
            for node in nodes:
                agents.append(start_agent(tmp, url, node))
            for node, (proc, _) in zip(nodes, agents):
                wait_ready(tmp, proc, node)
            confs = [netconf(agent_socket=sock) for _, sock in agents]
            servers = {"agents": [proc.pid for proc, _ in agents], "etcd": [m.proc.pid for m in cluster.members]}
            result = burst([str(PLUGIN)], confs, pods, parallel, servers)
            result["leaked"] = leaked(url)
        finally:
            for proc, _ in agents:
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGTERM)
            for proc, _ in agents:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
    logs = [(tmp / f"agent-{node}.log").read_text(errors="replace") for node in nodes]
    return result, logs


def start_agent(tmp: Path, url: str, node: str) -> tuple[subprocess.Popen, str]:
    sock = str(tmp / f"agent-{node}.sock")
    log = open(tmp / f"agent-{node}.log", "wb")
    proc = subprocess.Popen([str(VENV / "topoipam"), "agent", "--node", node, "--socket", sock, "--datastore", url,
                             *AGENT_LOG],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, sock


def wait_ready(tmp: Path, proc: subprocess.Popen, node: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    path = tmp / f"agent-{node}.log"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"agent {node} exited: {path.read_text()[-2000:]}")
        if os.path.exists(tmp / f"agent-{node}.sock") and b"(labels" in path.read_bytes():
            return
        time.sleep(0.05)
    raise SystemExit(f"agent {node} not ready: {path.read_text()[-2000:]}")


def run_sqlite(tmp: Path, nodes: list[str], pods: int, parallel: int) -> dict:
    url = f"sqlite://{tmp}/burst.db"
    create(url, POOL + "".join(NODE % n for n in nodes))
    confs = [netconf(nodename=node, datastore=url, agent_socket="") for node in nodes]
    result = burst([str(PLUGIN)], confs, pods, parallel)
    result["leaked"] = leaked(url)
    return result


def run_host_local(tmp: Path, nodes: list[str], pods: int, parallel: int) -> dict:
    confs = [json.dumps({"cniVersion": "1.0.0", "name": "burst", "type": "bridge", "ipam": {
        "type": "host-local", "ranges": [[{"subnet": f"10.65.{i}.0/24"}]], "dataDir": f"{tmp}/hl-{node}"}}).encode()
        for i, node in enumerate(nodes)]
    result = burst([HOST_LOCAL], confs, pods, parallel)
    result["leaked"] = sum(len([f for f in os.listdir(f"{tmp}/hl-{n}/burst") if f[0].isdigit()])
                           for n in nodes if os.path.isdir(f"{tmp}/hl-{n}/burst"))
    return result


def own_times(logs: list[str]) -> dict[str, list[float]]:
    total, own = [], []
    for text in logs:
        for m in TIMING.finditer(text):
            total.append(float(m.group(1)))
            own.append(float(m.group(2)))
    return {"wall in the agent (accept to answer sent)": total, "own CPU (the serving thread's)": own}


def report(name: str, r: dict, base: dict | None) -> None:
    add, dele = r["ADD"], r["DEL"]
    addresses = [ipaddress.ip_interface(a).ip for a in r["addresses"]]
    dups = len(addresses) - len(set(addresses))
    ratio = f"  ({add['wall'] / base['ADD']['wall']:.1f}x host-local)" if base else ""
    print(f"{name:10} ADD x{len(add['times'])}: {add['wall']:6.2f} s{ratio}; per ADD p50 "
          f"{statistics.median(add['times']) * 1e3:6.1f} ms p99 {pct(add['times'], .99) * 1e3:6.1f} ms; "
          f"DEL x{len(dele['times'])}: {dele['wall']:6.2f} s, p50 {statistics.median(dele['times']) * 1e3:6.1f} ms "
          f"p99 {pct(dele['times'], .99) * 1e3:6.1f} ms; failed ADD {len(add['failed'])} DEL {len(dele['failed'])}; "
          f"duplicates {dups}; leaked {r['leaked']}")
    for text in (add["failed"] + dele["failed"])[:3]:
        print(f"           e.g. {text!r}")
    cpu = add["cpu"]
    print(f"           CPU per ADD: {sum(cpu.values()) / len(add['times']) * 1e3:.2f} ms in all = " + " + ".join(
        f"{name} {seconds / len(add['times']) * 1e3:.2f}" for name, seconds in cpu.items()) +
        f" (the ADDs' wall {add['wall']:.2f} s x {os.cpu_count()} CPUs = {add['wall'] * os.cpu_count():.1f} CPU s; "
        f"used {sum(cpu.values()):.1f})")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # unwind, so that etcd and agents are stopped by pid
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--rows", default="host-local,agents,sqlite")
    args = ap.parse_args()
    nodes = [f"node-{i:02d}" for i in range(args.nodes)]
    rows = args.rows.split(",")
    print(f"burst: {args.pods} ADDs then {args.pods} DELs over {args.nodes} nodes, {args.parallel} in parallel, "
          f"each an exec of the plugin; {os.cpu_count()} CPUs; load average before: {load()}")
    results, logs = {}, []
    with tempfile.TemporaryDirectory(prefix="burst-bench-") as tmp:
        for row in rows:
            directory = Path(tmp) / row
            directory.mkdir()
            if row == "agents":
                results[row], logs = run_agents(directory, nodes, args.pods, args.parallel)
            elif row == "sqlite":
                results[row] = run_sqlite(directory, nodes, args.pods, args.parallel)
            else:
                results[row] = run_host_local(directory, nodes, args.pods, args.parallel)
            report(row, results[row], results.get("host-local") if row != "host-local" else None)
            print(f"           (load average after this row: {load()})", flush=True)
    for name, values in own_times(logs).items():
        if values:
            print(f"agents' {name} per ADD: p50 {statistics.median(values):.3f} ms, p99 {pct(values, .99):.3f} ms "
                  f"({len(values)} ADDs)")
    print(f"load average after: {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
