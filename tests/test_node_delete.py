"""``delete node NAME`` decommissions the node as Calico's ``nodes.Delete`` does, on SQLite.

Its workloads' addresses, its tunnel addresses and its block affinities are released (empty
blocks freed, a block still holding another node's address left without affinity), what is
released is printed, and ``ipam check`` is clean afterwards. ``--dry-run`` prints the same and
writes nothing. A decommission that fails half way says what was released and what remains, keeps
the Node, and a second run completes it.
"""

from __future__ import annotations

import pytest

from conftest import sqlite_dump
from seed_yaml import NODES, NODES_YAML, RACK_POOLS
from test_cli_ipam import assign
from topoipam.ipam.blocks import list_affine_nets
from topoipam.store import open_store

TUNNEL = "ipip-tunnel-addr-kube-node-1"


@pytest.fixture
def racks(cli):
    cli("create", "-f", "-", stdin=NODES_YAML)
    for i, node in enumerate(NODES):
        cli("label", "nodes", node, f"rack={i // 2}")
    cli("create", "-f", "-", stdin=RACK_POOLS)
    return cli


@pytest.fixture
def busy_node(racks):
    """kube-node-1 with two workloads, a tunnel address, and one address kube-node-0 took in its block."""
    (a,) = assign(racks, "--node", "kube-node-1", "--handle", "w1", "--namespace", "default", "--attr", "pod=web")
    b = assign(racks, "--node", "kube-node-1", "--ipv4", "2", "--handle", "w2", "--namespace", "db", "--attr", "pod=pg")
    (t,) = assign(racks, "--node", "kube-node-1", "--handle", TUNNEL, "--attr", "type=ipipTunnelAddress")
    (kept,) = assign(racks, "--node", "kube-node-0", "--handle", "x", "--ip", "192.168.0.120")  # kube-node-1's block
    (mine,) = assign(racks, "--node", "kube-node-0", "--handle", "y")
    return {"released": [a, *b, t], "kept": [kept, mine]}


def affine(sqlite_url, node):
    with open_store(sqlite_url) as store:
        return [str(n) for v in (4, 6) for n in list_affine_nets(store, node, v)]


def test_dry_run_shows_the_decommission_and_writes_nothing(busy_node, racks, sqlite_url):
    before = sqlite_dump(sqlite_url)
    r = racks("delete", "node", "kube-node-1", "--dry-run")
    assert sqlite_dump(sqlite_url) == before
    assert r.code == 4, r
    a, b1, b2, t = busy_node["released"]
    assert r.out.startswith("Dry run: nothing was written.\nNode(kube-node-1) would be deleted\n"
                            "Node kube-node-1 holds 2 workload(s), 1 tunnel address(es) and 1 block affinity(ies): "
                            "releasing them\n"
                            f"Would release workload default/web, handle w1: {a}\n"
                            f"Would release workload db/pg, handle w2: {b1}, {b2}\n"
                            f"Would release tunnel address (ipipTunnelAddress), handle {TUNNEL}: {t}\n"
                            "Would release affinity of block 192.168.0.64/26: block left without affinity "
                            "(1 address(es) still allocated)\n"), r.out
    assert "block 192.168.0.64/26 (rack-0-ippool) loses its affinity to kube-node-1" in r.out


def test_delete_releases_addresses_tunnel_and_affinities_and_check_is_clean(busy_node, racks, sqlite_url):
    r = racks("delete", "node", "kube-node-1")
    assert r.code == 0, r
    lines = r.out.splitlines()
    assert lines[0].startswith("Node kube-node-1 holds 2 workload(s), 1 tunnel address(es)")
    assert lines[-1] == "Successfully deleted 1 'Node' resource(s)"
    assert len(lines) == 6
    for ip in busy_node["released"]:
        assert racks("ipam", "show", "--ip", ip).out == f"{ip} is not assigned\n"
    for ip in busy_node["kept"]:
        assert racks("ipam", "show", "--ip", ip).out.startswith(f"IP {ip} is in use")
    assert affine(sqlite_url, "kube-node-1") == []
    assert "kube-node-1" not in racks("get", "nodes").out
    check = racks("ipam", "check")
    assert "Found 0 IPs that are allocated in IPAM to nodes that no longer exist." in check.out
    # What remains is the address kube-node-0 borrowed (a problem before the delete too), in a block
    # now without affinity; once it is released the block goes and the check is clean.
    assert check.out.endswith("found 1 problems.\n") and "Found 1 IPs borrowed" in check.out
    assert racks("ipam", "release", "--handle", "x").code == 0
    check = racks("ipam", "check")
    assert check.code == 0 and "Found 1 IPAM blocks." in check.out, check.out


def test_a_node_holding_nothing_is_deleted_as_before(racks):
    r = racks("delete", "node", "kube-node-3")
    assert (r.code, r.out, r.err) == (0, "Successfully deleted 1 'Node' resource(s)\n", "")


def test_empty_affine_block_is_freed(racks, sqlite_url):
    assign(racks, "--node", "kube-node-2", "--handle", "only")
    (block,) = affine(sqlite_url, "kube-node-2")
    r = racks("delete", "node", "kube-node-2")
    assert f"Released affinity of block {block}: empty block freed\n" in r.out
    assert "Found 0 IPAM blocks." in racks("ipam", "check").out


def test_failure_half_way_says_what_remains_and_a_rerun_completes(busy_node, racks, sqlite_url):
    """The datastore goes away after the first release (the report callback closes the store the
    IPAM side uses): the error names what was released and what was not, the Node stays."""
    from topoipam.errors import DatastoreUnavailableError
    from topoipam.ipam.pool_blocks import PoolBlocks
    from topoipam.resources.service import ResourceService

    lines = []
    with open_store(sqlite_url) as store:
        ipam_store = open_store(sqlite_url)

        def report(line):
            lines.append(line)
            if line.startswith("Released "):
                ipam_store.close()

        [(_, _, err)] = ResourceService(store, PoolBlocks(ipam_store, report)).delete([("Node", "kube-node-1")])
    assert isinstance(err, DatastoreUnavailableError)
    assert "decommission of node kube-node-1 stopped half way: released 1 (workload default/web" in err.message
    assert "still held 3 (workload db/pg" in err.message and "affinity of block 192.168.0.64/26" in err.message
    assert "the Node was not deleted: run the delete again to complete it" in err.message
    a = busy_node["released"][0]
    assert racks("ipam", "show", "--ip", a).out == f"{a} is not assigned\n"
    assert "kube-node-1" in racks("get", "nodes").out
    r = racks("delete", "node", "kube-node-1")
    assert r.code == 0 and "holds 1 workload(s), 1 tunnel address(es) and 1 block affinity(ies)" in r.out
    assert affine(sqlite_url, "kube-node-1") == []
    for ip in busy_node["released"]:
        assert racks("ipam", "show", "--ip", ip).out == f"{ip} is not assigned\n"
    assert "Found 0 IPs that are allocated in IPAM to nodes that no longer exist." in racks("ipam", "check").out


def test_dry_run_of_a_missing_node_fails_as_the_delete_would(racks, sqlite_url):
    before = sqlite_dump(sqlite_url)
    r = racks("delete", "node", "ghost", "--dry-run")
    assert r.code == 1 and "resource does not exist: Node(ghost)" in r.err
    assert sqlite_dump(sqlite_url) == before
