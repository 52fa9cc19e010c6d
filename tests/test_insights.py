"""``topoipam ipam coverage|explain|headroom|drift`` through the real CLI entry point on SQLite files.

The seed topology: two racks of two nodes (rack = i // 2), one pool per rack
(rack-r-ippool = 192.168.r.0/24, nodeSelector rack == "r"), no default pool.
Addresses are assigned with ``topoipam ipam assign`` (the allocator itself).
"""

from __future__ import annotations

import ipaddress
import json
import time

import pytest

from seed_yaml import RACK_POOL

NODE = """\
---
apiVersion: projectcalico.org/v3
kind: Node
metadata:
  name: {name}
{labels}"""

POOL = """\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: {name}
spec:
  cidr: {cidr}
  nodeSelector: {selector}
"""


def _node(name: str, rack: int | None) -> str:
    return NODE.format(name=name, labels=f"  labels:\n    rack: \"{rack}\"\n" if rack is not None else "")


@pytest.fixture
def seed(cli):
    """The seed topology; returns ``cli``."""
    docs = "".join(_node(f"kube-node-{i}", i // 2) for i in range(4))
    assert cli("create", "-f", "-", stdin=docs).code == 0
    for rack in (0, 1):
        r = cli("create", "-f", "-", stdin=RACK_POOL.format(rack=rack))
        assert r.code == 0, r
    return cli


def assign(cli, node: str, handle: str, n: int = 1, *attrs: str) -> list:
    args = ["ipam", "assign", "--node", node, "--handle", handle, "--namespace", "default", "--ipv4", str(n)]
    for a in attrs:
        args += ["--attr", a]
    r = cli(*args)
    assert r.code == 0, r
    return [ipaddress.ip_address(line) for line in r.out.split()]


# ------------------------------------------------------------------ coverage


def test_coverage_seed_is_full(seed):
    r = seed("ipam", "coverage")
    assert r.code == 0, r
    lines = r.out.splitlines()
    assert lines[0:3] == ["+-------------+--------+---------+-----------------+----------+",
                          "|    NODE     | FAMILY | COVERED | POOLS WITH ROOM | IPS FREE |",
                          "+-------------+--------+---------+-----------------+----------+"]
    assert lines[3:7] == [f"| kube-node-{i} | IPv4   | yes     | rack-{i // 2}-ippool   |      256 |" for i in range(4)]
    assert lines[-1] == "Every node is covered (IPv4)"
    data = json.loads(seed("ipam", "coverage", "-o", "json").out)
    assert data["ok"] is True and data["unused_pools"] == [] and data["overlaps"] == []
    assert [n["pools"] for n in data["nodes"]] == [["rack-0-ippool"]] * 2 + [["rack-1-ippool"]] * 2


def test_coverage_node_without_rack_is_uncovered(seed):
    assert seed("create", "-f", "-", stdin=_node("kube-node-4", None)).code == 0
    r = seed("ipam", "coverage")
    assert r.code == 4, r
    assert "| kube-node-4 | IPv4   | NO      | -               |        0 |" in r.out
    assert ("Not covered: kube-node-4 (IPv4): no pool selects it: rack-0-ippool (192.168.0.0/24): node selector "
            "rack == \"0\" does not match node kube-node-4 labels {}; rack-1-ippool (192.168.1.0/24): node selector "
            "rack == \"1\" does not match node kube-node-4 labels {}") in r.out
    assert r.out.splitlines()[-1].startswith("1 of 5 node/family pairs are not covered")
    data = json.loads(seed("ipam", "coverage", "-o", "json").out)
    assert data["ok"] is False and [n["node"] for n in data["nodes"] if not n["covered"]] == ["kube-node-4"]


def test_coverage_exhausted_pool_leaves_its_nodes_without_room(seed):
    got = assign(seed, "kube-node-0", "fill", 256)
    assert len(got) == 256 and all(ip in ipaddress.ip_network("192.168.0.0/24") for ip in got)
    r = seed("ipam", "coverage")
    assert r.code == 4, r
    for node in ("kube-node-0", "kube-node-1"):
        assert f"| {node} | IPv4   | NO      | -               |        0 |" in r.out
        assert f"Not covered: {node} (IPv4): no room: rack-0-ippool is full (0 free in the node's affine blocks)" \
            in r.out
    assert "| kube-node-2 | IPv4   | yes     | rack-1-ippool   |      256 |" in r.out
    # explain agrees, and so does the allocator
    e = seed("ipam", "explain", "--node", "kube-node-1")
    assert "    1. rack-0-ippool: 0 free in the node's affine blocks (full)" in e.out
    assert "    rack-0-ippool (192.168.0.0/24): full: 0 free in the node's affine blocks" in e.out
    assert "  Next assignment: no block:" in e.out
    assert seed("ipam", "assign", "--node", "kube-node-1").code == 1


def test_coverage_reports_unused_pools_overlaps_and_missing_family(seed):
    seed("create", "-f", "-", stdin=POOL.format(name="a-everywhere", cidr="10.10.0.0/16", selector="all()"))
    seed("create", "-f", "-", stdin=POOL.format(name="rack-9-ippool", cidr="10.99.0.0/24", selector="rack == \"9\""))
    r = seed("ipam", "coverage")
    assert r.code == 0, r
    assert "Pool rack-9-ippool selects no node" in r.out
    assert ("Pools a-everywhere and rack-0-ippool both select kube-node-0, kube-node-1: auto-assign tries them in "
            "name order, so new blocks come from a-everywhere until it is full") in r.out
    assert "| kube-node-0 | IPv4   | yes     | a-everywhere, rack-0-ippool |" in r.out  # name order
    r = seed("ipam", "coverage", "--family", "6")
    assert r.code == 4 and "Not covered: kube-node-0 (IPv6): there is no IPv6 pool" in r.out


# ------------------------------------------------------------------ explain


def test_explain_names_the_pool_the_block_and_the_other_pools_reason(seed):
    e = seed("ipam", "explain", "--node", "kube-node-2")
    assert e.code == 0, e
    lines = e.out.splitlines()
    assert lines[0] == 'Node kube-node-2 with labels {"rack": "1"}, IPv4:'
    assert lines[2] == "    1. rack-1-ippool: 0 free in the node's affine blocks, 256 in unclaimed blocks"
    assert lines[4] == ('    rack-0-ippool (192.168.0.0/24): node selector rack == "0" does not match node '
                        'kube-node-2 labels {"rack": "1"}')
    first = json.loads(seed("ipam", "explain", "--node", "kube-node-2", "-o", "json").out)[0]["next_block"]
    assert first["kind"] == "claim" and first["pool"] == "rack-1-ippool" and first["free"] == 64
    # the allocator takes exactly the block explain announced
    ip = assign(seed, "kube-node-2", "web-1")[0]
    assert ip in ipaddress.ip_network(first["block"])
    e = seed("ipam", "explain", "--node", "kube-node-2")
    assert f"  Next assignment: block {first['block']} of rack-1-ippool, affine to kube-node-2, with 63 free" in e.out
    assert "    1. rack-1-ippool: 63 free in the node's affine blocks, 192 in unclaimed blocks" in e.out


def test_explain_hypothetical_labels(seed):
    e = seed("ipam", "explain", "--labels", "rack=2")
    assert e.code == 0, e
    assert e.out.splitlines()[:2] == ['A new node with labels {"rack": "2"}, IPv4:',
                                      "  No pool selects it: an assignment here fails"]
    assert 'rack-1-ippool (192.168.1.0/24): node selector rack == "1" does not match node new-node labels ' \
           '{"rack": "2"}' in e.out
    # planning a relabel of a registered node: its name sets its block order, as for the allocator
    e = seed("ipam", "explain", "--node", "kube-node-0", "--labels", "rack=1")
    assert "    1. rack-1-ippool:" in e.out and "new block 192.168.1." in e.out


def test_explain_namespace_selector_and_bad_input(seed):
    seed("create", "-f", "-", stdin=POOL.format(name="a-team", cidr="10.20.0.0/24", selector="all()")
         + "  namespaceSelector: team == \"a\"\n  allowedUses: [Workload]\n")
    e = seed("ipam", "explain", "--node", "kube-node-0", "--namespace", "web")
    # the namespace's labels are resolved as the plugin does: its name label (no Profile kns.web yet)
    assert ('a-team (10.20.0.0/24): namespace selector team == "a" does not match namespace labels '
            '{"kubernetes.io/metadata.name": "web"}') in e.out
    e = seed("ipam", "explain", "--node", "kube-node-0", "--namespace", "web", "--namespace-labels", "team=a")
    assert "    1. a-team:" in e.out and "    2. rack-0-ippool:" in e.out
    assert seed("ipam", "explain").code == 2
    assert seed("ipam", "explain", "--labels", "rack").code == 2
    r = seed("ipam", "explain", "--node", "kube-node-9")
    assert r.code == 1 and "node kube-node-9 is not registered" in r.err


# ------------------------------------------------------------------ headroom


def test_headroom_by_rack_exact(seed):
    assign(seed, "kube-node-0", "a", 3)
    assign(seed, "kube-node-1", "b", 70)  # two blocks for kube-node-1
    assign(seed, "kube-node-2", "c", 1)
    r = seed("ipam", "headroom", "--by", "rack")
    assert r.code == 0, r
    rows = [line for line in r.out.splitlines() if line.startswith("|")]
    assert rows[1] == ("|    0 | IPv4   | kube-node-0, kube-node-1 | rack-0-ippool |       256 |         73 |      183 |"
                       "              3 |                1 |           183 | no history   |")
    assert rows[2] == ("|    1 | IPv4   | kube-node-2, kube-node-3 | rack-1-ippool |       256 |          1 |      255 |"
                       "              1 |                3 |           255 | no history   |")
    data = json.loads(seed("ipam", "headroom", "--by", "rack", "-o", "json").out)
    nodes = {n["node"]: (n["blocks"], n["in_use"], n["free"]) for n in data["nodes"]}
    assert nodes == {"kube-node-0": (1, 3, 61), "kube-node-1": (2, 70, 58), "kube-node-2": (1, 1, 63),
                     "kube-node-3": (0, 0, 0)}


def test_headroom_forecast_and_prometheus(seed):
    from prometheus_client.parser import text_string_to_metric_families

    day = 86400
    start = time.time() - 10 * day
    for i in range(5):  # five workloads over the last ten days, as the CNI plugin records their time
        stamp = time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(start + i * day))
        assign(seed, "kube-node-0", f"w{i}", 1, f"timestamp={stamp}")
    before = time.time()
    data = json.loads(seed("ipam", "headroom", "--by", "rack", "-o", "json").out)
    after = time.time()
    rack0 = next(d for d in data["domains"] if d["domain"] == "0")
    assert rack0["fit"] == 251
    # 5 held addresses over the time since the first one: 0.5/day, so 251 last about 502 days
    assert 5 / (after - start + 1) * day <= rack0["rate_per_day"] <= 5 / (before - start - 1) * day
    assert rack0["days_left"] == pytest.approx(251 / rack0["rate_per_day"])
    assert next(d for d in data["domains"] if d["domain"] == "1")["rate_per_day"] is None

    r = seed("ipam", "headroom", "--by", "rack", "-o", "prometheus")
    assert r.code == 0 and r.out.startswith("# HELP topoipam_pool_addresses ")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(r.out) for s in fam.samples}
    # the names and labels a /metrics scrape serves (docs/metrics.md)
    assert samples[("topoipam_domain_workloads_fit", (("family", "4"), ("label", "rack"), ("value", "0")))] == 251
    assert samples[("topoipam_pool_addresses_in_use", (("family", "4"), ("pool", "rack-0-ippool")))] == 5
    assert samples[("topoipam_node_block_addresses_free", (("family", "4"), ("node", "kube-node-0")))] == 59
    assert ("topoipam_domain_exhaustion_days", (("family", "4"), ("label", "rack"), ("value", "1"))) not in samples
    assert not [name for name, _ in samples if name.startswith(("topoipam_node_allocations", "topoipam_drifted"))]


# ------------------------------------------------------------------ drift


def test_drift_after_relabel_and_after_recreate(seed):
    old = assign(seed, "kube-node-1", "pod-web-1", 1, "pod=web-1")[0]
    assign(seed, "kube-node-1", "tunnel", 1, "type=ipipTunnelAddress")  # not a workload
    assign(seed, "kube-node-2", "pod-db-0", 1, "pod=db-0")
    r = seed("ipam", "drift")
    assert r.code == 0 and r.out.splitlines()[-1].startswith("No drift"), r

    assert seed("label", "nodes", "kube-node-1", "rack=1", "--overwrite").code == 0
    r = seed("ipam", "drift")
    assert r.code == 4, r
    rows = [line for line in r.out.splitlines() if line.startswith("| ")]
    assert rows[1:] == [f"| default   | web-1    | kube-node-1 | {old} | rack-0-ippool | rack-1-ippool |"]
    data = json.loads(seed("ipam", "drift", "-o", "json").out)
    assert [(d["workload"], d["handle"], d["pool"], d["now_pools"]) for d in data] == \
        [("web-1", "pod-web-1", "rack-0-ippool", ["rack-1-ippool"])]
    # coverage is fine meanwhile: kube-node-1 is covered by rack-1's pool
    assert seed("ipam", "coverage").code == 0

    assert seed("ipam", "release", "--handle", "pod-web-1").code == 0
    new = assign(seed, "kube-node-1", "pod-web-1", 1, "pod=web-1")[0]
    assert new in ipaddress.ip_network("192.168.1.0/24")
    r = seed("ipam", "drift")
    assert r.code == 0 and json.loads(seed("ipam", "drift", "-o", "json").out) == [], r


@pytest.mark.parametrize("age", [0, 120])
def test_strict_affinity_room_only_in_empty_blocks_held_over_a_minute(seed, sqlite_url, age):
    """With strict affinity and a full pool, a node's only room is an empty block another node has
    held for over a minute (the allocator takes it over); a younger one is no room."""
    from topoipam.ipam import AssignRequest, IpamService
    from topoipam.store import open_store

    assert seed("ipam", "configure", "--strictaffinity=true").code == 0
    assign(seed, "kube-node-0", "a", 192)
    with open_store(sqlite_url) as store:  # the last block claimed `age` seconds ago
        IpamService(store, clock=lambda: time.time() - age).auto_assign(
            AssignRequest(node="kube-node-0", handle="b", num4=64, attrs={"node": "kube-node-0"}))
    assert seed("ipam", "release", "--handle", "b").code == 0
    r = seed("ipam", "coverage")
    e = seed("ipam", "explain", "--node", "kube-node-1", "-o", "json")
    nb = json.loads(e.out)[0]["next_block"]
    if age == 0:
        assert r.code == 4 and "Not covered: kube-node-1 (IPv4): no room: rack-0-ippool is full" in r.out, r
        assert nb["kind"] == "none" and "strict affinity is on" in nb["detail"]
        assert seed("ipam", "assign", "--node", "kube-node-1").code == 1
    else:
        assert r.code == 0, r
        assert "| kube-node-1 | IPv4   | yes     | rack-0-ippool   |       64 |" in r.out
        assert nb["kind"] == "reclaim" and nb["free"] == 64
        ip = assign(seed, "kube-node-1", "c")[0]
        assert ip in ipaddress.ip_network(nb["block"])
