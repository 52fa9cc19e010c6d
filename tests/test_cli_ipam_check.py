"""``topoipam ipam check`` and ``ipam release --from-report`` end to end on SQLite.

Problems are made the way they arise (a pool deleted under a non-empty block,
a borrowed address) or, for records that only a crash, a bug or another tool
could leave behind, by writing the raw records with the datastore contract.
Leaks of a node that is gone are made by removing the Node record directly
(as a tool writing the datastore behind topoipam's back would): ``delete node``
itself decommissions the node and leaves nothing behind (test_node_delete.py).
"""

from __future__ import annotations

import json

import pytest

from conftest import sqlite_dump
from test_cli_ipam import NODES, RACK_POOL, assign, unchanged
from topoipam.ipam import keys
from topoipam.store import open_store
from topoipam.store.counting import CountingStore


@pytest.fixture
def seed(cli):
    cli("create", "-f", "-", stdin=NODES)
    for i in range(4):
        cli("label", "nodes", f"kube-node-{i}", f"rack={i // 2}")
    for rack in (0, 1):
        cli("create", "-f", "-", stdin=RACK_POOL.format(rack=rack))
    return cli


@pytest.fixture
def raw(sqlite_url):
    store = open_store(sqlite_url)
    try:
        yield store
    finally:
        store.close()


def remove_node_record(raw, name):
    """The Node record gone without decommission: its workloads' addresses and affinities stay (leaks)."""
    from topoipam.resources.keys import resource_key

    rec = raw.get(resource_key("Node", name))
    raw.delete(rec.key, rec.revision)


CLEAN = """\
Checking IPAM for inconsistencies...

Loading all IPAM blocks...
Found 2 IPAM blocks.
 IPAM block 192.168.0.64/26 affinity=host:kube-node-0:
 IPAM block 192.168.1.192/26 affinity=host:kube-node-2:
IPAM blocks record 3 allocations.

Loading all IPAM pools...
  192.168.0.0/24
  192.168.1.0/24
Found 2 active IP pools.

Loading all nodes.
Found 4 nodes.

Loading all handles
Found 2 handles.
Looking for top (up to 20) nodes by allocations...
  kube-node-2 has 2 allocations
  kube-node-0 has 1 allocations
Node with most allocations has 2; median is 1

Scanning for IPs allocated to nodes that no longer exist...
Found 0 IPs that are allocated in IPAM to nodes that no longer exist.
Scanning for IPs in blocks outside every IP pool...
Found 0 IPs that are allocated in blocks outside every IP pool.
Scanning for borrowed IPs...
Found 0 IPs borrowed from blocks affine to another node (or to none).

Scanning for IPAM handles with no matching IPs...
Found 0 handles with no matching IPs (and 2 handles with matches).
Scanning for IPs with missing handle...
Found 0 handles mentioned in blocks with no matching handle resource.
Scanning handle counts, block affinities and claimed-block summaries...
Found 0 records that disagree with the blocks.
Check complete; found 0 problems.
"""


def test_clean_check_prints_calicoctls_progress_and_exits_0(seed, sqlite_url):
    assign(seed, "--node", "kube-node-0", "--handle", "a")
    assign(seed, "--node", "kube-node-2", "--ipv4", "2", "--handle", "b")
    before = sqlite_dump(sqlite_url)
    r = seed("ipam", "check")
    assert (r.code, r.out, r.err) == (0, CLEAN, "")
    assert sqlite_dump(sqlite_url) == before  # a check writes nothing


def test_empty_datastore_is_clean(cli):
    r = cli("ipam", "check")
    assert r.code == 0 and "Found 0 IPAM blocks." in r.out and r.out.endswith("found 0 problems.\n")
    assert "Node with most allocations" not in r.out


def test_deleted_node_leaks_report_and_release_from_report(seed, raw, tmp_path):
    assign(seed, "--node", "kube-node-0", "--handle", "stays", "--namespace", "default", "--attr", "pod=a")
    assign(seed, "--node", "kube-node-1", "--ipv4", "2", "--handle", "gone", "--namespace", "default",
           "--attr", "pod=b")
    remove_node_record(raw, "kube-node-1")
    report = tmp_path / "report.json"
    r = seed("ipam", "check", "--show-problem-ips", "-o", str(report))
    assert r.code == 4
    gone = [line for line in r.out.splitlines() if "leaked" in line]
    assert len(gone) == 2 and all("(node kube-node-1 no longer exists); attrs Main:gone "
                                  "Extra:namespace=default,node=kube-node-1,pod=b" in line for line in gone)
    assert "Found 2 IPs that are allocated in IPAM to nodes that no longer exist.\n" in r.out
    assert r.out.endswith("Check complete; found 2 problems.\n")
    assert "leaked" not in seed("ipam", "check").out  # only with --show-problem-ips

    data = json.loads(report.read_text())
    assert list(data)[:6] == ["version", "clusterGUID", "datastoreLocked", "clusterInformationRevision",
                              "clusterType", "allocations"]
    assert "leakedHandles" not in data
    entries = [e for es in data["allocations"].values() for e in es]
    assert sorted((e["handle"], e["inUse"]) for e in entries) == [("gone", False), ("gone", False), ("stays", True)]
    leaked = next(e for e in entries if e["handle"] == "gone")
    assert set(leaked) == {"ip", "handle", "sequenceNumber", "pod", "namespace", "node", "creationTimestamp",
                           "inUse", "owners"} - {"creationTimestamp"}
    assert leaked["node"] == "kube-node-1" and isinstance(leaked["sequenceNumber"], int)

    r = seed("ipam", "release", "--from-report", str(report))
    assert (r.code, r.err) == (0, "")
    assert r.out == ("Releasing 2 old IPs...\nReleased 2 IPs successfully\n"
                     "Report didn't contain any handles to clean up.\n")
    assert seed("ipam", "check").code == 0
    assert seed("get", "wep").out.splitlines()[1].split()[0] == "a"


def test_release_from_report_is_fenced_by_handle_and_sequence_number(seed, raw, tmp_path):
    (ip1,) = assign(seed, "--node", "kube-node-1", "--handle", "old1")
    (ip2,) = assign(seed, "--node", "kube-node-1", "--handle", "old2")
    remove_node_record(raw, "kube-node-1")
    report = tmp_path / "r.json"
    assert seed("ipam", "check", "-o", str(report)).code == 4
    # After the report: ip1 released and given to a new workload (other handle, on a live node);
    # ip2 released and given again under the same handle (new sequence number).
    seed("ipam", "release", "--ip", ip1)
    assign(seed, "--node", "kube-node-0", "--ip", ip1, "--handle", "new1")
    seed("ipam", "release", "--ip", ip2)
    seed("create", "-f", "-", stdin=NODES.split("---\n")[2])  # kube-node-1 comes back
    assign(seed, "--node", "kube-node-1", "--ip", ip2, "--handle", "old2")
    r = seed("ipam", "release", "--from-report", str(report))
    assert r.out == ("Releasing 2 old IPs...\nReleased 0 IPs successfully\n"
                     "2 addresses marked as leaked in the report had already been cleaned up.\n"
                     "Report didn't contain any handles to clean up.\n")
    assert "Handle ID: new1" in seed("ipam", "show", "--ip", ip1).out
    assert "Handle ID: old2" in seed("ipam", "show", "--ip", ip2).out


def _write_handle(raw, handle, counts):
    raw.create(keys.handle_key(handle), json.dumps({"block": counts, "deleted": False}).encode())


def test_leaked_handle_reported_with_revision_and_deleted_if_unchanged(seed, raw, tmp_path):
    assign(seed, "--node", "kube-node-0", "--handle", "real")
    _write_handle(raw, "ghost", {"192.168.0.64/26": 1})
    _write_handle(raw, "ghost2", {"192.168.0.64/26": 1})
    report = tmp_path / "r.json"
    r = seed("ipam", "check", "--show-problem-ips", "-o", str(report))
    assert r.code == 4
    assert "  ghost doesn't have any active IPs.\n  ghost2 doesn't have any active IPs.\n" in r.out
    assert "Found 2 handles with no matching IPs (and 1 handles with matches).\n" in r.out
    data = json.loads(report.read_text())
    revision = raw.get(keys.handle_key("ghost")).revision
    assert data["leakedHandles"][0] == {"ID": "ghost", "UID": None, "Revision": str(revision)}
    # ghost2 changes after the report: it must be skipped
    rec = raw.get(keys.handle_key("ghost2"))
    raw.update(rec.key, rec.value, rec.revision)
    r = seed("ipam", "release", "--from-report", str(report))
    assert r.out == ("Report didn't contain any leaked IPs to clean up.\nDeleting 2 handles...\n"
                     "Key: '.' = Deleted OK; 'x' = skip, handle missing/changed.\n.x\n"
                     "Released 1 handles; 1 skipped; 0 errors.\n")
    assert raw.get(keys.handle_key("ghost")) is None and raw.get(keys.handle_key("ghost2")) is not None


def test_several_reports_release_only_what_all_of_them_saw(seed, raw, tmp_path):
    (a,) = assign(seed, "--node", "kube-node-1", "--handle", "a")
    remove_node_record(raw, "kube-node-1")
    first = tmp_path / "1.json"
    seed("ipam", "check", "-o", str(first))
    seed("create", "-f", "-", stdin=NODES.split("---\n")[2])
    (b,) = assign(seed, "--node", "kube-node-1", "--handle", "b", "--pool", "rack-0-ippool")  # no labels now
    remove_node_record(raw, "kube-node-1")
    second = tmp_path / "2.json"
    seed("ipam", "check", "-o", str(second))
    r = seed("ipam", "release", "--from-report", str(first), "--from-report", str(second))
    assert r.out.startswith("Releasing 1 old IPs...\nReleased 1 IPs successfully\n")
    assert seed("ipam", "show", "--ip", a).out == f"{a} is not assigned\n"
    assert seed("ipam", "show", "--ip", b).out.startswith(f"IP {b} is in use")


def test_missing_handle_orphan_block_and_borrowed_address_are_problems(seed, raw):
    assign(seed, "--node", "kube-node-0", "--handle", "nohandle")
    rec = raw.get(keys.handle_key("nohandle"))
    raw.delete(rec.key, rec.revision)
    r = seed("ipam", "check", "--show-problem-ips")
    assert r.code == 4
    assert "  nohandle is in use in a block but doesn't exist.\n" in r.out
    assert "Found 1 handles mentioned in blocks with no matching handle resource.\n" in r.out
    assert r.out.endswith("found 1 problems.\n")

    assign(seed, "--node", "kube-node-2", "--ip", "192.168.0.100", "--handle", "lent")  # node-0's block
    r = seed("ipam", "check", "--show-problem-ips")
    assert ("  192.168.0.100 of node kube-node-2 is borrowed from block 192.168.0.64/26 "
            "(affinity host:kube-node-0); attrs Main:lent Extra:node=kube-node-2\n") in r.out
    assert "Found 1 IPs borrowed from blocks affine to another node (or to none).\n" in r.out
    assert r.out.endswith("found 2 problems.\n")

    assign(seed, "--node", "kube-node-2", "--handle", "rack1")
    seed("delete", "ippool", "rack-1-ippool")  # its non-empty block stays, outside every pool
    r = seed("ipam", "check", "--show-problem-ips")
    assert "  192.168.1.192 in block 192.168.1.192/26 is not in any IP pool; attrs Main:rack1" in r.out
    assert "Found 1 IPs that are allocated in blocks outside every IP pool.\n" in r.out
    # the block lost its affinity when its pool went, so the address is also borrowed (from no one)
    assert "(affinity <none>)" in r.out
    assert r.out.endswith("found 4 problems.\n") and r.code == 4


def test_inconsistent_records_found_by_the_service_are_problems(seed, raw):
    assign(seed, "--node", "kube-node-0", "--handle", "h")
    rec = raw.get(keys.handle_key("h"))
    raw.update(rec.key, json.dumps({"block": {"192.168.0.64/26": 3}, "deleted": False}).encode(), rec.revision)
    r = seed("ipam", "check", "--show-problem-ips")
    assert r.code == 4
    assert "Found 1 records that disagree with the blocks.\n" in r.out
    assert "  handle h counts" in r.out


def test_a_damaged_block_is_a_problem_not_a_traceback(seed, raw):
    """Records only a bug or a crash could leave: a block whose ordinals are not each either allocated
    or free exactly once (a lost ordinal would never be handed out again; one in both lists could be
    handed out twice), or whose allocation names no attribute entry."""
    assign(seed, "--node", "kube-node-0", "--handle", "h", "--ipv4", "3")
    key = keys.block_key(__import__("ipaddress").ip_network("192.168.0.64/26"))
    rec = raw.get(key)
    doc = json.loads(rec.value)
    assert doc["allocations"][:4] == [0, 0, 0, None] and doc["unallocated"][:2] == [3, 4]
    doc["unallocated"] = [0, 4, *doc["unallocated"][2:], 5, 99]  # 0 also allocated, 3 lost, 5 twice, 99 outside
    doc["allocations"][2] = 7  # no entry 7
    raw.update(key, json.dumps(doc).encode(), rec.revision)
    r = seed("ipam", "check", "--show-problem-ips")
    assert r.code == 4 and "Traceback" not in r.err, r.err
    for text in ("ordinal 3 is neither allocated nor free", "ordinal 0 is allocated and also in the free list",
                 "ordinal 5 is in the free list more than once", "ordinal 99 is in the free list but not in the block",
                 "ordinal 2 is allocated to an attribute entry that does not exist"):
        assert f"  block 192.168.0.64/26: {text}\n" in r.out
    assert "  handle h counts {'192.168.0.64/26': 3} but blocks hold {'192.168.0.64/26': 2}\n" in r.out
    assert "Found 6 records that disagree with the blocks.\n" in r.out


@pytest.mark.parametrize("content,message", [
    (None, "cannot read report"),
    ("{not json", "is not valid JSON"),
    ('{"version": "x"}', "is not an 'ipam check -o' report"),
    ('{"allocations": {"10.0.0.1": [{"inUse": false}]}}', "malformed allocation or handle entry"),
    ('{"allocations": {}, "leakedHandles": [{"ID": "h", "Revision": "x"}]}', "malformed allocation or handle entry"),
])
def test_bad_report_is_refused_and_changes_nothing(seed, sqlite_url, tmp_path, content, message):
    assign(seed, "--node", "kube-node-0", "--handle", "keep")
    path = tmp_path / "report.json"
    if content is not None:
        path.write_text(content)
    unchanged(seed, sqlite_url, ["ipam", "release", "--from-report", str(path)], 2, message)


def test_report_to_unwritable_path_fails(seed, tmp_path):
    r = seed("ipam", "check", "-o", str(tmp_path / "no" / "such" / "dir.json"))
    assert r.code == 1 and "cannot write report" in r.err


class _AssignsDuringCheck(CountingStore):
    """The real SQLite store; just before (or just after) the check lists the handles, a workload gets
    an address through another connection (a CNI ADD landing mid-check). Counts block listings."""

    def __init__(self, url, when):
        super().__init__(open_store(url))
        self.url_, self.when = url, when
        self.block_listings = 0
        self.raced = False

    def list(self, prefix, *, start=None, limit=None):
        if prefix == keys.HANDLE_PREFIX and self.when == "before":
            self._race()
        out = super().list(prefix, start=start, limit=limit)
        if prefix == keys.HANDLE_PREFIX and self.when == "after":
            self._race()
        if prefix == keys.block_prefix(4):
            self.block_listings += 1
        return out

    def _race(self):
        from topoipam.ipam import AssignRequest, IpamService

        if not self.raced:
            self.raced = True
            other = open_store(self.url_)
            try:
                IpamService(other).auto_assign(AssignRequest(node="kube-node-0", handle="live-pod"))
            finally:
                other.close()


@pytest.mark.parametrize("when", ["before", "after"])
def test_check_mid_assignment_never_reports_the_live_handle_leaked(seed, sqlite_url, tmp_path, when):
    import argparse
    import io
    import types

    from topoipam.cli.ipam_check import run_check

    assign(seed, "--node", "kube-node-0", "--handle", "old-pod")
    store = _AssignsDuringCheck(sqlite_url, when)
    report = tmp_path / "report.json"
    try:
        ctx = types.SimpleNamespace(store=store, out=io.StringIO(), err=io.StringIO())
        run_check(argparse.Namespace(output=str(report), show_problem_ips=True), ctx)
    finally:
        store.close()
    assert store.raced
    leaked = [h["ID"] for h in json.loads(report.read_text()).get("leakedHandles", [])]
    assert "live-pod" not in leaked
    assert store.block_listings == 1  # one listing serves block usage, allocations and the check
    assert seed("ipam", "release", "--from-report", str(report)).code == 0
    with open_store(sqlite_url) as raw:
        assert raw.get(keys.handle_key("live-pod")) is not None
