"""Migrating from Calico on the Kubernetes datastore: ``kubectl get ... -o yaml`` output of Calico's
crd.projectcalico.org/v1 objects and of Kubernetes Nodes applies as the v3 resources they are; Calico's
IPAM state is refused with a message, and nothing is written when a document is refused."""

from __future__ import annotations

from conftest import sqlite_dump

KUBECTL_LIST = """apiVersion: v1
kind: List
metadata: {resourceVersion: ""}
items:
- apiVersion: crd.projectcalico.org/v1
  kind: IPPool
  metadata:
    annotations:
      projectcalico.org/metadata: '{"uid":"a1","creationTimestamp":"2024-01-01T00:00:00Z"}'
    creationTimestamp: "2024-01-01T00:00:00Z"
    generation: 1
    name: rack-0-ippool
    resourceVersion: "811"
    uid: 6a3b9bd4-6a4e-4b1c-9f37-1f3c5c0c2a10
  spec:
    allowedUses: [Workload, Tunnel]
    blockSize: 26
    cidr: 192.168.0.0/24
    ipipMode: Always
    natOutgoing: true
    nodeSelector: rack == "0"
    vxlanMode: Never
- apiVersion: crd.projectcalico.org/v1
  kind: IPAMConfig
  metadata: {name: default, generation: 1}
  spec: {autoAllocateBlocks: true, strictAffinity: false, maxBlocksPerHost: 0}
- apiVersion: v1
  kind: Node
  metadata:
    annotations: {node.alpha.kubernetes.io/ttl: "0"}
    labels: {kubernetes.io/hostname: kube-node-0, rack: "0"}
    name: kube-node-0
  spec: {podCIDR: 10.244.0.0/24}
  status: {capacity: {cpu: "2"}}
"""


def test_kubectl_list_of_crds_and_nodes_applies_as_v3(cli):
    result = cli("apply", "-f", "-", stdin=KUBECTL_LIST)
    assert result.code == 0, result.err
    pool = cli("get", "ippool", "rack-0-ippool", "-o", "wide").out
    assert "192.168.0.0/24" in pool and 'rack == "0"' in pool
    node = cli("get", "node", "kube-node-0", "-o", "yaml").out
    assert "rack: \"0\"" in node and "podCIDR" not in node and "node.alpha" not in node
    config = cli("ipam", "show", "--show-configuration").out
    assert "StrictAffinity" in config
    cover = cli("ipam", "explain", "--node", "kube-node-0")
    assert "rack-0-ippool" in cover.out


def test_calico_ipam_state_is_refused_and_nothing_written(cli, sqlite_url):
    assert cli("apply", "-f", "-", stdin=KUBECTL_LIST).code == 0
    before = sqlite_dump(sqlite_url)
    state = KUBECTL_LIST + """- apiVersion: crd.projectcalico.org/v1
  kind: IPAMBlock
  metadata: {name: 192-168-0-0-26}
  spec: {cidr: 192.168.0.0/26}
"""
    result = cli("apply", "-f", "-", stdin=state.replace("192.168.0.0/24", "192.168.9.0/24"))
    assert result.code == 2 and "IPAMBlock is Calico's IPAM state" in result.err
    assert sqlite_dump(sqlite_url) == before
    other = cli("apply", "-f", "-", stdin="apiVersion: crd.projectcalico.org/v1\nkind: FelixConfiguration\n"
                "metadata: {name: default}\nspec: {}\n")
    assert other.code == 2 and "FelixConfiguration is not a resource topoipam reads" in other.err
    assert sqlite_dump(sqlite_url) == before
