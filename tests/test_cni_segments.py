"""Gateways and unusable addresses under the main plugins, in network namespaces the test creates.

* ``deploy/cni/10-topoipam.conflist`` exactly as shipped (bridge + portmap, through the agent at
  ``/run/topoipam/agent.sock``), run plugin by plugin as a runtime runs a conflist: the only thing
  the test arranges is where that socket path leads (a private mount namespace binds a directory
  of the test's over ``/run/topoipam``, so the machine's own path is never used).
* Debian's ``ptp`` with the default ``ipam`` settings (routed: every address usable, gateway
  169.254.1.1 on the host's veth).

Both ping from one pod's namespace to another's; nothing else is sent anywhere.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess

import pytest

from agent_proc import AgentProc
from netns import IP, REPO, Netns, addresses, cni_bin_dir, cni_env, netns_unavailable_reason, run_plugin, PluginCall
from topoipam.ipam import IpamService
from topoipam.model.codec import decode_documents
from topoipam.resources.service import ResourceService
from topoipam.ipam.pool_blocks import PoolBlocks
from topoipam.store import open_store

REASON = netns_unavailable_reason()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(REASON is not None, reason=REASON or "")]
CONFLIST = REPO / "deploy" / "cni" / "10-topoipam.conflist"
PTP_CONFLIST = REPO / "deploy" / "cni" / "10-topoipam-ptp.conflist"


def default_gateway(netns: str, family: str = "-4") -> str | None:
    """The next hop of the default route inside ``netns`` (None: no default route)."""
    out = subprocess.run([IP, "-n", netns, family, "-j", "route", "show", "default"], check=True,
                         capture_output=True, text=True).stdout
    routes = json.loads(out or "[]")
    return routes[0].get("gateway") if routes else None
SOCKET_DIR = "/run/topoipam"
POOLS = """
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: rack-0-ippool}
spec: {cidr: 10.0.0.0/24, nodeSelector: rack == "0"}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: rack-0-v6}
spec: {cidr: "fd00:0:0:7::/120", nodeSelector: rack == "0"}
"""
POOL = ipaddress.ip_network("10.0.0.0/24")


def datastore(tmp_path, node: str | None = None) -> str:
    url = f"sqlite://{tmp_path}/segments.db"
    store = open_store(url)
    try:
        nodes = f"""---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {{name: {node}, labels: {{rack: "0"}}}}
""" if node else ""
        ResourceService(store, PoolBlocks(store)).create(decode_documents(POOLS + nodes, "test"))
    finally:
        store.close()
    return url


def ping(src_ns: str, address) -> subprocess.CompletedProcess:
    return subprocess.run([IP, "netns", "exec", src_ns, "busybox", "ping", "-c", "1", "-W", "5", str(address)],
                          capture_output=True, text=True, timeout=30)


def run_in_private_run(socket_dir, plugin, env, conf, host) -> PluginCall:
    """Exec ``plugin`` in ``host`` as ``ip netns exec`` does, in a mount namespace of its own in which
    ``/run/topoipam`` is the test's ``socket_dir``."""
    script = 'mount --bind "$1" /run/topoipam && shift && exec "$@"'
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(socket_dir),
           IP, "netns", "exec", host, str(plugin)]
    proc = subprocess.run(cmd, input=json.dumps(conf).encode(), env=env, capture_output=True, timeout=60)
    return PluginCall(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def conflist_add(conflist, bin_dir, env, run) -> dict:
    """A runtime's ADD of a conflist: each plugin in order, given the previous plugin's result."""
    result = None
    for plugin in conflist["plugins"]:
        conf = {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **plugin}
        if result is not None:
            conf["prevResult"] = result
        call = run(bin_dir / plugin["type"], env, conf)
        assert call.returncode == 0, (plugin["type"], call.stdout, call.stderr)
        result = call.json
    return result


def conflist_del(conflist, bin_dir, env, run, result) -> None:
    """A runtime's DEL: the plugins in reverse order, each given the cached result."""
    for plugin in reversed(conflist["plugins"]):
        conf = {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **plugin, "prevResult": result}
        call = run(bin_dir / plugin["type"], env, conf)
        assert call.returncode == 0, (plugin["type"], call.stdout, call.stderr)


@pytest.fixture
def socket_dir(tmp_path):
    """A directory of the test's to stand for /run/topoipam (the mount point is made if missing)."""
    made = not os.path.isdir(SOCKET_DIR)
    os.makedirs(SOCKET_DIR, exist_ok=True)
    path = tmp_path / "run-topoipam"
    path.mkdir()
    try:
        yield path
    finally:
        if made:
            try:
                os.rmdir(SOCKET_DIR)
            except OSError:
                pass  # another test's agent directory in the meantime: leave it


@pytest.mark.parametrize("shipped", [CONFLIST, PTP_CONFLIST], ids=["bridge", "ptp"])
def test_the_shipped_conflist_as_shipped_through_the_agent(tmp_path, socket_dir, shipped):
    conflist = json.loads(shipped.read_text())
    url = datastore(tmp_path)
    bin_dir = cni_bin_dir(tmp_path / "bin")
    agent = AgentProc(tmp_path, url, "node-c", {"rack": "0"}, socket_path=str(socket_dir / "agent.sock"))
    ns = Netns()
    try:
        agent.start()
        host = ns.add("host")
        pods = [ns.add("pod") for _ in range(3)]
        run = lambda plugin, env, conf: run_in_private_run(socket_dir, plugin, env, conf, host)  # noqa: E731
        results = []
        for i, pod in enumerate(pods):
            env = cni_env("ADD", container_id=f"shipped{i}", netns=Netns.path(pod), path=str(bin_dir),
                          args=f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p{i}")
            results.append(conflist_add(conflist, bin_dir, env, run))
        got = [ipaddress.ip_interface(addresses(pod, "eth0")[0]) for pod in pods]
        assert len(set(got)) == 3 and all(a.ip in POOL for a in got)
        main_plugin = conflist["plugins"][0]
        for result, address in zip(results, got):
            [ip] = [e for e in result["ips"] if e["address"] == str(address)]
            net = address.network
            assert ip["gateway"] == str(net.network_address + 1)  # the block's first usable address
            assert address.ip not in (net.network_address, net.network_address + 1, net.broadcast_address)
            if main_plugin["type"] == "bridge":
                assert f"{ip['gateway']}/{net.prefixlen}" in addresses(host, main_plugin["bridge"])
        for pod, result in zip(pods, results):  # both give the pod a default route via that gateway
            assert default_gateway(pod) == result["ips"][0]["gateway"]
        assert ping(pods[0], got[1].ip).returncode == 0
        assert ping(pods[2], got[0].ip).returncode == 0
        for i, (pod, result) in enumerate(zip(pods, results)):
            env = cni_env("DEL", container_id=f"shipped{i}", netns=Netns.path(pod), path=str(bin_dir))
            conflist_del(conflist, bin_dir, env, run, result)
        store = open_store(url)
        try:
            assert list(IpamService(store).allocations()) == []
        finally:
            store.close()
    finally:
        ns.close()
        agent.kill()


@pytest.mark.parametrize("dual", [False, True], ids=["ipv4", "dual-stack"])
def test_ptp_with_the_default_netconf_routes_between_pods(tmp_path, dual):
    url = datastore(tmp_path, node="node-p")
    bin_dir = cni_bin_dir(tmp_path / "bin")
    conf = {"cniVersion": "1.0.0", "name": "ptp-net", "type": "ptp",
            "ipam": {"type": "topoipam-cni", "nodename": "node-p", "datastore": url,
                     **({"assign_ipv6": True} if dual else {})}}
    ns = Netns()
    try:
        host = ns.add("host")
        pods = [ns.add("pod") for _ in range(2)]
        got = []
        for i, pod in enumerate(pods):
            env = cni_env("ADD", container_id=f"ptp{i}", netns=Netns.path(pod), path=str(bin_dir))
            call = run_plugin(bin_dir / "ptp", env, conf, in_netns=host)
            assert call.returncode == 0, (call.stdout, call.stderr)
            ips = call.json["ips"]
            assert [e["gateway"] for e in ips] == ["169.254.1.1", "fe80::1"][:len(ips)]
            got.append([ipaddress.ip_interface(e["address"]) for e in ips])
        assert [len(g) for g in got] == [2 if dual else 1] * 2
        for a, b in zip(got[0], got[1]):  # routed: every address usable, the network address first (Calico)
            assert a.ip == a.network.network_address and b.ip == a.ip + 1
            assert ping(pods[0], b.ip).returncode == 0, ping(pods[0], b.ip)
            assert ping(pods[1], a.ip).returncode == 0
        for i, pod in enumerate(pods):
            env = cni_env("DEL", container_id=f"ptp{i}", netns=Netns.path(pod), path=str(bin_dir))
            call = run_plugin(bin_dir / "ptp", env, conf, in_netns=host)
            assert call.returncode == 0, (call.stdout, call.stderr)
    finally:
        ns.close()
