"""A small test world for the IPAM tests: pools, nodes, config and reservations written to a real
store the way resources/ writes them, a controllable clock, and the service under test.
(Imported by the other tests/test_ipam_*.py files; the tests here check the helper itself.)"""

from __future__ import annotations

import copy

from topoipam.ipam import AssignRequest, IpamService
from topoipam.ipam.keys import ROOT
from topoipam.model.storage import from_storage, to_storage
from topoipam.model.types import (IPAMConfig, IPAMConfigSpec, IPPool, IPPoolSpec, IPReservation, IPReservationSpec,
                                  Metadata, Node)
from topoipam.model.validate import validate
from topoipam.resources.keys import resource_key
from topoipam.resources.service import topology_bump
from topoipam.store.base import Create, Delete, Update


class World:
    def __init__(self, store, topology=None):
        self.store = store
        self.now = 1_800_000_000.0
        self.svc = IpamService(store, clock=lambda: self.now, topology=topology)

    def _put(self, resource):
        resource = validate(resource)
        key = resource_key(resource.kind, resource.name)
        old = self.store.get(key)
        if old is None:
            self._write(Create(key, to_storage(resource)))
        else:
            self._write(Update(key, to_storage(resource), old.revision))
        return resource

    def _write(self, op):
        """One resource write with the topology generation bump that resources.service adds to it."""
        self.store.commit([op, topology_bump(self.store)])

    def _get(self, kind, name):
        rec = self.store.get(resource_key(kind, name))
        return from_storage(kind, rec.value, rec.revision)

    def pool(self, name, cidr, **spec):
        return self._put(IPPool(Metadata(name), IPPoolSpec(cidr=cidr, **spec)))

    def update_pool(self, name, **changes):
        p = self._get("IPPool", name)
        p.spec = copy.copy(p.spec)
        for name, value in changes.items():
            setattr(p.spec, name, value)
        return self._put(p)

    def delete_pool(self, name):
        """Reference 1.3: disable, release the pool's affinities, delete the pool."""
        p = self.update_pool(name, disabled=True)
        self.svc.release_pool_affinities(p)
        rec = self.store.get(resource_key("IPPool", name))
        self._write(Delete(rec.key, rec.revision))

    def node(self, name, **labels):
        return self._put(Node(Metadata(name, labels=dict(labels))))

    def relabel(self, name, **labels):
        n = self._get("Node", name)
        n.metadata.labels = dict(labels)
        rec = self.store.get(resource_key("Node", name))
        self._write(Update(rec.key, to_storage(n), rec.revision))

    def config(self, **spec):
        return self._put(IPAMConfig(Metadata("default"), IPAMConfigSpec(**spec)))

    def reserve(self, name, *cidrs):
        return self._put(IPReservation(Metadata(name), IPReservationSpec(reserved_cidrs=list(cidrs))))

    def assign(self, node, handle="h", **kw):
        return self.svc.auto_assign(AssignRequest(node=node, handle=handle, **kw))

    def ip4(self, node, handle="h", **kw):
        return str(self.assign(node, handle, **kw).ipv4[0])

    def ipam_state(self):
        """Every IPAM record (key -> value): to show that a rejected request changed nothing."""
        return {r.key: r.value for r in self.store.list(ROOT)}

    def block(self, cidr):
        from topoipam.core.block import Block
        from topoipam.ipam.keys import block_key
        import ipaddress
        rec = self.store.get(block_key(ipaddress.ip_network(cidr)))
        return None if rec is None else Block.from_json(rec.value)


def test_world_writes_resources_the_service_reads(store):
    w = World(store)
    w.pool("p", "10.0.0.0/24")
    w.node("n0", rack="0")
    assert w.ip4("n0").endswith("/26")
    assert w.svc.check().ok
