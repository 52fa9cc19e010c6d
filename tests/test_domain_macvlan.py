"""Underlay: the reference ``macvlan`` plugin with topoipam-cni as its IPAM, one rack's subnet on one parent.

A "host" network namespace made by the test holds an interface ``rack0`` (one end of a veth pair
of its own) standing for the rack's VLAN. Each container is a namespace of its own, added with a different ``nodename`` (three
nodes of rack 0): with the pool's affinity label ``rack`` they all get addresses of the rack's
block, so they share one subnet on one L2 segment and reach each other directly (ping only between
the test's namespaces). Which address in the subnet each gets is not asserted (the plugin may skip
network, broadcast and gateway addresses under L2 main plugins).
"""

from __future__ import annotations

import hashlib
import ipaddress
import subprocess

import pytest

from netns import IP, Netns, addresses, cni_bin_dir, cni_env, netns_unavailable_reason, run_plugin
from test_cni_netns import spaces, topoipam  # noqa: F401 (spaces: the namespaces fixture)
from topoipam.ipam import IpamService
from topoipam.store import open_store

REASON = netns_unavailable_reason()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

RACK_NET = ipaddress.ip_network("10.20.0.0/24")
NODES = ["rack0-a", "rack0-b", "rack0-c"]
NETWORK = "rack-underlay"
BUSYBOX = "/usr/bin/busybox"


@pytest.fixture
def rack(tmp_path):
    url = f"sqlite://{tmp_path}/underlay.db"
    docs = "".join(f"---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {n}\n"
                   f"  labels:\n    rack: \"0\"\n" for n in NODES)
    topoipam(url, "create", "-f", "-", stdin=docs)
    topoipam(url, "create", "-f", "-", stdin=(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: rack-0-underlay\n  annotations:\n"
        f"    topoipam.io/affinity-label: rack\nspec:\n  cidr: {RACK_NET}\n  blockSize: 26\n"
        "  nodeSelector: rack == \"0\"\n"))
    return url


def conf(url, node):
    return {"cniVersion": "1.0.0", "name": NETWORK, "type": "macvlan", "master": "rack0", "mode": "bridge",
            "ipam": {"type": "topoipam-cni", "nodename": node, "datastore": url, "agent_socket": ""}}


def macvlan(command, bin_dir, host, pod_ns, pod, netconf):
    env = cni_env(command, container_id=hashlib.sha256(pod.encode()).hexdigest(), netns=Netns.path(pod_ns),
                  ifname="eth0", args=f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}",
                  path=str(bin_dir))
    call = run_plugin(bin_dir / "macvlan", env, netconf, in_netns=host)
    assert call.returncode == 0, (call.stdout, call.stderr)
    return call.json


def ping(from_ns, address) -> subprocess.CompletedProcess:
    return subprocess.run([IP, "netns", "exec", from_ns, BUSYBOX, "ping", "-c", "1", "-W", "2", str(address)],
                          capture_output=True, text=True, timeout=30)


def test_containers_on_nodes_of_one_rack_share_its_subnet_and_reach_each_other(tmp_path, rack, spaces):
    bin_dir = cni_bin_dir(tmp_path / "bin")
    host = spaces.add("host")
    # The rack's segment: a veth pair inside the host namespace (this kernel has no dummy module);
    # macvlan in bridge mode switches between its interfaces on the same parent.
    subprocess.run([IP, "-n", host, "link", "add", "rack0", "type", "veth", "peer", "name", "rack0-peer"],
                   check=True, capture_output=True)
    for link in ("rack0", "rack0-peer"):
        subprocess.run([IP, "-n", host, "link", "set", link, "up"], check=True, capture_output=True)
    pods = {}
    for i, node in enumerate(NODES):
        pod, ns = f"app-{i}", spaces.add("pod")
        result = macvlan("ADD", bin_dir, host, ns, pod, conf(rack, node))
        [ip] = result["ips"]
        pods[pod] = (node, ns, ipaddress.ip_interface(ip["address"]))
    subnets = {iface.network for _, _, iface in pods.values()}
    assert len(subnets) == 1  # one block for the rack: one subnet, whichever node the container is on
    [subnet] = subnets
    assert subnet.subnet_of(RACK_NET) and subnet.prefixlen == 26
    assert len({iface.ip for _, _, iface in pods.values()}) == len(NODES)
    for node, ns, iface in pods.values():
        assert addresses(ns, "eth0") == [str(iface)]  # what macvlan configured = what topoipam returned
    store = open_store(rack)
    try:
        svc = IpamService(store)
        assert [(b.holder.display, b.in_use) for b in svc.block_usage()] == [("rack=0", len(NODES))]
        assert {a.attrs["node"] for a in svc.allocations()} == set(NODES)
    finally:
        store.close()
    names = list(pods)
    for a in names:  # every container reaches every other one over the rack's segment
        for b in names:
            if a != b:
                r = ping(pods[a][1], pods[b][2].ip)
                assert r.returncode == 0, (a, b, r.stdout, r.stderr)
    for pod, (node, ns, _) in pods.items():
        macvlan("DEL", bin_dir, host, ns, pod, conf(rack, node))
    store = open_store(rack)
    try:
        assert list(IpamService(store).allocations()) == []
    finally:
        store.close()
