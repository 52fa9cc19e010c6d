"""The per-node agent (``topoipam agent``): holds the datastore connection and serves the CNI plugin.

Modules: ``daemon`` (the ``Agent``: life cycle, request serving, maintenance),
``server`` (the unix socket), ``warm`` (pools, own Node, IPAM config and
reservations kept warm by the store's watch), ``cache`` (blocks and own
affinities remembered for ADD/DEL, every use ending in a compare-and-swap),
``node`` (node registration and tunnel addresses, reference section 5). The CLI edge is ``cli/agent.py``.
"""
