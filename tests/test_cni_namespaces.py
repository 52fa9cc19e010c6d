"""Pools with a ``namespaceSelector`` serve real pods: the plugin resolves the pod's namespace labels.

A namespace's labels are ``kubernetes.io/metadata.name=<namespace>`` (every
Kubernetes namespace carries it) plus ``spec.labelsToApply`` of the Profile
``kns.<namespace>`` (Calico's etcd-mode representation of a namespace). The
exec'd plugin on SQLite and the agent on a real etcd both resolve them from
``K8S_POD_NAMESPACE``; ``ipam explain --namespace`` reports the same choice.
"""

from __future__ import annotations

import ipaddress
import json

import pytest

from agent_proc import AgentProc, exec_cni
from netns import PLUGIN, VENV_BIN, cni_env, run_plugin
from test_cni_plugin import write_resources as create
from topoipam.ipam import IpamService
from topoipam.model.codec import decode_documents
from topoipam.resources.service import ResourceService
from topoipam.ipam.pool_blocks import PoolBlocks
from topoipam.store import open_store
from topoipam.resources import repo

POOLS = """
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node-a}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: gold}
spec: {cidr: 10.1.0.0/24, namespaceSelector: tier == "gold", allowedUses: [Workload]}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: kube-system-only}
spec: {cidr: 10.2.0.0/24, namespaceSelector: kubernetes.io/metadata.name == "kube-system", allowedUses: [Workload]}
"""
PROFILE = """
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: kns.team-a}
spec: {labelsToApply: {tier: gold}}
"""
GOLD = ipaddress.ip_network("10.1.0.0/24")
KUBE_SYSTEM = ipaddress.ip_network("10.2.0.0/24")


def address(call) -> ipaddress.IPv4Address:
    assert call.returncode == 0, (call.stdout, call.stderr)
    return ipaddress.ip_interface(call.json["ips"][0]["address"]).ip


def direct_add(url: str, container: str, namespace: str):
    conf = {"cniVersion": "1.0.0", "name": "net", "type": "ptp",
            "ipam": {"type": "topoipam-cni", "nodename": "node-a", "datastore": url, "agent_socket": ""}}
    env = cni_env("ADD", container_id=container, netns=f"/run/netns/{container}", path=str(VENV_BIN),
                  args=f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={container}")
    return run_plugin(PLUGIN, env, conf)


def test_namespace_labels_are_the_name_label_and_the_profile(tmp_path):
    url = f"sqlite://{tmp_path}/ns.db"
    create(url, POOLS)
    store = open_store(url)
    try:
        assert repo.namespace_labels(store, "team-a") == {"kubernetes.io/metadata.name": "team-a"}
        ResourceService(store, PoolBlocks(store)).create(decode_documents(
            PROFILE.replace("{tier: gold}", '{tier: gold, pcns.env: prod, kubernetes.io/metadata.name: other}'),
            "test"))
        # Calico's Kubernetes form (pcns.<key>) counts as the key; the name label cannot be overridden.
        assert repo.namespace_labels(store, "team-a") == {"tier": "gold", "env": "prod",
                                                          "kubernetes.io/metadata.name": "team-a"}
    finally:
        store.close()


def test_exec_plugin_serves_namespaced_pools_on_sqlite(tmp_path):
    url = f"sqlite://{tmp_path}/ns.db"
    create(url, POOLS)
    assert address(direct_add(url, "sys1", "kube-system")) in KUBE_SYSTEM
    refused = direct_add(url, "a1", "team-a")  # no Profile yet: only the name label, no pool matches
    assert refused.returncode == 1 and refused.json["code"] == 101, refused.stdout
    create(url, PROFILE)
    assert address(direct_add(url, "a2", "team-a")) in GOLD
    no_namespace = direct_add(url, "n1", "")
    assert no_namespace.returncode == 1 and no_namespace.json["code"] == 101


def test_agent_on_etcd_serves_namespaced_pools(tmp_path, etcd_server):
    etcd_server.wipe()
    url = etcd_server.url()
    create(url, POOLS + "---" + PROFILE)
    agent = AgentProc(tmp_path, url, "node-a")
    try:
        agent.start()
        call = exec_cni("ADD", agent.socket, "g1")  # K8S_POD_NAMESPACE=default: no pool for it
        assert call.returncode == 1 and call.json["code"] == 101, call.stdout
        env = cni_env("ADD", container_id="g2", netns="/run/netns/g2",
                      args="IgnoreUnknown=1;K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=g2")
        conf = {"cniVersion": "1.0.0", "name": "net", "type": "ptp",
                "ipam": {"type": "topoipam-cni", "agent_socket": agent.socket}}
        assert address(run_plugin(PLUGIN, env, conf)) in GOLD
        store = open_store(url)
        try:
            [alloc] = [a for a in IpamService(store).allocations() if a.handle == "net.g2:eth0"]
            assert alloc.attrs["namespace"] == "team-a"
        finally:
            store.close()
    finally:
        agent.stop()


@pytest.mark.parametrize("namespace, pool", [("team-a", "gold"), ("kube-system", "kube-system-only")])
def test_explain_resolves_namespace_labels_the_same_way(cli, sqlite_url, namespace, pool):
    create(sqlite_url, POOLS + "---" + PROFILE)
    res = cli("ipam", "explain", "--node", "node-a", "--namespace", namespace, "-o", "json")
    assert res.code == 0, res.out + res.err
    [family] = json.loads(res.out)
    assert [t["pool"] for t in family["tried"]] == [pool]
