"""topoipam: topology-aware IP address management.

Operators cut their address space into IP pools with node selectors; each
workload gets an address from a pool that selects its node, out of a block
affine to that node. Calico's model and formats; SQLite or etcd underneath.
"""

__version__ = "0.1.0"
