"""The package-level library API works as its docstring shows, on a real SQLite file."""

from __future__ import annotations

import subprocess
import sys

import topoipam

POOLS = """\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: rack-0-ippool}
spec: {cidr: 192.168.0.0/24, nodeSelector: rack == "0"}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: kube-node-0, labels: {rack: "0"}}
"""


def test_library_round_trip(tmp_path):
    store = topoipam.open_store(f"sqlite://{tmp_path}/t.db")
    try:
        topoipam.ResourceService(store, topoipam.PoolBlocks(store)).create(topoipam.decode_documents(POOLS, "pools.yaml"))
        ipam = topoipam.IpamService(store)
        result = ipam.auto_assign(topoipam.AssignRequest(node="kube-node-0", handle="vm-42"))
        assert [str(i.network.supernet(new_prefix=24)) for i in result.ipv4] == ["192.168.0.0/24"]
        assert ipam.release_by_handle("vm-42") == [result.ipv4[0].ip]
    finally:
        store.close()


def test_unknown_name_is_an_attribute_error():
    try:
        topoipam.NoSuchThing
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")


def test_importing_the_package_loads_nothing_else():
    code = "import sys, topoipam; print(sorted(m for m in sys.modules if m.startswith('topoipam')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['topoipam']"
