"""The seed tutorial's resource texts, written once for every test (and bench) that replays the seed.

The seed (/work/shared/seed/000_*.txt) creates four nodes, kube-node-0..3, and
then one pool per rack from a here-document: rack-r-ippool = 192.168.r.0/24,
nodeSelector rack == "r". These are those texts. ``topoipam demo`` keeps its own
copy (src/ must not import tests/); test_demo checks the two are the same, so
the tests stay an oracle independent of the code they test.
"""

from __future__ import annotations

NODES = [f"kube-node-{i}" for i in range(4)]
NODES_YAML = "".join(f"---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {n}\n" for n in NODES)

# Exactly the seed's here-document; format with rack=0 or rack=1.
RACK_POOL = """\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: rack-{rack}-ippool
spec:
  cidr: 192.168.{rack}.0/24
  ipipMode: Always
  natOutgoing: true
  nodeSelector: rack == "{rack}"
"""
# Both rack pools as one multi-document file.
RACK_POOLS = RACK_POOL.format(rack=0) + "---\n" + RACK_POOL.format(rack=1)
