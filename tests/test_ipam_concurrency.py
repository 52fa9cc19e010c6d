"""8 processes x 500 assignments on one SQLite file for 4 nodes: zero duplicates, every acknowledged
address present under its handle, consistency check clean."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from test_ipam_world import World
from topoipam.store import open_store

PROCS, PER_PROC, NODES = 8, 500, 4

WORKER = textwrap.dedent("""
    import sys
    from topoipam.ipam import AssignRequest, IpamService
    from topoipam.store import open_store
    url, proc, count, nodes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    store = open_store(url)
    svc = IpamService(store)
    out = []
    for i in range(count):
        node = f"node-{(proc + i) % nodes}"
        handle = f"p{proc}.{i}"
        res = svc.auto_assign(AssignRequest(node=node, handle=handle, attrs={"node": node}))
        out.append(f"{handle} {res.ipv4[0].ip}")
        if i % 10 == 9:  # some churn: release every tenth again, by handle
            svc.release_by_handle(handle)
            out[-1] = f"{handle} released"
    store.close()
    print("\\n".join(out))
""")


@pytest.mark.slow
def test_eight_processes_assign_concurrently(tmp_path):
    url = f"sqlite://{tmp_path}/ipam.db"
    store = open_store(url)
    w = World(store)
    w.pool("pool", "10.0.0.0/20")
    for n in range(NODES):
        w.node(f"node-{n}", rack=str(n % 2))
    procs = []
    try:
        for p in range(PROCS):
            procs.append(subprocess.Popen([sys.executable, "-c", WORKER, url, str(p), str(PER_PROC), str(NODES)],
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outputs = [proc.communicate(timeout=300) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
    acked = {}
    for out, _ in outputs:
        for line in out.strip().splitlines():
            handle, ip = line.split()
            if ip != "released":
                acked[handle] = ip
    assert len(acked) == PROCS * PER_PROC * 9 // 10
    assert len(set(acked.values())) == len(acked), "duplicate address handed out"
    held = {a.handle: str(a.ip.ip) for a in w.svc.allocations()}
    assert held == acked  # every acknowledged address present, under its handle; nothing else
    report = w.svc.check()
    assert report.ok, report.problems[:5]
    per_node = {}
    for a in w.svc.allocations():
        per_node.setdefault(a.node, 0)
        per_node[a.node] += 1
        assert a.attrs["node"] == a.node  # each node used its own blocks (no borrowing needed)
    assert sorted(per_node) == [f"node-{n}" for n in range(NODES)]
    store.close()
