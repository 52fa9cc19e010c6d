"""What the plugin answers through the agent is what the datastore holds (issue 13).

An etcd of the test's own (never the session's) is paused with SIGSTOP during a stream of ADDs
sent to the agent's socket as the plugin sends them, then resumed with SIGCONT; the retries are
exec'd plugins. ADDs in flight during the pause must either
land and be answered 0, or be answered 11 such that the runtime's retry of the same attachment
gets exactly one address (the one that may have landed late, not "already holds"). Every process
started here is stopped by its pid in finally.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from agent_proc import AgentProc, add_env, exec_cni, netconf
from etcd_cluster import EtcdCluster
from topoipam.cni import agent_client
from topoipam.ipam import IpamService
from topoipam.model.codec import decode_documents
from topoipam.resources.service import ResourceService
from topoipam.ipam.pool_blocks import PoolBlocks
from topoipam.store import open_store

POOL = """
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pool-a}
spec: {cidr: 10.7.0.0/22, nodeSelector: all()}
"""
WORKERS = 8


def seed(url) -> None:
    store = open_store(url)
    try:
        ResourceService(store, PoolBlocks(store)).create(decode_documents(POOL, "test"))
    finally:
        store.close()


def held(url) -> dict[str, list[str]]:
    store = open_store(url)
    try:
        out: dict[str, list[str]] = {}
        for a in IpamService(store).allocations():
            out.setdefault(a.handle, []).append(str(a.ip.ip))
        return out
    finally:
        store.close()


# Seconds etcd is stopped. 5: ADDs in flight time out (the store's timeout is 2 s) and read their
# handle back until etcd answers again, within the read-back deadline. 12: longer than the timeout
# and the read-back together, so some ADDs are answered 11 and retried.
@pytest.mark.parametrize("pause", [5.0, 12.0])
def test_answers_match_the_datastore_across_an_etcd_pause(tmp_path, pause):
    cluster = EtcdCluster(tmp_path / "etcd").start()
    agent = None
    try:
        url = cluster.url() + "?timeout=2"
        seed(url)
        agent = AgentProc(tmp_path, url, "node-s").start()
        answers: dict[str, list[int]] = {}
        lock = threading.Lock()
        stop = threading.Event()

        def add(cid: str) -> None:
            """One ADD sent to the agent's socket as the plugin sends it (no exec: keeps the agent busy,
            so that the pause catches commits in flight)."""
            stdin = json.dumps(netconf(agent.socket, segment="routed")).encode()
            code, out = agent_client.call(agent.socket, add_env(cid), stdin, timeout=120)
            with lock:
                answers.setdefault(cid, []).append(json.loads(out)["code"] if code else 0)

        def stream(worker: int) -> None:
            i = 0
            while not stop.is_set():
                add(f"w{worker}-{i}")
                i += 1

        etcd_pid = cluster.members[0].proc.pid
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            running = [pool.submit(stream, w) for w in range(WORKERS)]
            time.sleep(2.0)
            os.kill(etcd_pid, signal.SIGSTOP)
            try:
                time.sleep(pause)
            finally:
                os.kill(etcd_pid, signal.SIGCONT)
            time.sleep(2.0)
            stop.set()
            for f in running:
                f.result()
        failed = sorted(cid for cid, codes in answers.items() if codes[-1] != 0)
        if pause > 10:
            assert failed, f"no ADD was answered 11 during the pause: {answers}"  # else nothing was tested
        assert all(answers[cid] == [11] for cid in failed), answers
        for cid in failed:  # the runtime tries again, with the same attachment
            call = exec_cni("ADD", agent.socket, cid, timeout=120, segment="routed")
            assert call.returncode == 0, (call.stdout, call.stderr)
            answers[cid].append(call.json["ips"][0]["address"])
        holdings = held(url)
        succeeded = {cid for cid, codes in answers.items() if codes[-1] != 11}
        # every address held belongs to an attachment that got a success answer...
        assert {h.split(".", 1)[1].split(":")[0] for h in holdings} <= succeeded
        # ... and every attachment retried after an 11 holds exactly the one address its retry got
        for cid in failed:
            got = holdings.get(f"net.{cid}:eth0")
            assert got is not None and len(got) == 1, (cid, got)
            assert ipaddress.ip_interface(answers[cid][-1]).ip == ipaddress.ip_address(got[0])
        addresses = [a for v in holdings.values() for a in v]
        assert len(addresses) == len(set(addresses))
        assert agent.stop() == 0
        agent = None
    finally:
        if agent is not None:
            agent.kill()
        try:
            os.kill(cluster.members[0].proc.pid, signal.SIGCONT)
        except (ProcessLookupError, AttributeError):
            pass
        cluster.stop()


def test_attachments_del_and_rejections_through_the_agent(tmp_path):
    """Through the agent (SQLite): two interfaces of one container, DEL of one, CHECK of the other;
    DEL with configuration ADD refuses; a rejected dual-stack ADD writes nothing."""
    url = f"sqlite://{tmp_path}/agent.db"
    seed(url)
    agent = AgentProc(tmp_path, url, "node-t").start()
    try:
        def cni(command, ifname="eth0", prev=None, **ipam):
            conf = netconf(agent.socket, **ipam)
            if prev is not None:
                conf["prevResult"] = prev
            env = dict(add_env("ctr"), CNI_COMMAND=command, CNI_IFNAME=ifname)
            code, out = agent_client.call(agent.socket, env, json.dumps(conf).encode())
            return code, (json.loads(out) if out.strip() else None)

        code, eth0 = cni("ADD")
        assert code == 0 and eth0["ips"][0]["gateway"] == str(ipaddress.ip_interface(eth0["ips"][0]["address"]).network[1])
        code, eth1 = cni("ADD", "eth1")
        assert code == 0 and eth1["ips"][0]["address"] != eth0["ips"][0]["address"]
        assert cni("DEL", "eth1", future_field=True) == (0, None)
        assert cni("CHECK", "eth0", prev=eth0) == (0, None)
        code, err = cni("CHECK", "eth1", prev=eth1)
        assert code == 1 and err["code"] == 100
        assert set(held(url)) == {"net.ctr:eth0"}
        store = open_store(url)
        try:
            before = {r.key: r.revision for r in store.list("/topoipam/ipam/v2/")}
            code, err = cni("ADD", "eth2", assign_ipv6=True)
            assert code == 1 and err["code"] == 101 and "IPv6" in err["msg"]
            assert {r.key: r.revision for r in store.list("/topoipam/ipam/v2/")} == before
        finally:
            store.close()
        assert cni("DEL", "eth0") == (0, None) and held(url) == {}
        assert agent.stop() == 0
    finally:
        agent.kill()
