"""GC races: ``ipam gc`` with no grace runs continuously while 8 processes assign and release on one
SQLite file; no live allocation is ever released (each worker checks at the end that every address
it still holds is its own, and that none of its releases found its handle already gone).

The gc loop also has real garbage to find all along: addresses of a node that vanished, and leaked
handles written while it runs. Default run: 8 s of load; ``pytest -m slow`` adds the minute-long run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from test_ipam_world import World
from topoipam.ipam import AssignRequest, IpamService, gc, keys
from topoipam.resources.keys import resource_key
from topoipam.store import open_store
from topoipam.store.base import Create, Delete

PROCS, NODES = 8, 4

WORKER = textwrap.dedent("""
    import random, sys, time
    from topoipam.errors import NotFoundError
    from topoipam.ipam import AssignRequest, IpamService
    from topoipam.store import open_store
    url, proc, seconds, nodes = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    store = open_store(url)
    svc = IpamService(store)
    rng = random.Random(proc)
    held, problems, assigned, released = {}, [], 0, 0
    node = f"node-{proc % nodes}"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if len(held) < 8 or (len(held) < 30 and rng.random() < 0.55):
            handle = f"w{proc}.{rng.randrange(40)}"  # names are reused: the handle-revision fence matters
            if handle in held:
                continue
            stamp = time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime())
            res = svc.auto_assign(AssignRequest(node=node, handle=handle,
                                                attrs={"node": node, "pod": handle, "timestamp": stamp}))
            held[handle] = res.ipv4[0].ip
            assigned += 1
        else:
            handle = rng.choice(sorted(held))
            try:
                got = svc.release_by_handle(handle)
            except NotFoundError:
                got = None
            if got != [held[handle]]:
                problems.append(f"releasing {handle}: expected [{held[handle]}], released {got}")
            del held[handle]
            released += 1
    for handle, ip in sorted(held.items()):
        alloc = svc.allocation_of(ip)
        if alloc is None or alloc.handle != handle or svc.ips_by_handle(handle) != [ip]:
            problems.append(f"{handle} lost {ip}: now {alloc}")
    store.close()
    print(f"assigned {assigned} released {released} held {len(held)}")
    for p in problems:
        print("PROBLEM", p)
""")


def gc_races(tmp_path, seconds: float) -> None:
    url = f"sqlite://{tmp_path}/races.db"
    store = open_store(url)
    w = World(store)
    w.pool("pool", "10.0.0.0/18")
    for n in range(NODES):
        w.node(f"node-{n}", rack=str(n % 2))
    w.node("gone", rack="0")
    svc = IpamService(store)
    garbage = [svc.auto_assign(AssignRequest(node="gone", handle=f"gone.{i}", attrs={"node": "gone"})).ipv4[0].ip
               for i in range(10)]
    rec = store.get(resource_key("Node", "gone"))
    store.commit([Delete(rec.key, rec.revision)])  # the node vanishes under its workloads
    procs, outcomes, passes, leaks = [], [], 0, []
    try:
        for p in range(PROCS):
            procs.append(subprocess.Popen([sys.executable, "-c", WORKER, url, str(p), str(seconds), str(NODES)],
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        while any(proc.poll() is None for proc in procs):
            if passes % 3 == 0:  # a handle leaked meanwhile (as a crash between two commits could leave one)
                leaks.append(f"leak.{passes}")
                store.commit([Create(keys.handle_key(leaks[-1]), b'{"block":{},"deleted":false}')])
            _, done = gc.collect(svc, time.time(), 0.0)
            outcomes += done
            passes += 1
        outputs = [proc.communicate(timeout=120) for proc in procs]
        _, done = gc.collect(svc, time.time(), 0.0)  # the last pass, on a quiet store
        outcomes += done
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        store.close()
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        assert "PROBLEM" not in out, out
        assert int(out.split()[1]) > 0, out  # the worker did assign
    released = [(g.kind, g.handle) for g, outcome in outcomes if outcome == "released"]
    assert not [o for _, o in outcomes if o.startswith("failed")], outcomes
    assert all(kind in ("node-gone", "handle-without-address") for kind, _ in released), released
    assert sorted(h for k, h in released if k == "node-gone") == sorted(f"gone.{i}" for i in range(10))
    assert sorted(h for k, h in released if k == "handle-without-address") == sorted(leaks)
    assert not [h for _, h in released if h.startswith("w")]  # no worker's handle, ever
    assert passes >= 3 and garbage
    store = open_store(url)
    try:
        assert IpamService(store).check().ok
    finally:
        store.close()


def test_gc_races_with_eight_workers(tmp_path):
    gc_races(tmp_path, 8.0)


@pytest.mark.slow
def test_gc_races_for_a_minute(tmp_path, request):
    if "slow" not in (request.config.getoption("-m") or ""):
        pytest.skip("the minute-long run: pytest -m slow")
    gc_races(tmp_path, 60.0)
