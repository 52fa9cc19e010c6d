"""``topoipam-cni`` against a real SQLite datastore, exec'd as a runtime does.

Every command in every version: ADD results (format per version, block prefix,
v4 first, gateway/routes only when configured), the attributes recorded for
the handle ``<network>.<CNI_CONTAINERID>``, DEL (idempotent, releases), CHECK,
GC and STATUS, requested pools by name and CIDR, ``IP=``, dual stack (atomic),
and the allocation errors (101 no pool, 103 exhausted, 11 datastore busy), each
leaving the datastore as it was. Resources are written with the resources service.
The in-process seam the node agent will use (``handler.respond``) is driven too.
"""

from __future__ import annotations

import ipaddress
import re
import sqlite3

import pytest

from netns import PLUGIN, VENV_BIN, cni_env, run_plugin
from seed_yaml import RACK_POOLS
from topoipam.cni import handler, protocol
from topoipam.ipam import IpamService
from topoipam.model.codec import decode_documents
from topoipam.resources.service import ResourceService
from topoipam.ipam.pool_blocks import PoolBlocks
from topoipam.store import open_store

VERSIONS = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]
SEED = """
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: kube-node-0, labels: {rack: "0"}}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: kube-node-2, labels: {rack: "1"}}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: lonely}
---
""" + RACK_POOLS + """---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: tiny}
spec: {cidr: 10.9.0.0/30, blockSize: 30, nodeSelector: "!all()"}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: rack-0-v6}
spec: {cidr: "fd00:0:0:1::/120", nodeSelector: rack == "0"}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: tiny-v6}
spec: {cidr: "fd00:0:0:9::/126", blockSize: 126, nodeSelector: "!all()"}
"""
RACK0 = ipaddress.ip_network("192.168.0.0/24")
GO_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,9})? \+0000 UTC$")


def write_resources(url: str, text: str) -> None:
    """Create resources with the resources service (the netns tests use the CLI itself)."""
    store = open_store(url)
    try:
        ResourceService(store, PoolBlocks(store)).create(decode_documents(text, "test"))
    finally:
        store.close()


@pytest.fixture
def url(tmp_path):
    url = f"sqlite://{tmp_path}/cni.db"
    write_resources(url, SEED)
    return url


@pytest.fixture
def svc(url):
    store = open_store(url)
    try:
        yield IpamService(store)
    finally:
        store.close()


def conf(url, version="1.0.0", name="net1", node="kube-node-0", **ipam):
    return {"cniVersion": version, "name": name, "type": "bridge", "bridge": "cni0",
            "ipam": {"type": "topoipam-cni", "nodename": node, "datastore": url, **ipam}}


def call(command, c, cid="ctr1", args="IgnoreUnknown=1", **kw):
    env = cni_env(command, container_id=cid, netns=f"/run/netns/{cid}", args=args, path=str(VENV_BIN), **kw)
    if command in ("GC", "STATUS"):
        env = cni_env(command, ifname=None, path=str(VENV_BIN))
    return run_plugin(PLUGIN, env, c)


def ok(result):
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.json


def failed(result, code):
    assert result.returncode == 1, result.stdout
    err = result.json
    assert err["code"] == code, err
    assert "Traceback" not in result.stderr
    return err


def allocations(svc, prefix=None):
    return list(svc.allocations(prefix_handle=prefix))


@pytest.mark.parametrize("version", VERSIONS)
def test_add_result_in_each_version(url, svc, version):
    res = ok(call("ADD", conf(url, version)))
    assert set(res) == {"cniVersion", "ips", "dns"} and res["cniVersion"] == version and res["dns"] == {}
    [entry] = res["ips"]
    iface = ipaddress.ip_interface(entry["address"])
    assert iface.network.prefixlen == 26 and iface.ip in RACK0
    assert ("version" in entry) == (version < "1.0.0")
    assert entry.get("version", "4") == "4" and "interface" not in entry
    # bridge: one L2 segment with the block's prefix; its gateway is the block's first usable address
    assert entry["gateway"] == str(iface.network.network_address + 1)
    assert iface.ip not in (iface.network.network_address, iface.network.network_address + 1,
                            iface.network.broadcast_address)
    assert [str(a.ip.ip) for a in allocations(svc)] == [str(iface.ip)]


def test_add_records_handle_and_attributes(url, svc):
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=nginx-0;K8S_POD_UID=u-1;K8S_POD_INFRA_CONTAINER_ID=ctr1"
    res = ok(call("ADD", conf(url), cid="ctr1", args=args))
    [alloc] = allocations(svc)
    assert alloc.handle == "net1.ctr1:eth0" and str(alloc.ip) == res["ips"][0]["address"]
    attrs = dict(alloc.attrs)
    assert GO_TIME.match(attrs.pop("timestamp")), alloc.attrs
    assert attrs == {"node": "kube-node-0", "namespace": "default", "pod": "nginx-0", "container": "ctr1",
                     "interface": "eth0"}


def test_gateway_and_routes_only_when_configured(url):
    c = conf(url, "0.4.0", gateway=["192.168.0.1", "fd00:0:0:1::1"], assign_ipv6=True,
             routes=[{"dst": "0.0.0.0/0"}, {"dst": "10.0.0.0/8", "gw": "192.168.0.254"}, {"dst": "::/0"}])
    res = ok(call("ADD", c))
    assert [e["version"] for e in res["ips"]] == ["4", "6"]
    assert [e["gateway"] for e in res["ips"]] == ["192.168.0.1", "fd00:0:0:1::1"]
    assert ipaddress.ip_interface(res["ips"][1]["address"]).network.prefixlen == 122
    assert res["routes"] == [{"dst": "0.0.0.0/0", "gw": "192.168.0.1"}, {"dst": "10.0.0.0/8", "gw": "192.168.0.254"},
                             {"dst": "::/0", "gw": "fd00:0:0:1::1"}]


def test_unknown_cni_args_accepted_with_ignore_unknown(url, svc):
    res = ok(call("ADD", conf(url), args="IgnoreUnknown=true;FOO=bar;K8S_POD_NAME=p1;MAC=aa:bb"))
    [alloc] = allocations(svc)
    assert str(alloc.ip) == res["ips"][0]["address"] and alloc.attrs["pod"] == "p1"


def test_unknown_top_level_fields_are_ignored(url):
    c = conf(url, "1.1.0")
    c.update({"isGateway": True, "someVendorField": {"x": [1, 2]}, "runtimeConfig": {"portMappings": []},
              "args": {"cni": {}}, "prevResult": {"cniVersion": "1.1.0", "ips": []}})
    assert ipaddress.ip_interface(ok(call("ADD", c))["ips"][0]["address"]).ip in RACK0


@pytest.mark.parametrize("version", VERSIONS)
def test_del_releases_and_is_idempotent(url, svc, version):
    c = conf(url, version)
    ok(call("ADD", c))
    assert len(allocations(svc)) == 1
    first = call("DEL", c)
    assert ok(first) is None and first.stdout == ""
    assert allocations(svc) == []
    assert ok(call("DEL", c)) is None
    assert ok(call("DEL", c, cid="never-added")) is None


def test_del_needs_no_netns(url, svc):
    ok(call("ADD", conf(url)))
    env = cni_env("DEL", container_id="ctr1", netns=None)
    assert ok(run_plugin(PLUGIN, env, conf(url))) is None
    assert allocations(svc) == []


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0", "1.1.0"])
def test_check_passes_after_add_and_fails_on_mismatch(url, version):
    c = conf(url, version)
    res = ok(call("ADD", c))
    assert ok(call("CHECK", dict(c, prevResult=res))) is None
    wrong = dict(res, ips=[{"address": "192.168.0.200/26"}])
    err = failed(call("CHECK", dict(c, prevResult=wrong)), 100)
    assert "192.168.0.200" in err["msg"] and "net1.ctr1" in err["msg"]
    ok(call("DEL", c))
    assert "holds no address" in failed(call("CHECK", dict(c, prevResult=res)), 100)["msg"]


def test_repeated_add_of_one_attachment_returns_what_it_holds_and_changes_nothing(url, svc):
    """A retried ADD (after an answer 11 whose commit landed, say) is idempotent; one asking for
    something else than the attachment holds is refused."""
    first = ok(call("ADD", conf(url)))
    revisions = block_revisions(url)
    assert ok(call("ADD", conf(url))) == first
    err = failed(call("ADD", conf(url), args="IP=192.168.0.40"), 100)
    assert "already holds" in err["msg"] and "DEL" in err["details"]
    err = failed(call("ADD", conf(url, assign_ipv6=True)), 100)
    assert [str(a.ip) for a in allocations(svc)] == [first["ips"][0]["address"]]
    assert block_revisions(url) == revisions


def block_revisions(url):
    store = open_store(url)
    try:
        return {r.key: r.revision for r in store.list("/topoipam/ipam/v2/assignment/")}
    finally:
        store.close()


@pytest.mark.parametrize("pool,expect", [("rack-1-ippool", "192.168.1.0/24"), ("192.168.1.0/24", "192.168.1.0/24")])
def test_requested_pool_by_name_or_cidr_overrides_selector(url, pool, expect):
    res = ok(call("ADD", conf(url, ipv4_pools=[pool])))
    assert ipaddress.ip_interface(res["ips"][0]["address"]).ip in ipaddress.ip_network(expect)


@pytest.mark.parametrize("pool", ["no-such-pool", "10.77.0.0/24"])
def test_unknown_requested_pool_is_101_and_takes_nothing(url, svc, pool):
    err = failed(call("ADD", conf(url, ipv4_pools=[pool])), 101)
    assert pool in err["msg"]
    assert allocations(svc) == []


def test_no_pool_selects_node_is_101_naming_every_pool(url, svc):
    err = failed(call("ADD", conf(url, node="lonely")), 101)
    for pool in ("rack-0-ippool", "rack-1-ippool", "tiny"):
        assert pool in err["msg"]
    assert "lonely" in err["msg"]
    assert allocations(svc) == []


def test_unregistered_node_is_refused(url, svc):
    err = failed(call("ADD", conf(url, node="kube-node-9")), 100)
    assert "kube-node-9" in err["msg"]
    assert allocations(svc) == []


def test_exhausted_pool_is_103_and_takes_nothing(url, svc):
    c = conf(url, ipv4_pools=["tiny"], segment="routed")  # every address usable, as under ptp
    got = {ok(call("ADD", c, cid=f"c{i}"))["ips"][0]["address"] for i in range(4)}
    assert got == {f"10.9.0.{i}/30" for i in range(4)}
    err = failed(call("ADD", c, cid="c4"), 103)
    assert "Assigned 0 out of 1 requested IPv4 addresses" in err["msg"]
    assert len(allocations(svc)) == 4
    assert ok(call("DEL", c, cid="c0")) is None
    assert ok(call("ADD", c, cid="c4"))["ips"][0]["address"] == "10.9.0.0/30"


def test_dual_stack_v4_first(url, svc):
    res = ok(call("ADD", conf(url, "1.1.0", assign_ipv6="true")))
    v4, v6 = (ipaddress.ip_interface(e["address"]) for e in res["ips"])
    assert v4.version == 4 and v6.version == 6 and v6.ip in ipaddress.ip_network("fd00:0:0:1::/120")
    assert sorted(str(a.ip) for a in allocations(svc, "net1.")) == sorted([str(v4), str(v6)])


def test_dual_stack_check_and_del(url, svc):
    """CHECK and DEL of a dual-stack container list and free both of its addresses (the handle holds an
    IPv4 and an IPv6 address, which ipaddress will not compare with each other)."""
    c = conf(url, "1.1.0", assign_ipv6="true")
    res = ok(call("ADD", c, cid="d1"))
    assert ok(call("CHECK", dict(c, prevResult=res), cid="d1")) is None
    assert ok(call("DEL", c, cid="d1")) is None
    assert allocations(svc, "net1.") == []
    assert ok(call("DEL", c, cid="d1")) is None  # idempotent


def test_dual_stack_is_atomic_when_ipv6_fails(url, svc):
    c = conf(url, assign_ipv6=True, ipv6_pools=["tiny-v6"], segment="routed")
    for i in range(4):
        ok(call("ADD", c, cid=f"v{i}"))
    before = sorted(str(a.ip) for a in allocations(svc))
    err = failed(call("ADD", c, cid="v4"), 103)
    assert "IPv6" in err["msg"]
    assert sorted(str(a.ip) for a in allocations(svc)) == before  # the IPv4 address it took is back


def test_ipv6_only(url):
    res = ok(call("ADD", conf(url, "0.3.1", assign_ipv4="false", assign_ipv6="true")))
    assert [e["version"] for e in res["ips"]] == ["6"]


def test_ip_arg_assigns_exactly_that_address(url, svc):
    res = ok(call("ADD", conf(url), args="IgnoreUnknown=1;IP=192.168.0.77"))
    assert res["ips"] == [{"address": "192.168.0.77/26", "gateway": "192.168.0.65"}]
    assert [a.handle for a in allocations(svc)] == ["net1.ctr1:eth0"]
    err = failed(call("ADD", conf(url), cid="other", args="IP=192.168.0.77"), 100)
    assert "192.168.0.77" in err["msg"]


def test_ip_arg_outside_pools_is_refused(url, svc):
    err = failed(call("ADD", conf(url), args="IP=172.16.0.5"), 4)  # the bad input is CNI_ARGS: invalid environment
    assert "172.16.0.5" in err["msg"]
    assert allocations(svc) == []


def test_ip_arg_refusal_is_invalid_environment_only_for_the_address(svc):
    """Only an address outside every pool is CNI_ARGS' fault (4); an invalid handle keeps its own code (7)."""
    from topoipam import errors as E

    with pytest.raises(protocol.CniError) as outside:
        handler._assign_one(svc, ipaddress.ip_address("172.16.0.5"), "net1.ctr1:eth0", {}, "kube-node-0", None)
    assert outside.value.code == E.CNI_INVALID_ENV
    with pytest.raises(E.ValidationError) as bad_handle:
        handler._assign_one(svc, ipaddress.ip_address("192.168.0.9"), "net1.bad\nhandle", {}, "kube-node-0", None)
    assert bad_handle.value.cni_code == E.CNI_INVALID_NETCONF
    assert allocations(svc) == []


def test_ip_arg_dual_stack_failure_releases_the_first(url, svc):
    err = failed(call("ADD", conf(url), args="IP=192.168.0.10,fd99::1"), 4)
    assert "fd99::1" in err["msg"]
    assert allocations(svc) == []


def test_gc_releases_attachments_not_listed(url, svc):
    c = conf(url, "1.1.0")
    for cid in ("keep", "stale1", "stale2"):
        ok(call("ADD", c, cid=cid))
    other = conf(url, "1.1.0", name="net1.b")  # a dotted network name sharing the prefix
    ok(call("ADD", other, cid="stale3"))
    gc = dict(c, **{"cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]})
    assert ok(call("GC", gc)) is None
    assert sorted(a.handle for a in allocations(svc)) == ["net1.b.stale3:eth0", "net1.keep:eth0"]
    gc_all = dict(c, **{"cni.dev/valid-attachments": []})
    assert ok(call("GC", gc_all)) is None
    assert [a.handle for a in allocations(svc)] == ["net1.b.stale3:eth0"]


def test_gc_keeps_other_interface_of_valid_container_only_if_listed(url, svc):
    c = conf(url, "1.1.0")
    ok(call("ADD", c, cid="a1"))
    gc = dict(c, **{"cni.dev/valid-attachments": [{"containerID": "a1", "ifname": "net9"}]})
    ok(call("GC", gc))
    assert allocations(svc) == []


def test_status_ready_and_not_ready(url):
    assert ok(call("STATUS", conf(url, "1.1.0"))) is None
    err = failed(call("STATUS", conf(url, "1.1.0", node="lonely")), 50)
    assert "selects node lonely" in err["msg"]
    err = failed(call("STATUS", conf(url, "1.1.0", ipv4_pools=["gone"])), 50)
    assert "gone" in err["msg"]
    assert ok(call("STATUS", conf(url, "1.1.0", ipv4_pools=["tiny"]))) is None
    err = failed(call("STATUS", conf(url, "1.1.0", node="kube-node-9")), 50)
    assert "kube-node-9 is not registered" in err["msg"]


def test_busy_datastore_is_try_again_later(tmp_path, url, svc):
    path = url.removeprefix("sqlite://")
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        err = failed(call("ADD", conf(url + "?timeout=0.3")), 11)
        assert "busy" in err["msg"]
    finally:
        holder.close()
    assert allocations(svc) == []


def test_in_process_seam_for_the_agent(url):
    """``handler.respond`` serves a request without exec: what the node agent will call."""
    store = open_store(url)
    try:
        service = IpamService(store)
        env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "agent1", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0"}
        stdin = protocol.dumps(conf("ignored-by-the-agent", "1.0.0"))
        code, out = handler.respond(env, stdin, lambda _url: (store, service), now_ns=lambda: 1_700_000_000 * 10**9)
        assert code == 0, out
        assert [a.handle for a in service.allocations()] == ["net1.agent1:eth0"]
        assert service.allocations()[0].attrs["timestamp"] == "2023-11-14 22:13:20 +0000 UTC"
        code, out = handler.respond(dict(env, CNI_COMMAND="DEL"), stdin, lambda _url: (store, service))
        assert (code, out) == (0, b"") and list(service.allocations()) == []
    finally:
        store.close()


def test_in_process_seam_takes_the_parsed_netconf(url):
    """``respond`` parses the netconf once and hands it to ``handle``: the conf given is the one served."""
    from topoipam.cni.netconf import parse_ipam

    store = open_store(url)
    try:
        service = IpamService(store)
        env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0"}
        req = protocol.parse_request(env, protocol.dumps(conf(url, "1.0.0", node="kube-node-0")))
        handler.handle(req, store, service, conf=parse_ipam(conf(url, "1.0.0", node="kube-node-2")))
        assert [a.attrs["node"] for a in service.allocations()] == ["kube-node-2"]
    finally:
        store.close()
