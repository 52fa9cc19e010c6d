"""The exec'd plugin's attachments (network, container id, interface), its L2/routed gateways, and DEL
and rejections that must not depend on what ADD would refuse (issue 13, issue 12 item 0)."""

from __future__ import annotations

import ipaddress
import json

import pytest

from netns import PLUGIN, VENV_BIN, cni_env, run_plugin
from seed_yaml import RACK_POOLS
from topoipam.cni import handler
from topoipam.core.block import FIRST_USABLE, L2Segment
from topoipam.ipam import AssignRequest, IpamService
from topoipam.model.codec import decode_documents
from topoipam.resources.service import ResourceService
from topoipam.ipam.pool_blocks import PoolBlocks
from topoipam.store import open_store

SEED = """
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: kube-node-0, labels: {rack: "0"}}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: kube-node-2, labels: {rack: "1"}}
---
""" + RACK_POOLS + """---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: rack-0-v6}
spec: {cidr: "fd00:0:0:1::/120", nodeSelector: rack == "0"}
"""


@pytest.fixture
def url(tmp_path):
    url = f"sqlite://{tmp_path}/att.db"
    store = open_store(url)
    try:
        ResourceService(store, PoolBlocks(store)).create(decode_documents(SEED, "test"))
    finally:
        store.close()
    return url


def with_service(url, fn):
    store = open_store(url)
    try:
        return fn(IpamService(store), store)
    finally:
        store.close()


def conf(url, plugin="bridge", node="kube-node-0", **ipam):
    return {"cniVersion": "1.0.0", "name": "net1", "type": plugin,
            "ipam": {"type": "topoipam-cni", "nodename": node, "datastore": url, **ipam}}


def call(command, c, cid="ctr1", ifname="eth0", args="IgnoreUnknown=1", prev=None):
    env = cni_env(command, container_id=cid, netns=f"/run/netns/{cid}", ifname=ifname, args=args, path=str(VENV_BIN))
    return run_plugin(PLUGIN, env, c if prev is None else dict(c, prevResult=prev))


def ok(result):
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.json


def failed(result, code):
    assert result.returncode == 1, result.stdout
    assert result.json["code"] == code, result.json
    assert "Traceback" not in result.stderr
    return result.json


def held(url):
    return with_service(url, lambda svc, _: sorted((a.handle, str(a.ip)) for a in svc.allocations()))


def revisions(url):
    return with_service(url, lambda _, store: {r.key: r.revision for r in store.list("/topoipam/ipam/v2/")})


def test_two_interfaces_of_one_container_del_and_check_touch_only_their_own(url):
    c = conf(url)
    eth0, eth1 = ok(call("ADD", c, ifname="eth0")), ok(call("ADD", c, ifname="eth1"))
    assert eth0["ips"][0]["address"] != eth1["ips"][0]["address"]
    assert [h for h, _ in held(url)] == ["net1.ctr1:eth0", "net1.ctr1:eth1"]
    assert ok(call("DEL", c, ifname="eth1")) is None
    assert held(url) == [("net1.ctr1:eth0", eth0["ips"][0]["address"])]
    assert ok(call("CHECK", c, ifname="eth0", prev=eth0)) is None
    assert "holds no address" in failed(call("CHECK", c, ifname="eth1", prev=eth1), 100)["msg"]
    assert ok(call("DEL", c, ifname="eth1")) is None  # again: nothing to do
    assert ok(call("DEL", c, ifname="eth0")) is None and held(url) == []


def test_a_handle_written_before_interfaces_is_its_interface_attachment(url):
    """``net1.<container>`` (the old form) keeps working: CHECK and a retried ADD see it, DEL of
    another interface leaves it, DEL of its own interface releases it, GC compares it likewise."""
    def old_add(svc, _):
        return svc.auto_assign(AssignRequest(node="kube-node-0", handle="net1.old", num4=1,
                                             attrs={"container": "old", "interface": "eth0", "node": "kube-node-0"}))
    [address] = with_service(url, old_add).ipv4
    c = conf(url, segment="routed")
    prev = {"cniVersion": "1.0.0", "ips": [{"address": str(address)}]}
    assert ok(call("CHECK", c, cid="old", prev=prev)) is None
    assert ok(call("ADD", c, cid="old"))["ips"][0]["address"] == str(address)
    assert ok(call("DEL", c, cid="old", ifname="eth1")) is None
    assert held(url) == [("net1.old", str(address))]
    gc = dict(c, cniVersion="1.1.0", **{"cni.dev/valid-attachments": [{"containerID": "old", "ifname": "eth0"}]})
    assert ok(call("GC", gc)) is None and len(held(url)) == 1
    assert ok(call("DEL", c, cid="old")) is None and held(url) == []


def test_del_needs_only_the_datastore(url, tmp_path):
    c = conf(url)
    ok(call("ADD", c))
    odd = conf(url, future_field={"x": 1}, gateway=17, segment="mesh")
    assert failed(call("ADD", odd, cid="ctr2"), 2)["msg"].startswith("unsupported field ipam.future_field")
    assert ok(call("DEL", odd)) is None and held(url) == []


def test_a_datastore_in_a_missing_directory_is_a_configuration_error_and_del_succeeds(tmp_path):
    c = conf(f"sqlite://{tmp_path}/missing/dir/x.db")
    err = failed(call("ADD", c), 7)  # permanent: not 11, which a kubelet would retry forever
    assert "does not exist" in err["msg"]
    assert ok(call("DEL", c)) is None
    assert not (tmp_path / "missing").exists()


def test_a_rejected_dual_stack_add_writes_nothing(url):
    c = conf(url, node="kube-node-2", assign_ipv6=True)  # rack 1 has an IPv4 pool and no IPv6 pool
    ok(call("ADD", conf(url, node="kube-node-2"), cid="warm"))  # the node's IPv4 block exists, kept
    before = revisions(url)
    err = failed(call("ADD", c), 101)
    assert "IPv6" in err["msg"]
    assert revisions(url) == before  # every block, handle and affinity at the revision it had


def test_l2_gateway_default_configured_and_none(url):
    [first] = ok(call("ADD", conf(url, plugin="macvlan")))["ips"]
    iface = ipaddress.ip_interface(first["address"])
    assert first["gateway"] == str(iface.network[1]) and iface.ip == iface.network[2]
    [given] = ok(call("ADD", conf(url, plugin="ipvlan", gateway=str(iface.network[2 + 1])), cid="c2"))["ips"]
    # a configured gateway replaces the first usable address as the excluded one (.65 is free then)
    assert given["gateway"] == str(iface.network[3]) and given["address"] == f"{iface.network[1]}/26"
    [none] = ok(call("ADD", conf(url, gateway="none"), cid="c3"))["ips"]
    assert "gateway" not in none and none["address"] == f"{iface.network[3]}/26"
    routed = ok(call("ADD", conf(url, plugin="ptp", routes=[{"dst": "0.0.0.0/0"}]), cid="c4"))
    assert routed["ips"][0]["gateway"] == "169.254.1.1"
    assert routed["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]
    dual = ok(call("ADD", conf(url, plugin="ptp", assign_ipv6=True), cid="c5"))["ips"]
    assert [e["gateway"] for e in dual] == ["169.254.1.1", "fe80::1"]


@pytest.mark.parametrize("ip", ["192.168.0.64", "192.168.0.65", "192.168.0.127"])
def test_l2_refuses_a_named_network_gateway_or_broadcast_address(url, ip):
    err = failed(call("ADD", conf(url), args=f"IP={ip}"), 4)
    assert ip in err["msg"] and held(url) == []
    assert ok(call("ADD", conf(url, segment="routed"), args=f"IP={ip}"))["ips"][0]["address"] == f"{ip}/26"


def test_l2_never_hands_out_network_gateway_or_broadcast(url):
    c = conf(url, ipv4_pools=["192.168.0.0/24"])
    got = {ipaddress.ip_interface(ok(call("ADD", c, cid=f"f{i}"))["ips"][0]["address"]) for i in range(61)}
    [net] = {a.network for a in got}
    assert {a.ip for a in got} == set(net.hosts()) - {net[1]}  # 64 - network, gateway, broadcast
    nxt = ipaddress.ip_interface(ok(call("ADD", c, cid="f61"))["ips"][0]["address"])
    assert nxt.network != net and nxt.ip == nxt.network[2]


def test_segment_rule_is_pure_block_logic():
    v4, v6 = ipaddress.ip_network("10.0.0.64/26"), ipaddress.ip_network("fd00::/122")
    assert L2Segment().unusable(v4) == {0, 1, 63}
    assert L2Segment().unusable(v6) == {0, 1}  # IPv6 has no broadcast address (host-local's rule)
    assert L2Segment(ipaddress.ip_address("10.0.0.70")).unusable(v4) == {0, 6, 63}
    assert L2Segment(ipaddress.ip_address("10.9.9.9")).unusable(v4) == {0, 63}
    assert L2Segment(None).unusable(v4) == {0, 63} and L2Segment(None).gateway_of(v4) is None
    assert L2Segment().unusable(ipaddress.ip_network("10.0.0.4/31")) == frozenset()
    assert L2Segment(FIRST_USABLE).gateway_of(v4) == ipaddress.ip_address("10.0.0.65")
    assert handler.handle_id("a.b", "c", "eth0") == "a.b.c:eth0" and handler.legacy_handle_id("a.b", "c") == "a.b.c"


def test_a_new_attachment_costs_one_round_trip_and_a_retry_still_gets_its_address(url):
    """As the agent serves it (one kept service): the ADD of a new attachment is one commit, which
    itself checks that neither handle form exists; a retried ADD finds its handle in use by that
    commit, reads what it holds and gets the same address, writing nothing; another ADD asking for
    something else is refused, and an old-form handle of the container is seen the same way."""
    from topoipam.store.counting import CountingStore

    inner = open_store(url)
    try:
        store = CountingStore(inner)
        svc = IpamService(store)
        c = conf(url, segment="routed")
        stdin = json.dumps(c).encode()

        def add(cid, args="IgnoreUnknown=1"):
            env = cni_env("ADD", container_id=cid, netns=f"/run/netns/{cid}", args=args)
            code, out = handler.respond(env, stdin, lambda _u: (store, svc), default_nodename="kube-node-0")
            return code, json.loads(out)

        assert add("warm")[0] == 0  # the node's block is claimed and kept
        store.reset()
        code, first = add("fresh")
        assert code == 0 and store.reset().round_trips == 1
        code, again = add("fresh")
        assert code == 0 and again["ips"] == first["ips"]
        counts = store.reset()
        assert counts.writes == counts.failed_writes == 1  # the exclusive commit refused; nothing written
        elsewhere = ipaddress.ip_interface(first["ips"][0]["address"]).ip + 5
        code, other = add("fresh", args=f"IgnoreUnknown=1;IP={elsewhere}")
        assert code == 1 and "already holds" in other["msg"], other
        svc.auto_assign(AssignRequest(node="kube-node-0", handle="net1.legacy", num4=1,
                                      attrs={"container": "legacy", "interface": "eth0"}))
        code, legacy = add("legacy")  # answered from the old-form handle: no second address
        assert code == 0 and [h for h, _ in held(url) if "legacy" in h] == ["net1.legacy"]
    finally:
        inner.close()


def test_a_retried_add_on_a_full_node_gets_its_address_and_nothing_is_released(tmp_path):
    """The one-commit ADD fails (no address left) before it can learn whether the attachment existed:
    it must then decide on a read, as every ADD used to, and never release the attachment's handle."""
    url = f"sqlite://{tmp_path}/full.db"
    store = open_store(url)
    try:
        ResourceService(store, PoolBlocks(store)).create(decode_documents(
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: n0}\n---\n"
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: tiny}\n"
            "spec: {cidr: 10.7.0.0/28, blockSize: 28, nodeSelector: all()}\n", "test"))
        svc = IpamService(store)
        stdin = json.dumps(conf(url, node="n0", segment="routed")).encode()

        def add(cid):
            env = cni_env("ADD", container_id=cid, netns=f"/run/netns/{cid}")
            code, out = handler.respond(env, stdin, lambda _u: (store, svc), default_nodename="n0")
            return code, json.loads(out)

        answers = [add(f"c{i}") for i in range(16)]
        assert all(code == 0 for code, _ in answers)
        code, full = add("c16")
        assert code == 1 and "Assigned 0 out of 1" in full["msg"], full
        before = sorted((a.handle, str(a.ip)) for a in svc.allocations())
        code, again = add("c3")  # a runtime retrying an ADD that had landed
        assert code == 0 and again["ips"] == answers[3][1]["ips"]
        assert sorted((a.handle, str(a.ip)) for a in svc.allocations()) == before
    finally:
        store.close()
