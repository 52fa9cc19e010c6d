"""CNI plugin latency and memory: topoipam-cni next to the reference host-local IPAM, same run.

Execs each plugin as a runtime does (environment, JSON on stdin, one process per
call): ADD for N distinct containers, then DEL for each, the two plugins
interleaved call by call so that both see the same machine load. Reports
median and p99 per command, the ratio to host-local, and the peak RSS of one
plugin process (GNU time's maximum resident set size, over 20 ADDs and 20 DELs). topoipam-cni runs on an SQLite datastore prepared with the topoipam CLI
(one node, one /22 pool selecting it) and is exec'd through its installed
script (the lean launcher of ``topoipam-cni install-launcher``: the venv's
python, a symlink to the real binary, not a version-manager shim, with -IS).
Bytecode is compiled first, as an install would have it.

    .venv/bin/python bench/cni_bench.py [-n 200] [--agent] [--load] [--python PYTHON]

``--python`` execs a launcher written for that interpreter (``topoipam-cni
install-launcher --python``, into the bench's temporary directory) instead of
the installed one; the bare interpreter row is always the plugin's own.

With ``--agent`` a third row execs the same plugin in agent mode
(``ipam.agent_socket``): a ``topoipam agent`` started for the run serves the
requests over its unix socket and is stopped (SIGTERM, by pid) at the end.
With ``--load`` the whole measurement is repeated while one CPU-burning
process (a busy loop, stopped by pid afterwards) runs beside it, and the
ratios under load are printed next to the idle ones: Python's start-up
suffers more than Go's on a busy node. The load average is printed with each.

Not a test: it prints figures and ratios, and asserts nothing.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
PLUGIN = VENV_BIN / "topoipam-cni"
HOST_LOCAL = pathlib.Path("/usr/lib/cni/host-local")
TIME = "/usr/bin/time"  # GNU time (Debian package "time", installed by scripts/setup.sh)
RSS_SAMPLES = 20
SETUP = """
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: bench-node, labels: {rack: "0"}}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: bench-pool}
spec: {cidr: 10.100.0.0/22, nodeSelector: rack == "0"}
"""


def run(argv: list[str], env: dict[str, str], stdin: bytes) -> tuple[float, float, bytes, bytes]:
    """Exec once: (wall seconds, CPU seconds of the child, stdout, stderr); exits the bench if it fails.

    CPU time (user + system, from wait4) is reported next to wall time because
    these cores are shared: it moves much less with other jobs' load.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = _talk(proc, stdin)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}): {out.decode()} {err.decode()}")
    return elapsed, usage.ru_utime + usage.ru_stime, out, err


def _talk(proc: subprocess.Popen, stdin: bytes) -> tuple[bytes, bytes]:
    """Write stdin, read both outputs (small: a result or an error object), without reaping the child."""
    proc.stdin.write(stdin)
    proc.stdin.close()
    out = proc.stdout.read()
    return out, proc.stderr.read()


def peak_rss_kib(argv: list[str], env: dict[str, str], stdin: bytes) -> int:
    """Peak RSS of one plugin process, from /usr/bin/time (GNU time's %M, KiB).

    Not from this process's wait4/RUSAGE_CHILDREN: Linux carries the RSS high-water
    mark of the process that forks across exec, so every child of this (larger)
    Python process would report at least this process's own size.
    """
    _, _, _, err = run([TIME, "-f", "%M", *argv], env, stdin)
    return int(err.decode().strip().splitlines()[-1])


def env_for(command: str, cid: str) -> dict[str, str]:
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command, "CNI_CONTAINERID": cid,
            "CNI_NETNS": f"/run/netns/{cid}", "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni",
            "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={cid}"}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="calls per command and plugin (default 200)")
    parser.add_argument("--agent", action="store_true", help="also measure the plugin in agent mode")
    parser.add_argument("--load", action="store_true", help="measure again beside a CPU-burning process")
    parser.add_argument("--python", help="exec a launcher written for this interpreter instead of the installed one")
    opts = parser.parse_args()
    compileall.compile_dir(str(REPO / "src" / "topoipam"), quiet=1)
    with tempfile.TemporaryDirectory(prefix="cni-bench-") as tmp:
        plugin = PLUGIN
        if opts.python:
            plugin = pathlib.Path(tmp) / "topoipam-cni"
            subprocess.run([str(PLUGIN), "install-launcher", str(plugin), "--python", opts.python], check=True,
                           capture_output=True)
        python = plugin.read_text().split("\n", 1)[0][2:].split()[0]  # the launcher's interpreter
        url = f"sqlite://{tmp}/bench.db"
        subprocess.run([str(VENV_BIN / "topoipam"), "--datastore", url, "create", "-f", "-"], input=SETUP.encode(),
                       check=True, capture_output=True)
        confs = {
            "topoipam-cni": json.dumps({"cniVersion": "1.0.0", "name": "bench", "type": "bridge", "ipam": {
                "type": "topoipam-cni", "nodename": "bench-node", "datastore": url}}).encode(),
            "host-local": json.dumps({"cniVersion": "1.0.0", "name": "bench", "type": "bridge", "ipam": {
                "type": "host-local", "ranges": [[{"subnet": "10.200.0.0/22"}]], "dataDir": f"{tmp}/hl"}}).encode(),
        }
        argv = {"topoipam-cni": [str(plugin)], "host-local": [str(HOST_LOCAL)]}
        agent = start_agent(tmp, url) if opts.agent else None
        try:
            if agent:
                sock = f"{tmp}/agent.sock"
                confs["topoipam-cni agent"] = json.dumps({"cniVersion": "1.0.0", "name": "bench-agent", "ipam": {
                    "type": "topoipam-cni", "nodename": "bench-node", "agent_socket": sock}}).encode()
                argv["topoipam-cni agent"] = [str(plugin)]
            phases = {"idle": measure(opts.n, argv, confs, "i")}
            if opts.load:
                burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                try:
                    phases["beside a CPU burner"] = measure(opts.n, argv, confs, "l")
                finally:
                    burner.kill()
                    burner.wait()
        finally:
            if agent:
                agent.send_signal(signal.SIGTERM)
                agent.wait(timeout=60)
        bare = [run([python, "-IS", "-c", "pass"], {}, b"")[0] for _ in range(50)]
        bare_rss = peak_rss_kib([python, "-IS", "-c", "pass"], {}, b"")
        version = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True,
                                 text=True).stdout.strip()
    for name, (times, cpus, rss, load) in phases.items():
        print(f"\n== {name} (load average during: {load})")
        report(opts.n, times, cpus, rss, statistics.median(bare), bare_rss, f"{python} {version}")
    summary(phases)
    return 0


TARGETS = {"topoipam-cni agent": (5.0, 10.0), "topoipam-cni": (8.0, 10.0)}  # p50, p99 ratio to host-local


def summary(phases: dict) -> None:
    """One line per phase, plugin and command: the p50/p99 ratios to host-local and the targets."""
    print("\n== ratios to host-local (targets: agent p50 <= 5x, embedded p50 <= 8x, p99 <= 10x)")
    for name, (times, _, _, _) in phases.items():
        for p, (t50, t99) in TARGETS.items():
            for command in ("ADD", "DEL"):
                if (p, command) not in times:
                    continue
                t, base = times[p, command], times["host-local", command]
                r50 = statistics.median(t) / statistics.median(base)
                r99 = pct(t, .99) / pct(base, .99)
                print(f"{name:20} {p:18} {command}: p50 {r50:5.1f}x ({'ok' if r50 <= t50 else 'MISSED'}), "
                      f"p99 {r99:5.1f}x ({'ok' if r99 <= t99 else 'MISSED'})")


def measure(n: int, argv: dict, confs: dict, tag: str = "c") -> tuple:
    times = {(p, c): [] for p in confs for c in ("ADD", "DEL")}
    cpus = {(p, c): [] for p in confs for c in ("ADD", "DEL")}
    rss = {p: [] for p in confs}
    for p in confs:  # warm the page cache once, unmeasured
        run(argv[p], env_for("ADD", "warm"), confs[p])
        run(argv[p], env_for("DEL", "warm"), confs[p])
    for command in ("ADD", "DEL"):
        for i in range(n):
            for p in confs:
                wall, cpu, _, _ = run(argv[p], env_for(command, f"{tag}{i:04d}"), confs[p])
                times[p, command].append(wall)
                cpus[p, command].append(cpu)
    for i in range(RSS_SAMPLES):  # ADD and DEL, separately from the timed calls
        for command in ("ADD", "DEL"):
            for p in confs:
                rss[p].append(peak_rss_kib(argv[p], env_for(command, f"{tag}m{i:04d}"), confs[p]))
    return times, cpus, rss, " ".join(f"{x:.2f}" for x in os.getloadavg())


def start_agent(tmp: str, url: str) -> subprocess.Popen:
    """``topoipam agent`` for bench-node on a socket in ``tmp``; returns once the socket answers."""
    sock = f"{tmp}/agent.sock"
    log = open(f"{tmp}/agent.log", "wb")
    proc = subprocess.Popen([str(VENV_BIN / "topoipam"), "agent", "--node", "bench-node", "--label", "rack=0",
                             "--socket", sock, "--datastore", url], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not os.path.exists(sock):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"the agent did not start: {open(f'{tmp}/agent.log').read()[-2000:]}")
        time.sleep(0.05)
    return proc


def report(n: int, times: dict, cpus: dict, rss: dict, bare: float, bare_rss: int, python: str) -> None:
    print(f"CNI plugin latency, {n} calls per row, plugins interleaved; machine: {os.cpu_count()} CPUs; "
          f"the plugin's interpreter: {python}")
    print(f"{'plugin':18} {'cmd':4} {'p50 ms':>8} {'p99 ms':>8}   {'vs host-local p50 / p99':24} {'CPU p50 ms':>10}  ratio")
    for command in ("ADD", "DEL"):
        base, base_cpu = times["host-local", command], cpus["host-local", command]
        for p in sorted({p for p, _ in times}, key=lambda p: (p != "host-local", p)):
            t, c = times[p, command], cpus[p, command]
            ratio = f"{statistics.median(t) / statistics.median(base):5.1f}x / {pct(t, .99) / pct(base, .99):5.1f}x"
            cpu_ratio = statistics.median(c) / max(statistics.median(base_cpu), 1e-6)
            print(f"{p:18} {command:4} {statistics.median(t) * 1e3:8.2f} {pct(t, .99) * 1e3:8.2f}   {ratio:24} "
                  f"{statistics.median(c) * 1e3:10.2f}  {cpu_ratio:5.1f}x")
    for p, kib in rss.items():
        print(f"peak RSS of one {p} process: max {max(kib) / 1024:.1f} MiB, median {statistics.median(kib) / 1024:.1f} MiB")
    print(f"the plugin's interpreter ({python}) bare, -IS -c pass: start p50 {bare * 1e3:.2f} ms, "
          f"peak RSS {bare_rss / 1024:.1f} MiB")


if __name__ == "__main__":
    sys.exit(main())
