"""The seed tutorial through the runtime path: the reference ``bridge`` plugin delegating to topoipam-cni.

Four nodes in two racks, labelled and given rack pools with the topoipam CLI
(as the tutorial does with calicoctl). A "router" network namespace made by the
test holds two bridges standing for the racks; every pod is a namespace of its
own. Debian's ``/usr/lib/cni/bridge`` runs inside the router namespace, finds
``topoipam-cni`` on ``CNI_PATH`` and configures ``eth0`` in the pod namespace
with the address topoipam returned. Nothing is created in, or sent to, the
machine's own network: every namespace is the test's and is deleted in finally.
"""

from __future__ import annotations

import hashlib
import ipaddress
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from netns import (Netns, VENV_BIN, addresses, cni_bin_dir, cni_env, link_exists, netns_unavailable_reason,
                   run_plugin)
from seed_yaml import NODES_YAML, RACK_POOLS
from topoipam.ipam import IpamService
from topoipam.store import open_store

REASON = netns_unavailable_reason()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

NODES = {"kube-node-0": "0", "kube-node-1": "0", "kube-node-2": "1", "kube-node-3": "1"}
POOLS = {"0": ipaddress.ip_network("192.168.0.0/24"), "1": ipaddress.ip_network("192.168.1.0/24")}
NETWORK = "k8s-pod-network"


def topoipam(url, *args, stdin=None):
    return subprocess.run([str(VENV_BIN / "topoipam"), "--datastore", url, *args], input=stdin,
                          capture_output=True, text=True, check=True).stdout


@pytest.fixture
def cluster(tmp_path):
    """The tutorial's datastore: nodes labelled rack=0/1, one pool per rack (via the CLI)."""
    url = f"sqlite://{tmp_path}/cluster.db"
    topoipam(url, "create", "-f", "-", stdin=NODES_YAML)
    for node, rack in NODES.items():
        topoipam(url, "label", "nodes", node, f"rack={rack}")
    topoipam(url, "create", "-f", "-", stdin=RACK_POOLS)
    assert "rack == \"1\"" in topoipam(url, "get", "ippool", "-o", "wide")
    store = open_store(url)
    try:
        yield url, IpamService(store)
    finally:
        store.close()


@pytest.fixture
def spaces():
    ns = Netns()
    try:
        yield ns
    finally:
        ns.close()


def netconf(url, node, version="1.0.0"):
    return {"cniVersion": version, "name": NETWORK, "type": "bridge", "bridge": f"rack{NODES[node]}",
            "ipam": {"type": "topoipam-cni", "nodename": node, "datastore": url}}


def container_id(pod: str) -> str:
    return hashlib.sha256(pod.encode()).hexdigest()  # 64 hex digits, as containerd and podman use


def bridge(command, bin_dir, router, pod_ns, pod, conf):
    env = cni_env(command, container_id=container_id(pod), netns=Netns.path(pod_ns), ifname="eth0",
                  args=f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}", path=str(bin_dir))
    return run_plugin(bin_dir / "bridge", env, conf, in_netns=router)


def succeeded(call):
    assert call.returncode == 0, (call.stdout, call.stderr)
    return call.json


def test_seed_tutorial_through_bridge(tmp_path, cluster, spaces):
    url, svc = cluster
    bin_dir = cni_bin_dir(tmp_path / "bin")
    router = spaces.add("router")
    pods = {f"nginx-{i}": node for i, node in enumerate(["kube-node-0", "kube-node-1", "kube-node-2",
                                                           "kube-node-3", "kube-node-0"])}
    pod_ns, results = {}, {}
    for pod, node in pods.items():
        pod_ns[pod] = spaces.add("pod")
        results[pod] = succeeded(bridge("ADD", bin_dir, router, pod_ns[pod], pod, netconf(url, node)))
        # bridge 1.1.1's CHECK compares the bridge's MAC with prevResult, and a Linux
        # bridge's MAC changes as ports join: so CHECK right after each ADD.
        conf = dict(netconf(url, node), prevResult=results[pod])
        assert succeeded(bridge("CHECK", bin_dir, router, pod_ns[pod], pod, conf)) is None

    for pod, node in pods.items():
        [ip] = results[pod]["ips"]
        address = ipaddress.ip_interface(ip["address"])
        assert addresses(pod_ns[pod], "eth0") == [str(address)]  # what bridge configured = what topoipam said
        assert address.ip in POOLS[NODES[node]] and address.network.prefixlen == 26
        held = svc.ips_by_handle(f"{NETWORK}.{container_id(pod)}:eth0")
        assert [str(h).split("/")[0] for h in held] == [str(address.ip)]
    by_handle = {a.handle: a for a in svc.allocations()}
    assert len(by_handle) == 5
    for pod, node in pods.items():
        attrs = by_handle[f"{NETWORK}.{container_id(pod)}:eth0"].attrs
        assert (attrs["node"], attrs["pod"], attrs["namespace"], attrs["interface"]) == (node, pod, "default", "eth0")
    assert len({str(a.ip) for a in by_handle.values()}) == 5

    for pod, node in pods.items():  # and topoipam's own CHECK for every pod, once all are up
        conf = dict(netconf(url, node), prevResult=results[pod])
        env = cni_env("CHECK", container_id=container_id(pod), netns=Netns.path(pod_ns[pod]), path=str(bin_dir))
        assert succeeded(run_plugin(bin_dir / "topoipam-cni", env, conf)) is None

    for pod, node in pods.items():
        conf = dict(netconf(url, node), prevResult=results[pod])
        succeeded(bridge("DEL", bin_dir, router, pod_ns[pod], pod, conf))
        assert not link_exists(pod_ns[pod], "eth0")
    assert list(svc.allocations()) == []
    for pod, node in pods.items():  # DEL again: success, nothing to do
        succeeded(bridge("DEL", bin_dir, router, pod_ns[pod], pod, netconf(url, node)))


def test_sixteen_parallel_adds_get_distinct_addresses(tmp_path, cluster, spaces):
    url, svc = cluster
    bin_dir = cni_bin_dir(tmp_path / "bin")
    router = spaces.add("router")
    jobs = [(f"web-{i}", list(NODES)[i % 4], spaces.add("pod")) for i in range(16)]

    def add(job):
        pod, node, ns = job
        return bridge("ADD", bin_dir, router, ns, pod, netconf(url, node))

    with ThreadPoolExecutor(max_workers=16) as pool:
        calls = list(pool.map(add, jobs))
    got = {}
    for (pod, node, ns), call in zip(jobs, calls):
        [ip] = succeeded(call)["ips"]
        address = ipaddress.ip_interface(ip["address"])
        assert address.ip in POOLS[NODES[node]]
        assert addresses(ns, "eth0") == [str(address)]
        got[pod] = address.ip
    assert len(set(got.values())) == 16
    assert sorted(str(a.ip.ip) for a in svc.allocations()) == sorted(map(str, got.values()))

    with ThreadPoolExecutor(max_workers=16) as pool:
        dels = list(pool.map(lambda job: bridge("DEL", bin_dir, router, job[2], job[0], netconf(url, job[1])), jobs))
    for call in dels:
        succeeded(call)
    assert list(svc.allocations()) == []


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0"])
def test_bridge_with_older_versions(tmp_path, cluster, spaces, version):
    url, svc = cluster
    bin_dir = cni_bin_dir(tmp_path / "bin")
    router, ns = spaces.add("router"), spaces.add("pod")
    conf = netconf(url, "kube-node-2", version)
    res = succeeded(bridge("ADD", bin_dir, router, ns, "old", conf))
    assert res["cniVersion"] == version and res["ips"][0]["version"] == "4"
    assert addresses(ns, "eth0") == [res["ips"][0]["address"]]
    if version == "0.4.0":
        assert succeeded(bridge("CHECK", bin_dir, router, ns, "old", dict(conf, prevResult=res))) is None
    succeeded(bridge("DEL", bin_dir, router, ns, "old", conf))
    assert list(svc.allocations()) == []


def test_failed_add_leaves_nothing_behind(tmp_path, cluster, spaces):
    """A node no pool selects: bridge reports topoipam's 101 and no address is held."""
    url, svc = cluster
    topoipam(url, "create", "-f", "-", stdin="apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: edge-9}")
    bin_dir = cni_bin_dir(tmp_path / "bin")
    router, ns = spaces.add("router"), spaces.add("pod")
    conf = dict(netconf(url, "kube-node-0"))
    conf["ipam"] = dict(conf["ipam"], nodename="edge-9")
    call = bridge("ADD", bin_dir, router, ns, "stray", conf)
    assert call.returncode != 0 and call.json["code"] == 101 and "edge-9" in call.json["msg"]
    assert list(svc.allocations()) == []
    succeeded(bridge("DEL", bin_dir, router, ns, "stray", conf))  # the runtime's DEL after a failed ADD
