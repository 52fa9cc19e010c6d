"""Helpers for the kill storms (tests/test_kill_storms.py): a world to assign in, kills, leak collection.

A storm SIGKILLs a process doing assignments at a random moment, many times, on one datastore.
What a killed process acknowledged is what reached its caller before the kill: a line on its
stdout (the CLI's address, the plugin's result, a library worker's ``ACK <ip> <handle>``), read
from the pipe after the kill. Afterwards (``finish_storm``):

1. the invariants hold and every acknowledged assignment is present (tests/invariants.py);
2. the workloads that were told end normally: each acknowledged handle is released and gives
   back exactly its acknowledged addresses;
3. the storm's Node record is removed without decommission (its workloads are gone), so what remains is exactly the
   allocations whose acknowledgement never reached a caller: ``ipam check`` must report every
   one of them as leaked, and ``collect_leaks`` (gc) must release them all;
4. afterwards ``ipam check`` is clean and the invariants hold again.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

from invariants import allocated, assert_invariants, unacknowledged
from netns import VENV_BIN

TOPOIPAM = str(VENV_BIN / "topoipam")
NODE = "storm-node"
WORLD = f"""\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {{name: storm-v4}}
spec: {{cidr: 10.80.0.0/16, blockSize: 22, nodeSelector: rack == "0"}}  # 20 blocks per node (Calico's cap): 20,480 addresses
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {{name: {NODE}, labels: {{rack: "0"}}}}
"""


def make_world(store) -> None:
    import topoipam

    topoipam.ResourceService(store, topoipam.PoolBlocks(store)).create(topoipam.decode_documents(WORLD, "world"))


def kill_after(proc: subprocess.Popen, delay: float, stdin: bytes | None = None) -> bytes:
    """SIGKILL ``proc`` (by pid) after ``delay`` seconds unless it ended first; everything it wrote to stdout."""
    try:
        out, _ = proc.communicate(stdin, timeout=delay)
        return out
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        return out


class KillDelays:
    """Kill delays drawn from the run-time distribution of the same command run to completion.

    The first ``warmup`` runs are not killed; their durations (and those of later runs that
    completed) make the distribution. A delay is one of them, scaled by a uniform factor in
    [0.2, 1.1): most kills land somewhere inside a run, some just after it finished.
    """

    def __init__(self, rng: random.Random, warmup: int = 3) -> None:
        self.rng, self.warmup, self.durations = rng, warmup, []

    def next(self) -> float | None:
        if len(self.durations) < self.warmup:
            return None
        return self.rng.choice(self.durations[-20:]) * self.rng.uniform(0.2, 1.1)

    def ran(self, seconds: float, completed: bool) -> None:
        if completed:
            self.durations.append(seconds)


def run_once(argv: list[str], delays: KillDelays, *, env=None, stdin: bytes = b"") -> tuple[bytes, bool]:
    """Run ``argv``, SIGKILLed after the next delay; (stdout, killed)."""
    delay = delays.next()
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=env, start_new_session=True)
    try:
        out = kill_after(proc, 120 if delay is None else delay, stdin)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    killed = proc.returncode == -signal.SIGKILL
    delays.ran(time.monotonic() - start, not killed)
    return out, killed


def collect_leaks(url: str, tmp: Path) -> set[str]:
    """Find the leaks with ``ipam check``, release them with ``ipam gc`` after its grace; the addresses.

    First ``ipam gc --grace 1h`` must release nothing (the leaks are younger than that: within the
    grace, kept), then ``ipam gc --grace 0s`` must release exactly what the check reported leaked,
    each release fenced on the handle and sequence number gc read.
    """
    report = tmp / f"report-{time.monotonic_ns()}.json"
    check = subprocess.run([TOPOIPAM, "--datastore", url, "ipam", "check", "-o", str(report)],
                           capture_output=True, text=True, timeout=300)
    assert check.returncode in (0, 4), check
    leaked = {ip for ip, entries in json.loads(report.read_text())["allocations"].items()
              if any(not e["inUse"] for e in entries)}

    def gc(grace: str) -> dict:
        run = subprocess.run([TOPOIPAM, "--datastore", url, "ipam", "gc", "--grace", grace, "-o", "json"],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run
        return json.loads(run.stdout)

    young = gc("1h")
    assert not [i for i in young["items"] if i["outcome"] == "released"], young["items"][:3]
    done = gc("0s")
    released = {i["ip"] for i in done["items"] if i["outcome"] == "released" and i["ip"]}
    assert released == leaked, (sorted(released - leaked)[:5], sorted(leaked - released)[:5])
    return leaked


def finish_storm(store, url: str, acks: list[tuple[str, str]], tmp: Path, sqlite_path: str | None = None) -> dict:
    """Steps 1-4 of the module docstring; figures for the test's report."""
    assert_invariants(store, acks, sqlite_path)
    leaks = {str(ip) for ip in unacknowledged(store, acks)}
    from topoipam.ipam import IpamService

    svc = IpamService(store)
    by_handle: dict[str, set] = {}
    for ip, handle in acks:
        by_handle.setdefault(handle, set()).add(ipaddress.ip_interface(ip).ip)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:  # one service shared, as the agent shares its own: etcd round trips overlap
        released = dict(zip(by_handle, pool.map(svc.release_by_handle, by_handle)))
    for handle, ips in by_handle.items():
        assert set(released[handle]) == ips, handle
    assert {str(ip) for ip in allocated(store)} == leaks
    from test_cli_ipam_check import remove_node_record

    remove_node_record(store, NODE)  # gone without decommission (which would release its addresses itself)
    found = collect_leaks(url, tmp)
    assert found == leaks, f"check reported {sorted(found - leaks)} not leaked, missed {sorted(leaks - found)}"
    assert allocated(store) == {}
    after = subprocess.run([TOPOIPAM, "--datastore", url, "ipam", "check"], capture_output=True, text=True)
    assert after.returncode == 0, after.stdout + after.stderr
    assert_invariants(store, (), sqlite_path)
    return {"acknowledged": len(acks), "leaked": len(leaks)}
