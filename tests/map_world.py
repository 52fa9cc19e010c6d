"""A datastore with a /16 pool of /26 blocks all claimed (1,024 blocks) by 16 nodes in 4 racks, some
addresses in use (varied fill), one borrowed address and one reservation: the map test's and the
map benchmark's world. Built through the public library (``ResourceService``, ``IpamService``)."""

from __future__ import annotations

import ipaddress
import json

RACKS, NODES_PER_RACK = 4, 4


def _doc(kind, name, spec, labels=None):
    meta = {"name": name, **({"labels": labels} if labels else {})}
    return json.dumps({"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": meta, "spec": spec})


def build(url: str, cidr: str = "10.0.0.0/16", claim: bool = True) -> int:
    """Create the world in the (empty) datastore at ``url``; returns the number of claimed blocks."""
    from topoipam.ipam import IpamService
    from topoipam.ipam.pool_blocks import PoolBlocks
    from topoipam.model.codec import decode_documents
    from topoipam.resources.service import ResourceService
    from topoipam.store import open_store

    store = open_store(url)
    try:
        nodes = [f"node-{r}-{i}" for r in range(RACKS) for i in range(NODES_PER_RACK)]
        docs = [_doc("Node", n, {}, {"rack": n.split("-")[1]}) for n in nodes]
        docs.append(_doc("IPPool", "big", {"cidr": cidr, "blockSize": 26, "nodeSelector": "all()"}))
        docs.append(_doc("IPReservation", "keep", {"reservedCIDRs": [str(ipaddress.ip_network(cidr)[64]) + "/30"]}))
        ResourceService(store, PoolBlocks(store)).create(decode_documents("\n---\n".join(docs), "world"))
        if not claim:
            return 0
        svc = IpamService(store)
        net = ipaddress.ip_network(cidr)
        parts = list(net.subnets(new_prefix=net.prefixlen + 4))  # 16 parts of 64 blocks each
        for node, part in zip(nodes, parts):
            svc.claim_affinity(str(part), node)
        for i, part in enumerate(parts):  # use: 0..15 addresses in the part's first blocks
            for k in range(i):
                svc.assign_ip(str(part[64 * k + 1]), f"h-{i}-{k}", {"node": nodes[i]}, nodes[i])
        svc.assign_ip(str(parts[1][5]), "borrow", {"node": nodes[0]}, nodes[0])  # node-0-0 in node-0-1's block
        return len(parts) * 64
    finally:
        store.close()
