"""Where the v3 resources live in the datastore: ``/topoipam/v3/<plural>/<name>``."""

from __future__ import annotations

ROOT = "/topoipam/v3/"

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
