"""The topology an IPAM decision reads: pools, node labels, IPAM config, reservations.

``StoreTopology`` (the default) reads them from the datastore through
``resources.repo``. ``StaticTopology`` holds values given to it (tests, benchmarks). Blocks,
affinities and handles are always written by compare-and-swap, so a stale
topology given by the caller can only make a decision that an up-to-date one
could also have made a moment earlier.

``FencedSnapshot`` is what an assignment on the default topology uses: read
once at a known topology generation (``resources.keys.TOPOLOGY_KEY``, moved by
every resource write) and kept between calls. Every commit planned from it
carries ``fence_ops``: a Check on the generation and on the node's own key
(the agent registers and updates its Node directly). A write since the read
makes that commit fail; the retry reads the fence keys, finds them moved, and
the service reads the topology again. No decision lands on unfenced topology.
"""

from __future__ import annotations

import ipaddress
from topoipam.structs import dataclass, field
from functools import cached_property
from collections.abc import Iterable

from topoipam.core.duration import parse_duration
from topoipam.errors import NotFoundError, ValidationError
from topoipam.resources.keys import TOPOLOGY_KEY, resource_key
from topoipam.store.base import Check, Record, Store


class Topology:
    """What the service reads about pools, nodes, IPAM config and reservations.

    Structural: any object with these four methods will do (StoreTopology, StaticTopology);
    nothing needs to inherit from it. Not a typing.Protocol, so
    that ``typing`` stays off the plugin's start-up path.
    """

    def pools(self) -> list[IPPool]: ...
    def node(self, name: str) -> Node | None: ...
    def all_nodes(self) -> list[Node]: ...
    def ipam_config(self) -> IPAMConfig: ...
    def reservations(self) -> list[IPReservation]: ...


TYPE_CHECKING = False
if TYPE_CHECKING:
    from topoipam.model.types import IPAMConfig, IPPool, IPReservation, Node


# The resource model (``resources.repo``, ``model.storage``, ``model.types``) is imported by the
# first read of the topology, not with this module: a CNI DEL releases without reading it, and its
# exec is spared loading it (tests/test_cni_lean.py).

def _repo():
    from topoipam.resources import repo

    return repo


def _default_config() -> IPAMConfig:
    from topoipam.model.types import IPAMConfig, Metadata

    return IPAMConfig(Metadata(name="default"))


class StoreTopology:
    def __init__(self, store: Store) -> None:
        self.store = store

    def pools(self) -> list[IPPool]:
        return _repo().list_pools(self.store)

    def node(self, name: str) -> Node | None:
        return _repo().get_node(self.store, name)

    def all_nodes(self) -> list[Node]:
        return _repo().list_nodes(self.store)

    def ipam_config(self) -> IPAMConfig:
        return _repo().get_ipam_config(self.store)

    def reservations(self) -> list[IPReservation]:
        return _repo().list_reservations(self.store)


@dataclass
class StaticTopology:
    pool_list: list[IPPool] = field(default_factory=list)
    nodes: dict[str, Node] = field(default_factory=dict)
    config: IPAMConfig = field(default_factory=_default_config)
    reservation_list: list[IPReservation] = field(default_factory=list)

    def pools(self) -> list[IPPool]:
        return list(self.pool_list)

    def node(self, name: str) -> Node | None:
        return self.nodes.get(name)

    def all_nodes(self) -> list[Node]:
        return list(self.nodes.values())

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
    def ipam_config(self):
        return self._t.ipam_config()

    @cached_property
    def config(self):
        return self.ipam_config.spec

    @cached_property
    def cooldown(self) -> float:
        """Seconds a released address is passed over by auto-assign (``release_cooldown``)."""
        return release_cooldown(self.ipam_config)

    @cached_property
    def reserved(self) -> list:
        return list(_reserved_networks(self._t.reservations()))

    @cached_property
    def all_nodes(self) -> list[Node]:
        """Every registered node (read once; only for decisions about domains, never per assignment)."""
        return self._t.all_nodes()

    def carries(self, holder, leaving: str | None = None) -> bool:
        """Whether any registered node (other than ``leaving``) belongs to ``holder`` (a ``core.affinity.Holder``)."""
        if holder.node is not None:
            return holder.node != leaving and self.node(holder.node) is not None
        return any(holder.carried_by(n.labels) for n in self.all_nodes if n.name != leaving)

    def node(self, name: str) -> Node | None:
        if name not in self._nodes:
            self._nodes[name] = self._t.node(name)
        return self._nodes[name]

    def require_node(self, name: str) -> Node:
        """The node, or the NotFoundError every IPAM operation on an unknown node answers with."""
        node = self.node(name)
        if node is None:
            raise NotFoundError(f"resource does not exist: Node({name}): node {name} is not registered")
        return node

    # Values given by the caller are not fenced (see the module docstring), and derived values are
    # not kept (``memo``): the caller may change them between calls.
    valid = True
    memo = None

    def fence_keys(self, node: str) -> list[str]:
        return []

    def fence_ops(self, node: str) -> list:
        return []

    def holds(self, records: dict[str, Record], node: str) -> bool:
        return True


class TopologyMoved(Exception):
    """Internal: a fence key moved since the snapshot was read; the caller reads the topology again."""


class FencedSnapshot(Snapshot):
    """The topology read from ``store`` at one generation, reused across calls while it holds."""

    def __init__(self, store: Store, node: str | None = None) -> None:
        # The generation is read no later than the resources (first in one read, and the rest
        # lazily after it): a write landing in between moves it past ``generation``, so the first
        # commit fenced by this snapshot fails instead of trusting it. The IPAM config and the
        # given node come in the same read.
        config_key = resource_key("IPAMConfiguration", "default")
        wanted = [TOPOLOGY_KEY, config_key, *([resource_key("Node", node)] if node else [])]
        found = store.get_many(wanted)
        record = found.get(TOPOLOGY_KEY)
        self.generation = record.revision if record is not None else 0
        super().__init__(StoreTopology(store))
        self.valid = True
        self.memo: dict = {}  # derived values (pool choices), valid as long as the snapshot
        self._fences: dict[str, list] = {}
        config = found.get(config_key)
        from topoipam.model.storage import from_storage

        self.__dict__["ipam_config"] = (from_storage("IPAMConfiguration", config.value, config.revision) if config
                                        else _default_config())  # the cached_property's value
        if node and resource_key("Node", node) in found:
            rec = found[resource_key("Node", node)]
            self._nodes[node] = from_storage("Node", rec.value, rec.revision)

    def node(self, name: str) -> Node | None:
        node = self._nodes.get(name)
        if node is None:  # absence is not kept: a node registered meanwhile is seen at once
            node = self._t.node(name)
            if node is not None:
                self._nodes[name] = node
        return node

    def fence_keys(self, node: str) -> list[str]:
        return [TOPOLOGY_KEY, resource_key("Node", node)]

    def fence_ops(self, node: str) -> list:
        fences = self._fences.get(node)
        if fences is None:
            found = self._nodes.get(node)
            if found is None:  # not read (or absent): fence on absence, and do not keep that
                return [Check(TOPOLOGY_KEY, self.generation), Check(resource_key("Node", node), 0)]
            fences = self._fences[node] = [Check(TOPOLOGY_KEY, self.generation),
                                           Check(resource_key("Node", node), int(found.metadata.resource_version))]
        return fences

    def holds(self, records: dict[str, Record], node: str) -> bool:
        """Whether fresh ``records`` of ``fence_keys(node)`` still match; if not, this snapshot is
        marked invalid (the service reads a new one)."""
        for op in self.fence_ops(node):
            rec = records.get(op.key)
            if (rec.revision if rec is not None else 0) != op.revision:
                self.valid = False
                return False
        return True


#: The IPAMConfiguration annotation setting the release cooldown (a duration: "5s", "1m", "0s" = off).
#: An annotation, not a spec field, so that calicoctl and Calico accept the same manifest unchanged.
COOLDOWN_ANNOTATION = "topoipam.io/release-cooldown"
DEFAULT_COOLDOWN = 5.0  # seconds


def release_cooldown(config: IPAMConfig) -> float:
    """The configured cooldown; the default when the annotation is absent or not a duration (an
    assignment must not fail on a bad annotation; see docs/gc.md)."""
    text = (config.metadata.annotations or {}).get(COOLDOWN_ANNOTATION)
    if text is None:
        return DEFAULT_COOLDOWN
    try:
        return parse_duration(text)
    except ValidationError:
        return DEFAULT_COOLDOWN


def _reserved_networks(reservations: Iterable[IPReservation]):
    for r in reservations:
        for text in r.spec.reserved_cidrs:
            yield ipaddress.ip_network(text, strict=False)
