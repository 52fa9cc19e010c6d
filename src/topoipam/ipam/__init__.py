"""The IPAM service: block-affine allocation from topology-selected pools, on the datastore contract.

    from topoipam.ipam import IpamService, AssignRequest, AssignResult
    svc = IpamService(store)
    res = svc.auto_assign(AssignRequest(node="kube-node-0", handle="net.abc", num4=1))

Modules: ``service`` (entry point), ``assign`` (auto-assign for one family),
``release`` (release and affinities), ``blocks`` (typed reads and write ops),
``keys`` (datastore layout), ``retry`` (the one CAS loop), ``topology``
(pools/nodes/config/reservations view), ``check`` (listings, usage,
consistency check). Standard library and lean topoipam modules only: the CNI
plugin imports this package.
"""

from topoipam.ipam.service import AssignRequest, AssignResult, IpamService
from topoipam.ipam.topology import StaticTopology, StoreTopology

__all__ = ["AssignRequest", "AssignResult", "IpamService", "StaticTopology", "StoreTopology"]
