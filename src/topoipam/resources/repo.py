"""Typed reads of the v3 resources, for the IPAM service and the CNI plugin.

Standard library, the store contract and ``model.storage`` only: this module is
on the CNI plugin's import path. Writes go through ``resources.service``.
"""

from __future__ import annotations

from topoipam.model.storage import from_storage
from topoipam.model.types import IPAMConfig, IPPool, IPReservation, Metadata, Node
from topoipam.resources.keys import resource_key, resource_prefix
from topoipam.store.base import Store


def _list(store: Store, kind: str) -> list:
    return [from_storage(kind, r.value, r.revision) for r in store.list(resource_prefix(kind))]


def _get(store: Store, kind: str, name: str):
    record = store.get(resource_key(kind, name))
    return None if record is None else from_storage(kind, record.value, record.revision)


def list_pools(store: Store) -> list[IPPool]:
    """All pools in name order (key order is name order)."""
    return _list(store, "IPPool")


def get_pool(store: Store, name: str) -> IPPool | None:
    return _get(store, "IPPool", name)


def list_nodes(store: Store) -> list[Node]:
    return _list(store, "Node")


def get_node(store: Store, name: str) -> Node | None:
    return _get(store, "Node", name)


def get_ipam_config(store: Store) -> IPAMConfig:
    """The ``default`` IPAMConfiguration, or Calico's defaults when none is stored (nothing is written)."""
    return _get(store, "IPAMConfiguration", "default") or IPAMConfig(Metadata(name="default"))


def list_reservations(store: Store) -> list[IPReservation]:
    return _list(store, "IPReservation")
