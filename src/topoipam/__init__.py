"""topoipam: topology-aware IP address management.

Operators cut their address space into IP pools with node selectors; each
workload gets an address from a pool that selects its node, out of a block
affine to that node. Calico's model and formats; SQLite or etcd underneath.

The library API, for programs that manage addresses themselves::

    import topoipam
    store = topoipam.open_store("sqlite:///var/lib/topoipam/topoipam.db")
    resources = topoipam.ResourceService(store, topoipam.PoolBlocks(store))  # PoolBlocks: its IPAM side
    resources.create(topoipam.decode_documents(open("pools.yaml").read(), "pools.yaml"))
    ipam = topoipam.IpamService(store)
    result = ipam.auto_assign(topoipam.AssignRequest(node="kube-node-0", handle="vm-42"))
    ipam.release_by_handle("vm-42")

The names are loaded on first use: every ``topoipam.*`` import runs this file,
and the CNI plugin, exec'd once per pod, must not pay for what it does not use.
"""

__version__ = "0.1.0"

_EXPORTS = {
    "open_store": "topoipam.store",
    "Store": "topoipam.store",
    "ResourceService": "topoipam.resources.service",
    "PoolBlocks": "topoipam.ipam.pool_blocks",
    "decode_documents": "topoipam.model.codec",
    "IpamService": "topoipam.ipam",
    "AssignRequest": "topoipam.ipam",
    "AssignResult": "topoipam.ipam",
    "TopoipamError": "topoipam.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'topoipam' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
