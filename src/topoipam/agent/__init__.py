"""The per-node agent (``topoipam agent``): holds the datastore connection and serves the CNI plugin.

Modules: ``daemon`` (the ``Agent``: life cycle, request serving, maintenance),
``server`` (the unix socket), ``watch`` (tells the agent when pools, its own
Node, the IPAM config or reservations change; the IPAM service itself keeps
the topology and blocks between requests, fenced in every commit),
``node`` (node registration and tunnel addresses, reference section 5). The CLI edge is ``cli/agent.py``.
"""
