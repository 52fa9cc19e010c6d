"""Many nodes and faults on real etcd (started here on loopback, stopped by pid).

* four agents for four nodes in two racks on one etcd: plugin ADDs through each
  socket land in the rack's pool; 8 processes x 500 assignments through the
  agents: no duplicate, every acknowledged address present, the check clean;
* a three-member cluster: the leader is killed during 2,000 assignments from
  four processes and restarted; without quorum the plugin gets code 11 at once;
* the agent survives etcd being away for 30 s;
* SIGTERM during load: every acknowledged assignment is in the datastore.

Every acknowledged assignment is written to a file the moment it is
acknowledged, so "acknowledged" means exactly what a runtime was told.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import time
from collections import Counter
from ipaddress import ip_address, ip_network

import pytest

from agent_proc import TOPOIPAM, AgentProc, count_acks, exec_cni, read_records, service_worker, socket_worker
from etcd_cluster import HAVE_ETCD, SKIP_REASON, EtcdCluster
from topoipam.ipam import IpamService
from topoipam.model.codec import decode_documents
from topoipam.resources.service import ResourceService
from topoipam.ipam.pool_blocks import PoolBlocks
from topoipam.store import open_store

pytestmark = [pytest.mark.slow, pytest.mark.etcd, pytest.mark.skipif(not HAVE_ETCD, reason=SKIP_REASON)]

RACK_POOLS = """
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: rack-0-ippool}
spec: {cidr: 10.0.0.0/16, nodeSelector: rack == "0", ipipMode: Always}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: rack-1-ippool}
spec: {cidr: 10.1.0.0/16, nodeSelector: rack == "1", vxlanMode: Always}
"""
RACK_NET = {"0": ip_network("10.0.0.0/16"), "1": ip_network("10.1.0.0/16")}
NODES = {"node-0": "0", "node-1": "0", "node-2": "1", "node-3": "1"}
SPAWN = multiprocessing.get_context("spawn")


def setup_pools(url: str, text: str = RACK_POOLS) -> None:
    with open_store(url) as store:
        ResourceService(store, PoolBlocks(store)).create(decode_documents(text, "test"))


def run_workers(target, arg_sets, timeout: float = 200.0) -> None:
    procs = [SPAWN.Process(target=target, args=args) for args in arg_sets]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(timeout)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)


def check_consistent(url: str, acks: list[dict]) -> dict[str, str]:
    """No address twice among the acknowledged, each present with its handle, the IPAM check clean."""
    ips = Counter(a["ip"] for a in acks)
    assert [ip for ip, n in ips.items() if n > 1] == []
    with open_store(url) as store:
        svc = IpamService(store)
        held = {str(a.ip.ip): a.handle for a in svc.allocations()}
        report = svc.check()
    missing = [a for a in acks if held.get(a["ip"]) != a["handle"]]
    assert missing == []
    assert report.ok, [f.detail for f in report.problems]
    return held


@pytest.fixture
def cleanup():
    things: list = []
    try:
        yield things.append
    finally:
        for thing in reversed(things):
            (thing.kill if isinstance(thing, AgentProc) else thing.stop)()


def etcd_with_pools(tmp_path, cleanup, size: int = 1) -> tuple[EtcdCluster, str]:
    """A real etcd cluster on loopback (``cleanup`` stops it) holding the rack pools: (cluster, url)."""
    cluster = EtcdCluster(tmp_path / "etcd", size=size)
    cleanup(cluster)
    cluster.start()
    url = cluster.url()
    setup_pools(url)
    return cluster, url


def start_agent(tmp_path, url: str, cleanup, node: str = "node-0", rack: str = "0") -> AgentProc:
    """Agent ``node`` labelled rack=``rack``, started and ready; ``cleanup`` kills it by pid."""
    agent = AgentProc(tmp_path, url, node, {"rack": rack})
    cleanup(agent)
    agent.start()
    return agent


def test_four_agents_two_racks_one_etcd(tmp_path, cleanup):
    _, url = etcd_with_pools(tmp_path, cleanup)
    agents = {node: start_agent(tmp_path, url, cleanup, node, rack) for node, rack in NODES.items()}

    for node, agent in agents.items():
        for i in range(3):
            call = exec_cni("ADD", agent.socket, f"{node}-pod{i}")
            assert call.returncode == 0, call.stdout
            address = ip_address(call.json["ips"][0]["address"].split("/")[0])
            assert address in RACK_NET[NODES[node]], (node, address)

    files = [str(tmp_path / f"w{i}.jsonl") for i in range(8)]
    sockets = [a.socket for a in agents.values()]
    run_workers(socket_worker, [(sockets[i % 4:] + sockets[:i % 4], 500, files[i], f"w{i}") for i in range(8)])
    acks, errors = read_records(files)
    assert len(acks) == 8 * 500, errors[:5]
    held = check_consistent(url, acks)
    by_socket = Counter(a["socket"] for a in acks)
    assert len(by_socket) == 4 and min(by_socket.values()) > 800  # spread over the four nodes
    node_of_socket = {a.socket: n for n, a in agents.items()}
    for a in acks:
        assert ip_address(a["ip"]) in RACK_NET[NODES[node_of_socket[a["socket"]]]]
    check = subprocess.run([str(TOPOIPAM), "--datastore", url, "ipam", "check"], capture_output=True, timeout=120)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()  # `ipam check` itself: clean
    tunnels = {h: ip for ip, h in held.items() if "tunnel-addr" in h}
    assert set(tunnels) == {"ipip-tunnel-addr-node-0", "ipip-tunnel-addr-node-1",
                            "vxlan-tunnel-addr-node-2", "vxlan-tunnel-addr-node-3"}
    for agent in agents.values():
        assert agent.stop() == 0


def test_leader_killed_during_load_then_no_quorum_gives_code_11(tmp_path, cleanup):
    cluster, url = etcd_with_pools(tmp_path, cleanup, size=3)
    agent = start_agent(tmp_path, url, cleanup)
    with open_store(url) as store:
        for node, rack in NODES.items():
            from topoipam.agent.node import register_node
            register_node(store, node, {"rack": rack})

    files = [str(tmp_path / f"s{i}.jsonl") for i in range(4)]
    nodes = list(NODES)
    procs = [SPAWN.Process(target=service_worker, args=(url, nodes[i:] + nodes[:i], 500, files[i], f"s{i}"))
             for i in range(4)]
    for p in procs:
        p.start()
    try:
        while count_acks(files) < 300 and any(p.is_alive() for p in procs):
            time.sleep(0.02)
        leader = cluster.leader()
        cluster.kill(leader)
        killed_at = time.time()
        cluster.leader()  # a new leader among the other two
        time.sleep(1.0)
        cluster.restart(leader)
        for p in procs:
            p.join(200)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    acks, errors = read_records(files)
    assert len(acks) == 2000, errors[:5]
    assert any(a["t"] > killed_at + 0.5 for a in acks)  # assignments resumed after the election
    check_consistent(url, acks)

    # No quorum: two of three members gone. The plugin, through the agent, is told to try again later.
    survivors = cluster.alive()
    for i in survivors[:2]:
        cluster.kill(i)
    call = exec_cni("ADD", agent.socket, "no-quorum", timeout=60)  # answered, not hung: a hang raises here
    assert call.returncode == 1 and call.json["code"] == 11, call.stdout
    for i in survivors[:2]:
        cluster.restart(i)
    call = retry_add(agent.socket, "after-quorum")
    assert ip_address(call.json["ips"][0]["address"].split("/")[0]) in RACK_NET["0"]
    with open_store(url) as store:  # the refused ADD left nothing behind once the quorum was back
        handles = {a.handle for a in IpamService(store).allocations()}
    assert "net.after-quorum:eth0" in handles and "net.no-quorum:eth0" not in handles
    assert agent.stop() == 0


def retry_add(socket_path: str, container: str, timeout: float = 30.0):
    """ADD until it succeeds (a runtime retries after code 11, running DEL in between)."""
    deadline = time.monotonic() + timeout
    while True:
        call = exec_cni("ADD", socket_path, container)
        if call.returncode == 0 or time.monotonic() > deadline:
            assert call.returncode == 0, call.stdout
            return call
        assert call.json["code"] == 11, call.stdout
        exec_cni("DEL", socket_path, container)
        time.sleep(0.2)


def test_agent_survives_etcd_gone_for_30_seconds(tmp_path, cleanup):
    cluster, url = etcd_with_pools(tmp_path, cleanup)
    agent = start_agent(tmp_path, url, cleanup)
    assert exec_cni("ADD", agent.socket, "before").returncode == 0
    cluster.kill(0)
    call = exec_cni("ADD", agent.socket, "while-away", timeout=30)
    assert call.returncode == 1 and call.json["code"] == 11, call.stdout
    time.sleep(30)
    assert agent.proc.poll() is None
    call = exec_cni("ADD", agent.socket, "while-away-2", timeout=30)
    assert call.returncode == 1 and call.json["code"] == 11
    cluster.restart(0)
    call = retry_add(agent.socket, "after")
    assert ip_address(call.json["ips"][0]["address"].split("/")[0]) in RACK_NET["0"]
    deadline = time.monotonic() + 15
    while "topology reloaded" not in agent.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "topology reloaded" in agent.log()  # the watch came back and re-read the topology
    with open_store(url) as store:
        handles = {a.handle for a in IpamService(store).allocations()}
    assert {"net.before:eth0", "net.after:eth0", "ipip-tunnel-addr-node-0"} <= handles
    assert agent.stop() == 0


def test_sigterm_during_load_loses_no_acknowledged_assignment(tmp_path, cleanup):
    _, url = etcd_with_pools(tmp_path, cleanup)
    agent = start_agent(tmp_path, url, cleanup)
    files = [str(tmp_path / f"t{i}.jsonl") for i in range(4)]
    procs = [SPAWN.Process(target=socket_worker, args=([agent.socket], 100_000, files[i], f"t{i}", 20.0))
             for i in range(4)]
    for p in procs:
        p.start()
    try:
        while count_acks(files) < 200:
            time.sleep(0.01)
        assert agent.stop() == 0  # SIGTERM: stops accepting, finishes in-flight, removes the socket
        assert not os.path.exists(agent.socket)
        time.sleep(0.5)
    finally:
        for p in procs:
            p.kill()
            p.join(5)
    acks, errors = read_records(files)
    assert len(acks) >= 200
    assert errors and all(e["error"] == "unavailable" for e in errors)  # refused after shutdown, not half-served
    check_consistent(url, acks)
