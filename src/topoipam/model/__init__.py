"""The resource model (``types``: the v3 resources; ``storage``: their stored form).

The allowed-use names are defined here, not in ``types``: the IPAM service's
request needs its default without loading the resource types, which a CNI DEL
never uses.
"""

USE_WORKLOAD, USE_TUNNEL, USE_LOAD_BALANCER = "Workload", "Tunnel", "LoadBalancer"
ALLOWED_USES = (USE_WORKLOAD, USE_TUNNEL, USE_LOAD_BALANCER)
