"""ADD and DEL through the agent, whose one IPAM service keeps topology and blocks between requests.

An in-process ``Agent`` on a real SQLite file, in front of a ``CountingStore``,
serving its real unix socket; requests go through ``cni.agent_client.call``
as the plugin sends them. The agent polls once an hour here, so nothing but
the service's own fencing can tell it about another writer: what is shown
holds whether or not the watch has delivered a change yet.
"""

from __future__ import annotations

import json
import subprocess
from ipaddress import ip_interface

import pytest

from agent_proc import TOPOIPAM, add_env
from topoipam.agent.daemon import Agent
from topoipam.cni.agent_client import call
from topoipam.ipam import AssignRequest, IpamService
from topoipam.model.codec import decode_documents
from topoipam.resources.service import ResourceService
from topoipam.ipam.pool_blocks import PoolBlocks
from topoipam.store import open_store
from topoipam.store.counting import CountingStore

POOLS = """
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: a-pool}
spec: {cidr: 10.0.0.0/26, nodeSelector: "!has(rack)"}  # one block each: predictable addresses
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: b-pool}
spec: {cidr: 10.1.0.0/26}
"""
# ptp: routed, every address of a block usable (under bridge .0, .1 and .63 would not be handed out)
CONF = json.dumps({"cniVersion": "1.0.0", "name": "net", "type": "ptp", "ipam": {"type": "topoipam-cni"}}).encode()


@pytest.fixture
def world(tmp_path):
    url = f"sqlite://{tmp_path}/agent.db"
    store = open_store(url)
    ResourceService(store, PoolBlocks(store)).create(decode_documents(POOLS, "test"))
    counting = CountingStore(store)
    agent = Agent(counting, "n", socket_path=str(tmp_path / "agent.sock"), poll_interval=3600)
    try:
        agent.start()
        assert agent.tunnels_done.wait(30)  # registered, tunnel addresses (none here) reconciled
        yield url, store, counting, agent
    finally:
        agent.stop(grace=10)
        store.close()


def add(agent, container: str) -> str:
    code, out = call(agent.server.path, add_env(container), CONF)
    answer = json.loads(out)
    assert code == 0, answer
    return answer["ips"][0]["address"]


def delete(agent, container: str) -> None:
    env = {**add_env(container), "CNI_COMMAND": "DEL"}
    code, out = call(agent.server.path, env, CONF)
    assert code == 0, out


def held(store) -> list[str]:
    return sorted(str(a.ip) for a in IpamService(store).allocations())


def test_steady_state_add_is_the_handle_check_and_one_commit(world):
    _, store, counting, agent = world
    assert add(agent, "c0") == "10.0.0.0/26"  # claims the block; the service keeps it
    before = counting.counts()
    for i in range(1, 11):
        assert add(agent, f"c{i}") == f"10.0.0.{i}/26"
    spent = counting.counts() - before
    assert spent.writes == 10 and spent.failed_writes == 0
    assert spent.round_trips <= 20  # per ADD: the DEL-first handle read and the commit, nothing else
    delete(agent, "c3")
    assert add(agent, "c11") == "10.0.0.11/26"
    assert "10.0.0.3/26" not in held(store) and len(held(store)) == 11
    assert IpamService(store).check().ok


def test_another_writer_behind_the_kept_block_costs_a_retry_not_a_wrong_address(world):
    _, store, counting, agent = world
    assert add(agent, "c0") == "10.0.0.0/26"
    other = IpamService(store)  # another writer: the agent's kept block does not show .1 taken
    assert other.auto_assign(AssignRequest(node="n", handle="other", attrs={})).ipv4[0] == ip_interface("10.0.0.1/26")
    before = counting.counts()
    assert add(agent, "c2") == "10.0.0.2/26"
    spent = counting.counts() - before
    assert spent.failed_writes == 1  # planned .1 on the kept copy; the compare-and-swap refused it
    assert held(store) == ["10.0.0.0/26", "10.0.0.1/26", "10.0.0.2/26"]
    other.release_by_handle("other")  # and a release behind the agent: its DEL still finds its own
    delete(agent, "c2")
    assert held(store) == ["10.0.0.0/26"] and IpamService(store).check().ok


def test_a_pool_disabled_by_another_process_is_respected_by_the_next_add(world):
    url, store, counting, agent = world
    assert add(agent, "c0") == "10.0.0.0/26"  # a-pool first (name order); its block is kept
    topoipam(url, "patch", "ippool", "a-pool", "-p", '{"spec": {"disabled": true}}')
    before = counting.counts()
    assert add(agent, "c1") == "10.1.0.0/26"  # not .1 of the kept block in the now disabled pool
    assert (counting.counts() - before).failed_writes == 1  # the topology fence refused the stale plan
    assert IpamService(store).check().ok


def test_a_node_relabelled_by_another_process_is_respected_by_the_next_add(world):
    url, store, counting, agent = world
    assert add(agent, "c0") == "10.0.0.0/26"
    topoipam(url, "label", "nodes", "n", "rack=1")  # a-pool no longer selects the node
    assert add(agent, "c1") == "10.1.0.0/26"
    assert IpamService(store).check().ok


def topoipam(url: str, *args: str) -> None:
    proc = subprocess.run([str(TOPOIPAM), "--datastore", url, *args], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_l2_steady_state_skips_a_block_full_for_its_rule_without_a_read(world):
    """Under bridge a block with only its network, gateway and broadcast ordinals free is full for the
    request: the next ADDs go to the node's next kept block, at the handle check and one commit each."""
    _, store, counting, agent = world
    bridge = json.dumps({"cniVersion": "1.0.0", "name": "net", "type": "bridge",
                         "ipam": {"type": "topoipam-cni"}}).encode()

    def add_l2(container: str) -> str:
        code, out = call(agent.server.path, add_env(container), bridge)
        assert code == 0, out
        return json.loads(out)["ips"][0]["address"]

    first = [add_l2(f"b{i}") for i in range(62)]  # 61 fill 10.0.0.0/26 for the rule, the 62nd claims the next
    assert first[0] == "10.0.0.2/26" and first[60] == "10.0.0.62/26"
    nxt = ip_interface(first[61])
    assert nxt.network != ip_interface(first[0]).network and nxt.ip == nxt.network[2]
    before = counting.counts()
    assert [add_l2(f"s{i}") for i in range(10)] == [f"{nxt.ip + 1 + i}/26" for i in range(10)]
    spent = counting.counts() - before
    assert spent.writes == 10 and spent.failed_writes == 0 and spent.round_trips <= 20
