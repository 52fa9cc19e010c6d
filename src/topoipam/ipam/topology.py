"""The topology an IPAM decision reads: pools, node labels, IPAM config, reservations.

``StoreTopology`` (the default) reads them from the datastore through
``resources.repo`` once per service call. ``StaticTopology`` holds values given
to it; a per-node agent keeps one warm (replacing it when its watch reports a
change). Either way blocks, affinities and handles are always read fresh and
written by compare-and-swap, so a stale topology can only make a decision
that an up-to-date one could also have made a moment earlier.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable, Protocol

from topoipam.model.types import IPAMConfig, IPPool, IPReservation, Metadata, Node
from topoipam.resources import repo
from topoipam.store.base import Store


class Topology(Protocol):
    def pools(self) -> list[IPPool]: ...
    def node(self, name: str) -> Node | None: ...
    def ipam_config(self) -> IPAMConfig: ...
    def reservations(self) -> list[IPReservation]: ...


class StoreTopology:
    def __init__(self, store: Store) -> None:
        self.store = store

    def pools(self) -> list[IPPool]:
        return repo.list_pools(self.store)

    def node(self, name: str) -> Node | None:
        return repo.get_node(self.store, name)

    def ipam_config(self) -> IPAMConfig:
        return repo.get_ipam_config(self.store)

    def reservations(self) -> list[IPReservation]:
        return repo.list_reservations(self.store)


@dataclass
class StaticTopology:
    pool_list: list[IPPool] = field(default_factory=list)
    nodes: dict[str, Node] = field(default_factory=dict)
    config: IPAMConfig = field(default_factory=lambda: IPAMConfig(Metadata(name="default")))
    reservation_list: list[IPReservation] = field(default_factory=list)

    def pools(self) -> list[IPPool]:
        return list(self.pool_list)

    def node(self, name: str) -> Node | None:
        return self.nodes.get(name)

    def ipam_config(self) -> IPAMConfig:
        return self.config

    def reservations(self) -> list[IPReservation]:
        return list(self.reservation_list)


class Snapshot:
    """One service call's view: each part read at most once, on first use."""

    def __init__(self, topology: Topology) -> None:
        self._t = topology
        self._nodes: dict[str, Node | None] = {}

    @cached_property
    def pools(self) -> list[IPPool]:
        return sorted(self._t.pools(), key=lambda p: p.name)

    @cached_property
    def enabled_pools(self) -> list[IPPool]:
        return [p for p in self.pools if not p.spec.disabled]

    @cached_property
    def config(self):
        return self._t.ipam_config().spec

    @cached_property
    def reserved(self) -> list:
        return list(_reserved_networks(self._t.reservations()))

    def node(self, name: str) -> Node | None:
        if name not in self._nodes:
            self._nodes[name] = self._t.node(name)
        return self._nodes[name]


def _reserved_networks(reservations: Iterable[IPReservation]):
    for r in reservations:
        for text in r.spec.reserved_cidrs:
            yield ipaddress.ip_network(text, strict=False)
