"""Topology-domain block affinity (issue 11, docs/domain-affinity.md) through the real CLI on SQLite files.

Pools annotated ``topoipam.io/affinity-label: rack`` have blocks affine to ``rack=<value>``: every
node of a rack assigns from the rack's blocks and claims a new one only when they are full. The
rejected inputs leave the SQLite file's full dump unchanged.
"""

from __future__ import annotations

import ipaddress
import json

import pytest

from conftest import sqlite_dump
from topoipam.core.affinity import domain_holder
from topoipam.ipam import keys
from topoipam.store import open_store

RACK0 = [f"r0-node-{i}" for i in range(8)]


def pool_doc(rack, cidr, label="rack", block_size=26, name=None):
    annotation = f"  annotations:\n    topoipam.io/affinity-label: {label}\n" if label is not None else ""
    return (f"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: {name or f'rack-{rack}'}\n"
            f"{annotation}spec:\n  cidr: {cidr}\n  blockSize: {block_size}\n  nodeSelector: rack == \"{rack}\"\n")


def node_doc(name, rack=None):
    labels = f"  labels:\n    rack: \"{rack}\"\n" if rack is not None else ""
    return f"---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {name}\n{labels}"


@pytest.fixture
def racks(cli):
    """Eight nodes in rack 0, two in rack 1; a /24 per rack, blockSize 26, affinity-label rack."""
    nodes = "".join(node_doc(n, 0) for n in RACK0) + node_doc("r1-node-0", 1) + node_doc("r1-node-1", 1)
    assert cli("create", "-f", "-", stdin=nodes).code == 0
    for rack, cidr in ((0, "10.0.0.0/24"), (1, "10.0.1.0/24")):
        assert cli("create", "-f", "-", stdin=pool_doc(rack, cidr)).code == 0
    return cli


def assign(cli, node, n=1):
    r = cli("ipam", "assign", "--node", node, "--ipv4", str(n), "--handle", f"h.{node}.{assign.count}")
    assign.count += 1
    assert r.code == 0, r
    return [ipaddress.ip_address(line) for line in r.out.split()]


assign.count = 0


def block_rows(cli):
    """(cidr, in use, affinity) of each block row of ``ipam show --show-blocks``."""
    r = cli("ipam", "show", "--show-blocks")
    assert r.code == 0, r
    rows = []
    for line in r.out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == "Block":
            rows.append((cells[1], int(cells[3].split()[0]), cells[-1]))
    return rows


def affinity_keys(url):
    store = open_store(url)
    try:
        return [r.key for r in store.list(keys.ROOT) if "/block/" in r.key and "/assignment/" not in r.key]
    finally:
        store.close()


def test_eight_nodes_of_a_rack_share_one_block(racks, sqlite_url):
    held = {n: [ip for _ in range(8) for ip in assign(racks, n)] for n in RACK0}
    addresses = [ip for ips in held.values() for ip in ips]
    assert len(set(addresses)) == 64
    [block] = {ipaddress.ip_network(f"{ip}/26", strict=False) for ip in addresses}  # exactly one block
    assert block.subnet_of(ipaddress.ip_network("10.0.0.0/24"))
    assert block_rows(racks) == [(str(block), 64, "rack=0")]
    assert affinity_keys(sqlite_url) == [keys.holder_key(domain_holder("rack", "0"), block)]
    borrowed = racks("ipam", "show", "--show-borrowed")
    assert borrowed.code == 0 and "10.0.0." not in borrowed.out
    check = racks("ipam", "check")
    assert check.code == 0, check
    assert "Found 0 IPs borrowed" in check.out

    [ip65] = assign(racks, RACK0[3])  # the domain's block is full: a second block, of the same domain
    second = ipaddress.ip_network(f"{ip65}/26", strict=False)
    assert second != block and second.subnet_of(ipaddress.ip_network("10.0.0.0/24"))
    rows = block_rows(racks)
    assert sorted((cidr, aff) for cidr, _, aff in rows) == sorted([(str(block), "rack=0"), (str(second), "rack=0")])
    assert all(not cidr.startswith("10.0.1.") for cidr, _, _ in rows)  # the second rack's pool is untouched
    assert racks("ipam", "check").code == 0


def test_explain_and_coverage_name_the_domain_and_the_unlabelled_node(racks):
    assign(racks, RACK0[0])
    e = racks("ipam", "explain", "--node", RACK0[5])
    assert e.code == 0, e
    assert "of rack-0, affine to rack=0, with 63 free" in e.out
    assert racks("create", "-f", "-", stdin=node_doc("bare-node")).code == 0
    assert racks("create", "-f", "-", stdin=pool_doc("x", "10.0.9.0/24", name="everyone").replace(
        'nodeSelector: rack == "x"', "nodeSelector: all()")).code == 0
    c = racks("ipam", "coverage", "-o", "json")
    report = json.loads(c.out)
    bare = [n for n in report["nodes"] if n["node"] == "bare-node"]
    assert bare and not bare[0]["covered"]
    assert "node bare-node has no label rack" in bare[0]["reason"]
    r = racks("ipam", "assign", "--node", "bare-node")
    assert r.code == 1 and "blocks are affine to a rack domain and node bare-node has no label rack" in r.err


def test_strict_affinity_block_limit_counts_per_domain(racks):
    assert racks("ipam", "configure", "--strictaffinity=true", "--max-blocks-per-host=1").code == 0
    for n in RACK0:
        assign(racks, n, 8)
    r = racks("ipam", "assign", "--node", RACK0[0])
    assert r.code == 1, r
    assert "limit of 1 blocks reached for domain rack=0" in r.err
    assign(racks, "r1-node-0")  # another domain has its own limit
    assert [aff for _, _, aff in block_rows(racks)] == ["rack=0", "rack=1"]


def test_relabelled_node_keeps_its_addresses_and_takes_the_new_domains_blocks(racks):
    old = assign(racks, RACK0[7], 2)
    assert racks("label", "nodes", RACK0[7], "rack=1", "--overwrite").code == 0
    drift = racks("ipam", "drift", "-o", "json")
    assert drift.code == 4, drift  # its running addresses stay, and show as drift
    assert sorted(d["ip"] for d in json.loads(drift.out)) == sorted(str(ip) for ip in old)
    [new] = assign(racks, RACK0[7])
    assert new in ipaddress.ip_network("10.0.1.0/24")
    assert sorted(aff for _, _, aff in block_rows(racks)) == ["rack=0", "rack=1"]
    assert racks("ipam", "release", "--ip", str(old[0])).code == 0  # rack 0 still has nodes: the block stays
    assert len(block_rows(racks)) == 2


def test_single_pool_across_racks_drift_after_relabel(cli):
    nodes = node_doc("a", 0) + node_doc("b", 1)
    assert cli("create", "-f", "-", stdin=nodes).code == 0
    doc = pool_doc(0, "10.2.0.0/24", name="all-racks").replace('nodeSelector: rack == "0"', "nodeSelector: all()")
    assert cli("create", "-f", "-", stdin=doc).code == 0
    [ip] = assign(cli, "a")
    assert cli("label", "nodes", "a", "rack=1", "--overwrite").code == 0
    drift = json.loads(cli("ipam", "drift", "-o", "json").out)
    assert [d["ip"] for d in drift] == [str(ip)]  # still in a pool selecting it, but in rack 0's block
    [again] = assign(cli, "b")
    [moved] = assign(cli, "a")  # now of rack 1: the rack-1 block b claimed
    assert ipaddress.ip_network(f"{moved}/26", strict=False) == ipaddress.ip_network(f"{again}/26", strict=False)


def test_deleting_the_last_node_of_a_domain_releases_its_empty_blocks(racks, sqlite_url):
    ips = assign(racks, "r1-node-0", 1)
    assert racks("ipam", "release", "--ip", str(ips[0])).code == 0
    assert [aff for _, _, aff in block_rows(racks)] == ["rack=1"]  # empty, but rack 1 has nodes: kept
    r = racks("delete", "node", "r1-node-0")
    assert r.code == 0 and "Released empty block" not in r.out
    assert [aff for _, _, aff in block_rows(racks)] == ["rack=1"]  # r1-node-1 still carries rack=1
    r = racks("delete", "node", "r1-node-1")
    assert r.code == 0 and "Released empty block 10.0.1." in r.out and "of a domain no other node carries" in r.out
    assert block_rows(racks) == []
    assert affinity_keys(sqlite_url) == []
    assert racks("ipam", "check").code == 0


def test_decommissioning_the_last_node_releases_its_addresses_then_the_domains_blocks(racks):
    assign(racks, "r1-node-0", 2)
    assert racks("delete", "node", "r1-node-1").code == 0
    r = racks("delete", "node", "r1-node-0")  # Calico's decommission: its workloads, then the rack's block
    assert r.code == 0, r
    assert "Released empty block 10.0.1." in r.out
    assert all(not cidr.startswith("10.0.1.") for cidr, _, _ in block_rows(racks))


def test_a_domain_block_with_addresses_outlives_its_nodes_and_check_says_so(racks):
    [ip] = assign(racks, "r1-node-0")
    assert racks("label", "nodes", "r1-node-0", "rack=0", "--overwrite").code == 0  # leaves rack 1, keeps ip
    r = racks("delete", "node", "r1-node-1")  # rack 1's last node: its block still holds ip
    assert r.code == 0 and "Released empty block" not in r.out
    assert [aff for _, _, aff in block_rows(racks)] == ["rack=1"]
    check = racks("ipam", "check", "--show-problem-ips")
    assert check.code == 4
    assert "affine to rack=1, which no registered node carries (1 addresses in use)" in check.out
    assert racks("ipam", "release", "--ip", str(ip)).code == 0  # its last address: the block goes
    assert block_rows(racks) == []


def test_split_keeps_the_domain(racks):
    [first] = assign(racks, RACK0[0])
    r = racks("ipam", "split", "2", "--name", "rack-0")
    assert r.code == 0, r
    listed = json.loads(racks("get", "ippool", "-o", "json").out)
    children = [p for p in listed["items"] if p["metadata"]["name"].startswith("split-rack-0-")]
    assert len(children) == 2
    assert all(p["metadata"]["annotations"] == {"topoipam.io/affinity-label": "rack"} for p in children)
    [ip] = assign(racks, RACK0[1])  # assigns from the domain's block, now in a split child
    assert ipaddress.ip_network(f"{ip}/26", strict=False) == ipaddress.ip_network(f"{first}/26", strict=False)
    assert racks("ipam", "check").code == 0


@pytest.mark.parametrize("label, reason", [
    ("not a label", "the affinity label must be a node label key"),
    ("", "the affinity label must be a node label key"),
    ("-rack", "the affinity label must be a node label key"),
])
def test_an_invalid_affinity_label_is_rejected(cli, sqlite_url, label, reason):
    doc = pool_doc(0, "10.0.0.0/24", label=json.dumps(label))
    assert cli("create", "-f", "-", stdin=node_doc("n", 0)).code == 0
    before = sqlite_dump(sqlite_url)
    r = cli("create", "-f", "-", stdin=doc)
    assert (r.code, r.out) == (2, ""), r
    assert reason in r.err and "Traceback" not in r.err
    assert sqlite_dump(sqlite_url) == before


def test_a_prefixed_label_key_is_accepted(cli):
    assert cli("create", "-f", "-", stdin=node_doc("z")).code == 0
    assert cli("label", "nodes", "z", "topology.kubernetes.io/zone=west").code == 0
    doc = pool_doc(0, "10.3.0.0/24", label="topology.kubernetes.io/zone").replace(
        'nodeSelector: rack == "0"', "nodeSelector: all()")
    assert cli("create", "-f", "-", stdin=doc).code == 0
    [ip] = assign(cli, "z")
    assert [aff for _, _, aff in block_rows(cli)] == ["topology.kubernetes.io/zone=west"]
    assert cli("ipam", "check").code == 0


def test_the_affinity_label_is_fixed_while_the_pool_has_blocks(racks, sqlite_url):
    assign(racks, RACK0[0])
    for argv, stdin in ((("apply", "-f", "-"), pool_doc(0, "10.0.0.0/24", label="zone")),
                        (("apply", "-f", "-"), pool_doc(0, "10.0.0.0/24", label=None)),
                        (("patch", "ippool", "rack-0", "-p",
                          '{"metadata":{"annotations":{"topoipam.io/affinity-label":"zone"}}}'), None)):
        before = sqlite_dump(sqlite_url)
        r = racks(*argv, stdin=stdin)
        assert (r.code, r.out) == (2, ""), r
        assert "the annotation topoipam.io/affinity-label cannot be changed while the pool has blocks" in r.err
        assert sqlite_dump(sqlite_url) == before
    # a pool without blocks may change it
    assert racks("apply", "-f", "-", stdin=pool_doc(1, "10.0.1.0/24", label="zone")).code == 0
    assert racks("apply", "-f", "-", stdin=pool_doc(1, "10.0.1.0/24", label=None)).code == 0


def test_a_domain_has_no_default_block_limit_but_a_configured_one(cli):
    """Calico's default of 20 blocks per host is no bound for a rack sharing its blocks: without a
    configured limit a domain claims what it needs; a configured one counts per domain."""
    assert cli("create", "-f", "-", stdin=node_doc("a", 0) + node_doc("b", 0)).code == 0
    assert cli("create", "-f", "-", stdin=pool_doc(0, "10.4.0.0/24", block_size=30)).code == 0
    for node in ("a", "b"):
        assert len(assign(cli, node, 44)) == 44  # 88 addresses: 22 blocks of 4
    rows = block_rows(cli)
    assert len(rows) == 22 and {aff for _, _, aff in rows} == {"rack=0"}
    assert cli("ipam", "configure", "--strictaffinity=true", "--max-blocks-per-host=22").code == 0
    r = cli("ipam", "assign", "--node", "a")
    assert r.code == 1 and "limit of 22 blocks reached for domain rack=0" in r.err, r


def test_a_claim_landing_after_the_label_check_fails_the_change(cli, sqlite_url):
    """The label is checked against the pool's blocks, then written: a block claimed in between
    moves the claimed-block summary the change's commit Checks, so the change is re-planned and
    refused instead of landing on a pool that now has blocks."""
    from topoipam.ipam import AssignRequest, IpamService
    from topoipam.ipam.pool_blocks import PoolBlocks
    from topoipam.resources.service import ResourceService
    from topoipam.model.codec import decode_documents

    assert cli("create", "-f", "-", stdin=node_doc("a", 0)).code == 0
    assert cli("create", "-f", "-", stdin=pool_doc(0, "10.5.0.0/24", label=None)).code == 0
    store = open_store(sqlite_url)
    try:
        class ClaimInBetween(PoolBlocks):
            claimed = False

            def block_sizes_in(self, net):  # the check finds no block; then a node claims one
                sizes = super().block_sizes_in(net)
                if not self.claimed:
                    self.claimed = True
                    IpamService(self.store).auto_assign(AssignRequest(node="a", handle="late"))
                return sizes

        [changed] = decode_documents(pool_doc(0, "10.5.0.0/24", label="rack"), "test")
        with pytest.raises(Exception, match="cannot be changed while the pool has blocks"):
            ResourceService(store, ClaimInBetween(store)).apply([changed])
    finally:
        store.close()
    assert "topoipam.io/affinity-label" not in cli("get", "ippool", "rack-0", "-o", "yaml").out


def test_the_map_shows_domain_blocks_held_by_the_rack_and_not_borrowed(racks, sqlite_url, tmp_path):
    from topoipam.ipam.addrmap import address_map

    for n in RACK0[:3]:
        assign(racks, n, 2)
    out = tmp_path / "map.svg"
    r = racks("ipam", "map", "-o", str(out), "--by", "rack")
    assert r.code == 0, r
    svg = out.read_text()
    assert "rack=0" in svg and "borrowed by other nodes" not in svg
    store = open_store(sqlite_url)
    try:
        pools = {p.name: p for p in address_map(store, "rack")}
    finally:
        store.close()
    [block] = pools["rack-0"].blocks
    assert (block.holder, block.domain, block.in_use, block.borrowed) == ("rack=0", "0", 6, 0)


def test_headroom_gives_a_shared_pools_domain_blocks_to_their_domain(cli):
    assert cli("create", "-f", "-", stdin=node_doc("a", 0) + node_doc("b", 1)).code == 0
    doc = pool_doc(0, "10.6.0.0/24", name="all-racks").replace('nodeSelector: rack == "0"', "nodeSelector: all()")
    assert cli("create", "-f", "-", stdin=doc).code == 0
    assign(cli, "a", 3)
    assign(cli, "b", 1)
    r = cli("ipam", "headroom", "--by", "rack", "-o", "json")
    assert r.code == 0, r
    rows = {d["domain"]: d for d in json.loads(r.out)["domains"]}
    assert (rows["0"]["in_use"], rows["0"]["blocks_claimed"], rows["0"]["total"]) == (3, 1, 64)
    assert (rows["1"]["in_use"], rows["1"]["blocks_claimed"], rows["1"]["total"]) == (1, 1, 64)


def test_gc_judges_a_domain_blocks_addresses_by_their_node_never_by_the_domain(racks, sqlite_url):
    """A domain block names no node: ``ipam gc`` releases an address in it only when the node its
    ``node`` attribute names is gone, not when the domain has no node left (the node may have been
    relabelled out of it and keeps its running addresses)."""
    from topoipam.ipam import AssignRequest, IpamService
    from topoipam.resources.keys import resource_key
    from topoipam.store.base import Delete

    [labelled] = assign(racks, "r1-node-0")  # the CLI writes node=r1-node-0
    store = open_store(sqlite_url)
    try:  # the library without attributes: the allocation names no node, its block only rack=1
        [bare] = IpamService(store).auto_assign(AssignRequest(node="r1-node-1", handle="bare", num4=1)).ipv4
    finally:
        store.close()
    assert racks("label", "nodes", "r1-node-0", "rack=0", "--overwrite").code == 0
    assert racks("label", "nodes", "r1-node-1", "rack=0", "--overwrite").code == 0  # no node carries rack=1 now
    assert [aff for _, _, aff in block_rows(racks)] == ["rack=1"]
    r = racks("ipam", "gc", "--grace", "0s")
    assert r.code == 0, r
    assert r.out == "Released 0; 0 skipped (changed since read); 0 failed; 0 kept within the grace period.\n"

    store = open_store(sqlite_url)
    try:  # r1-node-0 vanishes behind topoipam's back (no decommission)
        rec = store.get(resource_key("Node", "r1-node-0"))
        store.commit([Delete(rec.key, rec.revision)])
    finally:
        store.close()
    r = racks("ipam", "gc", "--grace", "0s")
    assert r.code == 0, r
    assert r.out.startswith(f"released: address {labelled} held by handle ") and \
        "node-gone, node r1-node-0 no longer exists" in r.out, r
    assert f"address {bare.ip}" not in r.out
    assert "is in use" in racks("ipam", "show", "--ip", str(bare.ip)).out


def test_metrics_count_a_racks_nodes_in_its_domain_blocks_as_not_borrowed(racks, sqlite_url):
    """``topoipam_node_borrowed_addresses`` follows ``ipam show --show-borrowed``: an address in a
    domain block is borrowed only once its node is no longer of the domain."""
    from topoipam.ipam.insights import World
    from topoipam.metrics.families import compute

    assign(racks, RACK0[0], 2)
    assign(racks, RACK0[1])
    assert racks("label", "nodes", RACK0[1], "rack=1", "--overwrite").code == 0  # its address stays in rack 0's block
    store = open_store(sqlite_url)
    try:
        families = {f.name: f for f in compute(World(store, None), [], 0.0)}
    finally:
        store.close()
    samples = {s.labels["node"]: s.value for s in families["topoipam_node_borrowed_addresses"].samples
               if s.labels["family"] == "4" and s.labels["node"] in RACK0[:2]}
    assert samples == {RACK0[0]: 0, RACK0[1]: 1}
    shown = racks("ipam", "show", "--show-borrowed")
    assert shown.code == 0 and RACK0[1] in shown.out and RACK0[0] not in shown.out


def test_dry_run_predicts_a_domains_affinity_loss(racks):
    """--dry-run understands domains: deleting the last node of rack 1 frees the rack's empty block
    (now); relabelling the last node out of a rack whose block holds addresses loses it once empty."""
    import json

    ips = assign(racks, "r1-node-0", 1)
    assert racks("ipam", "release", "--ip", str(ips[0])).code == 0
    assert racks("delete", "node", "r1-node-1").code == 0
    r = racks("delete", "node", "r1-node-0", "--dry-run", "-o", "json")
    assert r.code == 4, r
    [loss] = json.loads(r.out)["impact"]["affinities"]
    assert (loss["node"], loss["when"], loss["outcome"]) == ("rack=1", "now", "empty block freed")
    assert loss["block"].startswith("10.0.1.")
    assign(racks, "r1-node-0", 1)
    r = racks("label", "nodes", "r1-node-0", "rack=0", "--overwrite", "--dry-run", "-o", "json")
    assert r.code == 4, r
    [loss] = json.loads(r.out)["impact"]["affinities"]
    assert (loss["node"], loss["when"]) == ("rack=1", "once empty") and "no node carries rack=1" in loss["outcome"]
