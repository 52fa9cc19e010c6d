"""Where the v3 resources live in the datastore: ``/topoipam/v3/<plural>/<name>``."""

from __future__ import annotations

ROOT = "/topoipam/v3/"

# Written (compare-and-swap) by every commit that creates pools, so that two concurrent
# creates of overlapping pools with different names conflict, and the loser re-plans
# and sees the winner: the overlap rule holds under concurrency, not just sequentially.
POOL_GUARD_KEY = "/topoipam/guard/ippools"

# Bumped (compare-and-swap) in the same commit as every write of a pool, node, IPAM config or
# reservation made through resources.service (and resources.split). The IPAM service keeps the topology
# it read between calls and fences each assignment commit with a Check on this key's revision
# (and on the node's own key), so a topology change makes the commit fail and the retry re-reads.
TOPOLOGY_KEY = "/topoipam/guard/topology"

PLURAL = {
    "IPPool": "ippools",
    "Node": "nodes",
    "IPAMConfiguration": "ipamconfigs",
    "IPReservation": "ipreservations",
    "Profile": "profiles",
}


def resource_prefix(kind: str) -> str:
    return f"{ROOT}{PLURAL[kind]}/"


def resource_key(kind: str, name: str) -> str:
    return f"{ROOT}{PLURAL[kind]}/{name}"
