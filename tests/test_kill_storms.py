"""Kill storms: a process doing assignments is SIGKILLed at a random moment, 200 times each.

(a) the CLI (``topoipam ipam assign``), (b) the library API (a Python process looping on
``topoipam.IpamService``), (c) the CNI plugin exec'd on SQLite, all on one SQLite file per storm;
(d) assignments through the agent on etcd, the agent killed mid-request and restarted.
What must hold afterwards is ``storm.finish_storm``: invariants, every acknowledged assignment
present, the unacknowledged ones found by ``ipam check`` and released by gc, integrity ok.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time

import pytest

from agent_proc import AgentProc, add_env, netconf
from invariants import assert_invariants, parse_acknowledged
from netns import PLUGIN, VENV_BIN
from storm import NODE, TOPOIPAM, KillDelays, finish_storm, kill_after, make_world, run_once

KILLS = int(os.environ.get("TOPOIPAM_STORM_KILLS", "200"))
pytestmark = pytest.mark.slow


@pytest.fixture
def sqlite_world(tmp_path):
    from topoipam.store import open_store

    path = str(tmp_path / "storm.db")
    url = f"sqlite://{path}"
    store = open_store(url)
    try:
        make_world(store)
        yield store, url, path
    finally:
        store.close()


def _storm(argv_for, delays: KillDelays, acks_of, *, env=None, stdin_for=lambda i: b"") -> int:
    """Run ``argv_for(i)`` until ``KILLS`` of them were killed; the acknowledged assignments."""
    acks, killed, i = [], 0, 0
    while killed < KILLS:
        out, was_killed = run_once(argv_for(i), delays, env=env, stdin=stdin_for(i))
        acks += acks_of(i, out)
        killed += was_killed
        i += 1
    return acks, i


def test_cli_assign_kill_storm(sqlite_world, tmp_path):
    store, url, path = sqlite_world
    delays = KillDelays(random.Random(10))

    def argv(i):
        return [TOPOIPAM, "--datastore", url, "ipam", "assign", "--node", NODE, "--handle", f"cli.{i}"]

    def acks_of(i, out):  # the CLI prints the address once it is committed
        return [(line, f"cli.{i}") for line in out.decode().split()]

    acks, runs = _storm(argv, delays, acks_of)
    figures = finish_storm(store, url, acks, tmp_path, path)
    print(f"CLI storm: {runs} runs, {KILLS} killed, {figures}")


LIBRARY_WORKER = """
import os, random, sys, topoipam
def say(*words):  # one write(2) of a whole line (atomic on a pipe): a kill never leaves half of one
    os.write(1, (" ".join(map(str, words)) + "\\n").encode())
store = topoipam.open_store(sys.argv[1])
svc = topoipam.IpamService(store)
tag, node = sys.argv[2], sys.argv[3]
rng = random.Random(tag)
held = []
say("READY")
for n in range(100000):
    if held and rng.random() < 0.3:
        handle = held.pop(rng.randrange(len(held)))
        say("RELEASING", handle)  # from here on its state is the worker's own business
        svc.release_by_handle(handle)
        continue
    handle = f"{tag}.{n}"
    res = svc.auto_assign(topoipam.AssignRequest(node=node, handle=handle, attrs={"node": node}))
    say("ACK", res.ipv4[0].ip, handle)
    held.append(handle)
"""


def _library_acks(text: str) -> list[tuple[str, str]]:
    releasing = {line.split()[1] for line in text.splitlines() if line.startswith("RELEASING ")}
    return [(ip, h) for ip, h in parse_acknowledged(text) if h not in releasing]


def test_library_api_kill_storm(sqlite_world, tmp_path):
    """The worker is killed after READY, at a moment drawn from its per-assignment time (measured)."""
    store, url, path = sqlite_world
    rng = random.Random(11)
    python = str(VENV_BIN / "python")
    per_op, acks = None, []
    for i in range(KILLS):
        proc = _popen([python, "-c", LIBRARY_WORKER, url, f"lib{i}", NODE])
        assert proc.stdout.readline() == b"READY\n"
        if per_op is None:  # measure: 50 operations
            start = time.monotonic()
            lines = [proc.stdout.readline() for _ in range(50)]
            per_op = (time.monotonic() - start) / 50
            out = b"".join(lines) + kill_after(proc, 0)
        else:
            out = kill_after(proc, rng.uniform(0, 40 * per_op))
        acks += _library_acks(out.decode())
    figures = finish_storm(store, url, acks, tmp_path, path)
    print(f"library storm: {KILLS} killed, {per_op * 1000:.2f} ms per operation, {figures}")


def _popen(argv):
    import subprocess

    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
                            bufsize=0)  # unbuffered: communicate() after readline() must lose nothing


def test_cni_plugin_kill_storm(sqlite_world, tmp_path):
    store, url, path = sqlite_world
    delays = KillDelays(random.Random(12))
    stdin = json.dumps(netconf(None, nodename=NODE, datastore=url, agent_socket="")).encode()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}

    def env_of(i):
        return {**env, **add_env(f"c{i}")}

    def acks_of(i, out):
        if not out.strip():
            return []
        result = json.loads(out)
        assert "ips" in result, result  # a plugin that answered answered success
        return [(ip["address"], f"net.c{i}:eth0") for ip in result["ips"]]

    acks, killed, i = [], 0, 0
    while killed < KILLS:
        out, was_killed = run_once([str(PLUGIN)], delays, env=env_of(i), stdin=stdin)
        acks += acks_of(i, out)
        killed += was_killed
        i += 1
    figures = finish_storm(store, url, acks, tmp_path, path)
    print(f"CNI storm: {i} runs, {KILLS} killed, {figures}")


@pytest.mark.etcd
def test_agent_on_etcd_kill_storm(etcd_server, tmp_path):
    """Clients keep ADDing through the agent's socket; the agent is SIGKILLed mid-request and restarted.

    Each incarnation is killed once it has answered a request, after a delay drawn from the
    requests' own durations (so the kill lands inside one, or between two)."""
    from topoipam.store import open_store

    etcd_server.wipe()
    url = etcd_server.url()
    store = open_store(url)
    agent = AgentProc(tmp_path, url, NODE, labels={"rack": "0"})
    clients = _AgentClients(agent.socket)
    try:
        make_world(store)
        agent.start()
        clients.start(2)
        rng = random.Random(13)
        for _ in range(KILLS):
            if not clients.wait_for_answer():
                os.kill(agent.proc.pid, signal.SIGUSR1)  # the agent logs every thread's stack
                time.sleep(1.0)
                raise AssertionError(f"the agent answered nothing for 60 s; clients' last errors {clients.errors[-3:]}; "
                                     f"its log ends:\n{agent.log()[-6000:]}")
            time.sleep(rng.choice(clients.durations[-50:]) * rng.uniform(0.0, 1.5))
            agent.kill()
            agent.start()
        clients.stop()
        agent.stop()
        figures = finish_storm(store, url, clients.acks, tmp_path)
        print(f"agent storm: {KILLS} agent kills, {figures}")
    finally:
        clients.stop()
        agent.kill()
        store.close()


class _AgentClients:
    """Threads ADDing through the agent's socket in a loop; what they were told, and how long each answer took."""

    def __init__(self, socket_path: str) -> None:
        self.socket, self.acks, self.durations, self.errors = socket_path, [], [], []
        self._answered = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, n: int) -> None:
        self._threads = [threading.Thread(target=self._run, args=(f"k{t}",), daemon=True) for t in range(n)]
        for t in self._threads:
            t.start()

    def wait_for_answer(self, timeout: float = 60.0) -> bool:
        with self._answered:
            seen = len(self.acks)
            return self._answered.wait_for(lambda: len(self.acks) > seen, timeout)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def _run(self, tag: str) -> None:
        from topoipam.cni.agent_client import AgentUnavailable, call

        stdin = json.dumps(netconf(None)).encode()
        n = 0
        while not self._stop.is_set():
            cid, n = f"{tag}-{n}", n + 1
            start = time.monotonic()
            try:
                code, out = call(self.socket, add_env(cid), stdin)
            except AgentUnavailable as exc:
                self.errors.append(str(exc)[:200])
                time.sleep(0.005)
                continue
            if code != 0:
                self.errors.append(out[:300])
                time.sleep(0.005)
            else:
                with self._answered:
                    self.durations.append(time.monotonic() - start)
                    self.acks.extend((ip["address"], f"net.{cid}:eth0") for ip in json.loads(out)["ips"])
                    self._answered.notify_all()
