"""Where the v3 resources live in the datastore: ``/topoipam/v3/<plural>/<name>``."""

from __future__ import annotations

ROOT = "/topoipam/v3/"

# Written (compare-and-swap) by every commit that creates pools, so that two concurrent
# creates of overlapping pools with different names conflict, and the loser re-plans
# and sees the winner: the overlap rule holds under concurrency, not just sequentially.
POOL_GUARD_KEY = "/topoipam/guard/ippools"

PLURAL = {
    "IPPool": "ippools",
    "Node": "nodes",
    "IPAMConfiguration": "ipamconfigs",
    "IPReservation": "ipreservations",
}


def resource_prefix(kind: str) -> str:
    return f"{ROOT}{PLURAL[kind]}/"


def resource_key(kind: str, name: str) -> str:
    return f"{ROOT}{PLURAL[kind]}/{name}"
