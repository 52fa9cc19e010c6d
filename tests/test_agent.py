"""The node agent on one machine: real agent processes, the installed plugin exec'd against their socket.

SQLite (the agent polls for changes) and a real single-member etcd (the agent
follows the watch). The cluster-scale and fault tests are in test_cluster.py.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time

import pytest

from agent_proc import AgentProc, exec_cni
from topoipam.agent.node import register_node
from topoipam.errors import ValidationError
from topoipam.ipam import IpamService
from topoipam.model.codec import decode_documents
from topoipam.resources import repo
from topoipam.resources.service import ResourceService
from topoipam.ipam.pool_blocks import PoolBlocks
from topoipam.store import open_store

POOLS = """
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: rack-0-ippool}
spec: {cidr: 10.0.0.0/24, nodeSelector: rack == "0", ipipMode: Always}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: rack-1-ippool}
spec: {cidr: 10.1.0.0/24, nodeSelector: rack == "1"}
"""


def create(store, text: str) -> None:
    ResourceService(store, PoolBlocks(store)).create(decode_documents(text, "test"))


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout}s")


def ipip_address(store, node: str) -> str:
    n = repo.get_node(store, node)
    return n.spec.bgp.ipv4_ipip_tunnel_addr if n and n.spec.bgp else ""


def ok(call) -> dict | None:
    assert call.returncode == 0, (call.stdout, call.stderr)
    return call.json


@pytest.fixture(params=["sqlite", "etcd"])
def datastore(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path}/agent.db"
    else:
        server = request.getfixturevalue("etcd_server")
        server.wipe()
        yield server.url()


@pytest.fixture
def agents(tmp_path):
    started: list[AgentProc] = []

    def start(url, node, labels=None, **kw) -> AgentProc:
        a = AgentProc(tmp_path, url, node, labels, **kw)
        started.append(a)
        return a.start()

    try:
        yield start
    finally:
        for a in started:
            a.kill()


def test_agent_serves_the_plugin_and_keeps_tunnel_addresses(datastore, agents):
    store = open_store(datastore)
    try:
        create(store, POOLS)
        agent = agents(datastore, "node-a", {"rack": "0"})
        assert stat.S_IMODE(os.stat(agent.socket).st_mode) == 0o600
        tunnel = wait_for(lambda: ipip_address(store, "node-a"), what="IPIP tunnel address")
        assert tunnel.startswith("10.0.0.")
        svc = IpamService(store)
        assert [str(i) for i in svc.ips_by_handle("ipip-tunnel-addr-node-a")] == [tunnel]

        result = ok(exec_cni("ADD", agent.socket, "c1"))
        address = result["ips"][0]["address"]
        assert address.startswith("10.0.0.") and address.endswith("/26") and not address.startswith(tunnel + "/")
        alloc = [a for a in svc.allocations() if a.handle == "net.c1:eth0"]
        assert len(alloc) == 1 and alloc[0].attrs["node"] == "node-a" and alloc[0].attrs["pod"] == "c1"
        assert ok(exec_cni("CHECK", agent.socket, "c1")) is None
        ok(exec_cni("STATUS", agent.socket, "c1"))
        ok(exec_cni("DEL", agent.socket, "c1"))
        ok(exec_cni("DEL", agent.socket, "c1"))  # idempotent
        assert not [a for a in svc.allocations() if a.handle == "net.c1:eth0"]

        # Relabel the node into rack 1: no pool with IPIP selects it any more, the address is released.
        ResourceService(store, PoolBlocks(store)).label("Node", "node-a", "rack", "1", overwrite=True)
        wait_for(lambda: not ipip_address(store, "node-a"), what="IPIP address cleared")
        assert not [a for a in svc.allocations() if a.handle == "ipip-tunnel-addr-node-a"]
        result = ok(exec_cni("ADD", agent.socket, "c2"))
        assert result["ips"][0]["address"].startswith("10.1.0.")  # the agent saw the new label

        assert agent.stop() == 0
        assert not os.path.exists(agent.socket)
        assert "stopped" in agent.log()
    finally:
        store.close()


def test_vxlan_address_follows_the_pool_mode(datastore, agents):
    store = open_store(datastore)
    try:
        create(store, POOLS)
        agents(datastore, "node-b", {"rack": "1"})
        svc = IpamService(store)
        time.sleep(0.5)
        assert not repo.get_node(store, "node-b").spec.ipv4_vxlan_tunnel_addr  # rack-1 pool has no encapsulation
        ResourceService(store, PoolBlocks(store)).patch("IPPool", "rack-1-ippool", json.dumps({"spec": {"vxlanMode": "CrossSubnet"}}))
        vxlan = wait_for(lambda: repo.get_node(store, "node-b").spec.ipv4_vxlan_tunnel_addr, what="VXLAN address")
        assert vxlan.startswith("10.1.0.")
        attrs = [a.attrs for a in svc.allocations() if a.handle == "vxlan-tunnel-addr-node-b"]
        assert attrs == [{"node": "node-b", "type": "vxlanTunnelAddress"}]
        ResourceService(store, PoolBlocks(store)).patch("IPPool", "rack-1-ippool", json.dumps({"spec": {"allowedUses": ["Workload"]}}))
        wait_for(lambda: not repo.get_node(store, "node-b").spec.ipv4_vxlan_tunnel_addr, what="VXLAN cleared")
        assert not [a for a in svc.allocations() if a.handle == "vxlan-tunnel-addr-node-b"]
    finally:
        store.close()


def test_a_restarted_agent_keeps_its_tunnel_address(tmp_path, agents):
    url = f"sqlite://{tmp_path}/keep.db"
    store = open_store(url)
    try:
        create(store, POOLS)
        first = agents(url, "node-c", {"rack": "0"})
        tunnel = wait_for(lambda: ipip_address(store, "node-c"))
        assert first.stop() == 0
        second = agents(url, "node-c")
        time.sleep(1.0)
        assert ipip_address(store, "node-c") == tunnel
        assert [str(i) for i in IpamService(store).ips_by_handle("ipip-tunnel-addr-node-c")] == [tunnel]
        assert second.stop() == 0
    finally:
        store.close()


def test_registration_sets_only_the_given_labels(tmp_path):
    store = open_store(f"sqlite://{tmp_path}/reg.db")
    try:
        create(store, """
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node-d, labels: {a: "1", b: "2"}}
spec: {bgp: {ipv4Address: 192.0.2.10/24}}
""")
        node, outcome = register_node(store, "node-d", {"b": "3", "c": "4"})
        assert outcome == "updated"
        stored = repo.get_node(store, "node-d")
        assert stored.labels == {"a": "1", "b": "3", "c": "4"}
        assert stored.spec.bgp.ipv4_address == "192.0.2.10/24"
        revision = store.get("/topoipam/v3/nodes/node-d").revision
        assert register_node(store, "node-d", {"c": "4"})[1] == "unchanged"
        assert store.get("/topoipam/v3/nodes/node-d").revision == revision  # nothing written
        assert register_node(store, "node-e", {})[1] == "created"
        with pytest.raises(ValidationError):
            register_node(store, "Not_A_Valid_Name", {})
    finally:
        store.close()


def test_bad_label_or_node_name_is_a_usage_error(tmp_path):
    import subprocess

    from agent_proc import TOPOIPAM

    proc = subprocess.run([str(TOPOIPAM), "--datastore", f"sqlite://{tmp_path}/x.db", "agent", "--node", "n",
                           "--label", "rack", "--socket", str(tmp_path / "s.sock")], capture_output=True, timeout=30)
    assert proc.returncode == 2
    assert b"label 'rack' must be key=value" in proc.stderr
    assert not os.path.exists(tmp_path / "s.sock")
    proc = subprocess.run([str(TOPOIPAM), "--datastore", f"sqlite://{tmp_path}/x.db", "agent", "--node", "Bad_Name",
                           "--socket", str(tmp_path / "s.sock")], capture_output=True, timeout=30)
    assert proc.returncode == 2 and b"Bad_Name" in proc.stderr and not os.path.exists(tmp_path / "s.sock")


def test_plugin_answers_11_when_the_named_agent_is_not_there(tmp_path):
    call = exec_cni("ADD", str(tmp_path / "nobody.sock"), "c9")
    assert call.returncode == 1
    err = call.json
    assert err["code"] == 11 and "cannot reach the topoipam agent" in err["msg"]


def test_a_stale_socket_is_replaced_and_a_live_one_refused(tmp_path, agents):
    url = f"sqlite://{tmp_path}/stale.db"
    path = str(tmp_path / "stale.sock")
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(path)
    leftover.close()  # a socket file nobody listens on, as a killed agent leaves behind
    first = agents(url, "node-f", socket_path=path)
    second = AgentProc(tmp_path, url, "node-g", socket_path=path).start(wait=False)
    try:
        assert second.proc.wait(timeout=30) == 2
        assert "another agent is serving" in second.log()
        store = open_store(url)
        try:
            create(store, POOLS.replace('rack == "0"', "all()"))
        finally:
            store.close()
        assert ok(exec_cni("ADD", path, "c1"))["ips"][0]["address"].startswith("10.0.0.")
    finally:
        second.kill()
    assert first.stop() == 0


def test_netconf_without_socket_uses_the_datastore_directly(tmp_path):
    url = f"sqlite://{tmp_path}/direct.db"
    store = open_store(url)
    try:
        create(store, POOLS.replace('rack == "0"', "all()"))
        register_node(store, "node-h", {})
        call = exec_cni("ADD", "", "c1", nodename="node-h", datastore=url)  # "" = never the agent
        assert ok(call)["ips"][0]["address"].startswith("10.0.0.")
    finally:
        store.close()


def test_garbage_on_the_socket_gets_no_answer_and_the_agent_carries_on(tmp_path, agents):
    url = f"sqlite://{tmp_path}/garbage.db"
    agent = agents(url, "node-i")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(15)
        s.connect(agent.socket)
        s.sendall(b"not json")
        s.shutdown(socket.SHUT_WR)
        assert s.recv(100) == b""
    assert "bad request" in agent.log()
    status = exec_cni("STATUS", agent.socket, "x")
    assert status.returncode == 1 and status.json["code"] == 50  # no pool yet: not ready, but answered
    assert agent.stop() == 0


def test_the_deploy_conflist_through_bridge_and_the_agent(tmp_path, agents):
    """deploy/cni/10-topoipam.conflist's bridge entry, exec'd as a runtime would, in namespaces the test owns."""
    from ipaddress import ip_interface, ip_network

    from netns import REPO, Netns, addresses, cni_bin_dir, cni_env, netns_unavailable_reason, run_plugin

    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    conflist = json.loads((REPO / "deploy" / "cni" / "10-topoipam.conflist").read_text())
    url = f"sqlite://{tmp_path}/deploy.db"
    store = open_store(url)
    try:
        pool = ip_network("10.0.0.0/24")
        gateways = "".join(f"\n    - {b[1]}/32" for b in pool.subnets(new_prefix=26))
        create(store, POOLS + f"""---
apiVersion: projectcalico.org/v3
kind: IPReservation
metadata: {{name: bridge-gateways}}
spec:
  reservedCIDRs:{gateways}
""")
    finally:
        store.close()
    agent = agents(url, "node-j", {"rack": "0"})
    conf = {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **conflist["plugins"][0]}
    assert conf["ipam"] == {"type": "topoipam-cni", "agent_socket": "/run/topoipam/agent.sock"}
    conf["ipam"]["agent_socket"] = agent.socket
    conf["bridge"] = f"tpi{os.getpid() % 100000}"
    conf["ipMasq"] = False  # would need iptables in the test's namespace; not what is tested here
    bin_dir = cni_bin_dir(tmp_path / "bin")
    with Netns() as ns:
        host = ns.add("host")
        pods = [ns.add("pod") for _ in range(3)]
        got = []
        for i, pod in enumerate(pods):
            env = cni_env("ADD", container_id=f"deploy{i}", netns=Netns.path(pod), path=str(bin_dir),
                          args="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p" + str(i))
            call = run_plugin(bin_dir / "bridge", env, conf, in_netns=host)
            assert call.returncode == 0, (call.stdout, call.stderr)
            got.append(ip_interface(addresses(pod, "eth0")[0]))
        assert len(set(got)) == 3 and all(a.ip in pool for a in got)
        gateway = ip_interface(f"{got[0].network[1]}/{got[0].network.prefixlen}")
        assert gateway not in got and str(gateway) in addresses(host, conf["bridge"])
        for i, pod in enumerate(pods):
            env = cni_env("DEL", container_id=f"deploy{i}", netns=Netns.path(pod), path=str(bin_dir))
            assert run_plugin(bin_dir / "bridge", env, conf, in_netns=host).returncode == 0
    store = open_store(url)
    try:
        assert [a.handle for a in IpamService(store).allocations()] == ["ipip-tunnel-addr-node-j"]
    finally:
        store.close()


def test_plugin_in_agent_mode_imports_no_datastore_code(tmp_path, agents):
    """Through the agent, an ADD loads no store, IPAM or model module at all (and no etcd/gRPC client)."""
    from netns import PLUGIN, cni_env
    from test_cni_lean import imported_modules, offenders

    url = f"sqlite://{tmp_path}/lean.db"
    store = open_store(url)
    try:
        create(store, POOLS.replace('rack == "0"', "all()"))
    finally:
        store.close()
    agent = agents(url, "node-k")
    conf = json.dumps({"cniVersion": "1.0.0", "name": "net", "type": "bridge",
                       "ipam": {"type": "topoipam-cni", "agent_socket": agent.socket}}).encode()
    seen, proc = imported_modules(cni_env("ADD", container_id="lean1", netns="/run/netns/x"), conf)
    assert proc.returncode == 0, proc.stdout
    assert b"10.0.0." in proc.stdout and PLUGIN.exists()
    assert offenders(seen) == []
    assert {m for m in seen if m.startswith("topoipam.")} <= {
        "topoipam.errors", "topoipam.cni", "topoipam.cni.main", "topoipam.cni.agent_client", "topoipam.cni.protocol",
        "topoipam.cni.wire"}


def test_topology_watch_reports_pools_config_and_own_node_changes(etcd_server):
    """On etcd the agent hears of pool and own-Node changes by watch events (it then drops the IPAM
    service's kept topology and checks the tunnel addresses again); other nodes are not its business."""
    from topoipam.agent.watch import TopologyWatch

    etcd_server.wipe()
    store = open_store(etcd_server.url())
    watch = TopologyWatch(store, "node-w")
    changes = []
    watch.add_listener(lambda: changes.append(1))
    try:
        assert watch.relevant("/topoipam/v3/ippools/p") and watch.relevant("/topoipam/v3/nodes/node-w")
        assert watch.relevant("/topoipam/v3/ipamconfigs/default") and watch.relevant("/topoipam/v3/ipreservations/r")
        assert not watch.relevant("/topoipam/v3/nodes/node-x") and not watch.relevant("/topoipam/v3/nodes/node-w2")
        watch.start()
        wait_for(lambda: changes, what="the first notification (the watch started)")
        create(store, POOLS)
        wait_for(lambda: len(changes) >= 3, what="two pool creations seen")
        seen = len(changes)
        register_node(store, "node-w", {"rack": "1"})
        wait_for(lambda: len(changes) > seen, what="own node registration seen")
        seen = len(changes)
        assert ResourceService(store, PoolBlocks(store)).delete([("IPPool", "rack-1-ippool")]) == [("IPPool", "rack-1-ippool", None)]
        wait_for(lambda: len(changes) > seen, what="pool deletion seen")
        assert watch.starts == 1 and watch.connected.is_set()
    finally:
        watch.stop()
        store.close()


def test_which_requests_go_to_the_agent(tmp_path, monkeypatch):
    """Named socket -> agent; none named -> the default socket if it exists; "" -> the datastore directly."""
    from topoipam.cni import agent_client

    default = tmp_path / "default.sock"
    monkeypatch.setattr(agent_client, "DEFAULT_SOCKET", str(default))  # never the machine's real /run path

    def conf(**ipam) -> bytes:
        return json.dumps({"cniVersion": "1.0.0", "name": "n", "ipam": {"type": "topoipam-cni", **ipam}}).encode()

    assert agent_client.agent_socket_for(conf(agent_socket="/x.sock")) == "/x.sock"
    assert agent_client.agent_socket_for(conf()) is None
    default.touch()
    assert agent_client.agent_socket_for(conf()) == str(default)
    assert agent_client.agent_socket_for(conf(agent_socket="")) is None
    # An undecodable config is not decoded on the way (that would cost every ADD the json import):
    # it goes where a config naming no socket goes, and the agent reports the decode error (code 6).
    assert agent_client.agent_socket_for(b"not json") == str(default)
    default.unlink()
    assert agent_client.agent_socket_for(b"not json") is None  # the direct path reports it
