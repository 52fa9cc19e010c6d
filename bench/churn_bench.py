"""ADD/DEL churn (not a test): assign then release by handle on SQLite, one node with 40 live workloads,
cycles per CPU second and per wall-clock second, for the source tree given (compare two trees in one run):

    .venv/bin/python bench/churn_bench.py SRC_DIR CYCLES     # e.g. src 2000, and an older checkout's src
"""
import os, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
from topoipam.ipam import AssignRequest, IpamService
from topoipam.store import open_store
from topoipam.store.base import Create
from topoipam.model.storage import to_storage
from topoipam.model.types import IPPool, IPPoolSpec, Metadata, Node
from topoipam.resources.keys import resource_key
d = tempfile.mkdtemp()
store = open_store(f"sqlite://{d}/c.db")
pool = IPPool(Metadata(name="p"), IPPoolSpec(cidr="10.0.0.0/16"))
store.commit([Create(resource_key("IPPool", "p"), to_storage(pool)), Create(resource_key("Node", "n"), to_storage(Node(Metadata(name="n"))))])
svc = IpamService(store)
for i in range(40):  # 40 live workloads, then churn one at a time
    svc.auto_assign(AssignRequest(node="n", handle=f"live{i}"))
n = int(sys.argv[2])
t, cpu = time.perf_counter(), time.process_time()
for i in range(n):
    svc.auto_assign(AssignRequest(node="n", handle=f"c{i}"))
    svc.release_by_handle(f"c{i}")
print(f"{sys.argv[1]}: {n / (time.process_time() - cpu):.0f} cycles per CPU s, {n / (time.perf_counter() - t):.0f} per s")
