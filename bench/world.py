"""A large SQLite world for benchmarks: many nodes in racks, a pool per rack, workloads on every node.

    from world import build_world
    info = build_world("/tmp/w.db", nodes=10_000, allocations=100_000, racks=20)
    # -> a file sqlite:///tmp/w.db; info.url, info.nodes, info.allocations, info.seconds, info.cpu_seconds

Built with the real code, so that every record is what the CLI, the agent and the plugin would
write: pools and nodes are validated resources (as ``resources/`` writes them, with the topology
generation bump), and every address is assigned by ``IpamService.auto_assign``, one workload per
call, with the attributes the CNI plugin records (node, pod, namespace, timestamp). To be quick,
the assignments run on an in-memory store with the topology given (a ``StaticTopology``, as the
agent keeps it), then every record is copied into the SQLite file in a few large transactions.
The copy keeps keys and values; revisions are the file's own (nothing stored names a revision).

Layout: racks ``r0..r{racks-1}``, each a pool ``rack-R`` = 10.R.0.0/16 with nodeSelector
``rack == "R"`` (1,024 /26 blocks: room for 500 nodes' blocks); nodes ``node-i`` labelled
``rack=R`` (i mod racks) and ``zone=z{R mod 4}``; workloads ``k8s-pod-network.w{j}`` spread round
robin over the nodes, so each node holds ceil(allocations/nodes) or one less in its affine block.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from topoipam.ipam import AssignRequest, IpamService, StaticTopology  # noqa: E402
from topoipam.model.storage import to_storage  # noqa: E402
from topoipam.model.types import IPPool, IPPoolSpec, Metadata, Node  # noqa: E402
from topoipam.model.validate import validate  # noqa: E402
from topoipam.resources.keys import resource_key  # noqa: E402
from topoipam.resources.service import topology_bump  # noqa: E402
from topoipam.store import open_store  # noqa: E402
from topoipam.store.base import Create  # noqa: E402

CLOCK = 1_800_000_000.0  # assignment times (the timestamp attribute): one workload a second before this
BATCH = 5_000  # records per SQLite transaction while copying


@dataclass
class WorldInfo:
    url: str
    nodes: int
    allocations: int
    racks: int
    records: int
    seconds: float  # wall clock
    cpu_seconds: float  # this process's CPU time: the steadier figure on a shared machine


def rack_pool(rack: int) -> IPPool:
    return validate(IPPool(Metadata(f"rack-{rack}"), IPPoolSpec(cidr=f"10.{rack}.0.0/16",
                                                               node_selector=f'rack == "{rack}"')))


def rack_node(i: int, racks: int) -> Node:
    rack = i % racks
    return validate(Node(Metadata(f"node-{i}", labels={"rack": str(rack), "zone": f"z{rack % 4}"})))


def build_world(path: str, nodes: int = 10_000, allocations: int = 100_000, racks: int = 20) -> WorldInfo:
    """Write the world described in the module docstring to a new SQLite file at ``path``."""
    if racks > 250 or nodes > racks * 1000:
        raise ValueError("at most 250 racks (10.R.0.0/16) and 1,000 nodes per rack")
    if os.path.exists(path):
        raise FileExistsError(f"{path} exists; build_world writes a new file")
    t, cpu = time.perf_counter(), time.process_time()
    mem = open_store("memory://")
    pools = [rack_pool(r) for r in range(racks)]
    all_nodes = [rack_node(i, racks) for i in range(nodes)]
    ops = [Create(resource_key("IPPool", p.name), to_storage(p)) for p in pools]
    ops += [Create(resource_key("Node", n.name), to_storage(n)) for n in all_nodes]
    mem.commit(ops + [topology_bump(mem)])
    topology = StaticTopology(pools, {n.name: n for n in all_nodes})
    svc = IpamService(mem, clock=lambda: CLOCK, topology=topology)
    for j in range(allocations):
        node = all_nodes[j % nodes].name
        stamp = time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(CLOCK - allocations + j))
        svc.auto_assign(AssignRequest(node=node, handle=f"k8s-pod-network.w{j}", attrs={
            "node": node, "pod": f"w{j}", "namespace": f"ns{j % 10}", "timestamp": stamp}))
    records = mem.list("")
    disk = open_store(f"sqlite://{os.path.abspath(path)}?synchronous=OFF")
    try:
        for i in range(0, len(records), BATCH):
            disk.commit([Create(r.key, r.value) for r in records[i:i + BATCH]])
    finally:
        disk.close()
    return WorldInfo(f"sqlite://{os.path.abspath(path)}", nodes, allocations, racks, len(records),
                     time.perf_counter() - t, time.process_time() - cpu)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Write a benchmark world to a new SQLite file.")
    ap.add_argument("path")
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--allocations", type=int, default=100_000)
    ap.add_argument("--racks", type=int, default=20)
    a = ap.parse_args()
    info = build_world(a.path, a.nodes, a.allocations, a.racks)
    print(f"{info.url}: {info.nodes:,} nodes, {info.allocations:,} allocations, {info.records:,} records "
          f"in {info.seconds:.1f} s ({info.cpu_seconds:.1f} s CPU)")
