"""``--dry-run`` on create, apply, replace, delete, patch and label, end to end on SQLite.

Each scenario is built through the public CLI (the seed's racks: kube-node-0..3 labelled
rack=0,0,1,1, one pool per rack, workloads assigned). The dry run's prediction is then checked
against what ``ipam coverage`` and ``ipam drift`` report AFTER the same command is run for real:
the same sets. A dry run never changes the file (full dump before and after).
"""

from __future__ import annotations

import json

import pytest

from conftest import sqlite_dump
from seed_yaml import NODES, NODES_YAML, RACK_POOL, RACK_POOLS
from test_cli_ipam import assign, unchanged
from topoipam.ipam.blocks import list_affine_nets
from topoipam.store import open_store

NODE4 = "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: kube-node-4\n  labels: {rack: \"2\"}\n"


@pytest.fixture
def racks(cli):
    """The seed's topology with one workload per node (two on kube-node-0)."""
    assert cli("create", "-f", "-", stdin=NODES_YAML).code == 0
    for i, node in enumerate(NODES):
        assert cli("label", "nodes", node, f"rack={i // 2}").code == 0
    assert cli("create", "-f", "-", stdin=RACK_POOLS).code == 0
    for i, node in enumerate(NODES):
        assign(cli, "--node", node, "--handle", f"w{i}", "--namespace", "default", "--attr", f"pod=pod-{i}")
    assign(cli, "--node", "kube-node-0", "--handle", "w0b", "--namespace", "default", "--attr", "pod=pod-0b")
    return cli


def dry(cli, sqlite_url, *argv, stdin=None):
    """The dry run's JSON report and exit code; the file must be exactly as before."""
    before = sqlite_dump(sqlite_url)
    r = cli(*argv, "--dry-run", "-o", "json", stdin=stdin)
    assert sqlite_dump(sqlite_url) == before, "a dry run wrote to the datastore"
    assert r.code in (0, 4), r
    data = json.loads(r.out)
    assert data["impact"]["found"] is (r.code == 4)
    return data, r.code


def uncovered(items):
    return {(u["node"], u["version"]) for u in items}


def drifted(items):
    return {(d["handle"], d["ip"], d["node"], d["pool"]) for d in items}


def observed(cli):
    """What coverage and drift say now: (uncovered pairs, pools selecting no node, drifted workloads)."""
    cov = json.loads(cli("ipam", "coverage", "-o", "json").out)
    drift = json.loads(cli("ipam", "drift", "-o", "json").out)
    return uncovered(n for n in cov["nodes"] if not n["covered"]), set(cov["unused_pools"]), drifted(drift)


def predicted_then_made(cli, sqlite_url, *argv, stdin=None):
    """Dry-run ``argv``, run it for real, and check the prediction against coverage and drift."""
    before = observed(cli)
    data, code = dry(cli, sqlite_url, *argv, stdin=stdin)
    real = cli(*argv, stdin=stdin)
    assert real.code == 0, real
    after = observed(cli)
    predicted = (uncovered(data["after"]["uncovered"]), set(data["after"]["unused_pools"]),
                 drifted(data["after"]["drift"]))
    assert predicted == after
    impact = data["impact"]
    # the impact is what the change adds
    assert uncovered(impact["uncovered"]) == after[0] - before[0]
    assert set(impact["unused_pools"]) == after[1] - before[1]
    assert drifted(impact["drift"]) == after[2] - before[2]
    return data, code


def affinities(sqlite_url, node):
    """The node's affine IPv4 blocks, as stored."""
    with open_store(sqlite_url) as store:
        return {str(net) for net in list_affine_nets(store, node, 4)}


def test_creating_the_seeds_rack_pools_has_no_impact(cli, sqlite_url):
    cli("create", "-f", "-", stdin=NODES_YAML)
    for i, node in enumerate(NODES):
        cli("label", "nodes", node, f"rack={i // 2}")
    data, code = predicted_then_made(cli, sqlite_url, "create", "-f", "-", stdin=RACK_POOLS)
    assert code == 0
    assert [(c["kind"], c["name"], c["action"]) for c in data["changes"]] == [
        ("IPPool", "rack-0-ippool", "created"), ("IPPool", "rack-1-ippool", "created")]
    assert data["after"]["uncovered"] == [] and data["after"]["drift"] == []


def test_text_report_of_the_seeds_racks(racks, sqlite_url):
    r = racks("apply", "-f", "-", "--dry-run", stdin=RACK_POOLS)
    assert r.code == 0 and r.err == ""
    assert r.out == ("Dry run: nothing was written.\nNo resource would change.\n"
                     "Impact: none (no node loses coverage, no workload drifts, no block loses its affinity, "
                     "no pool is left selecting no node)\n")


def test_a_node_labelled_rack_2_that_no_pool_selects(racks, sqlite_url):
    data, code = predicted_then_made(racks, sqlite_url, "create", "-f", "-", stdin=NODE4)
    assert code == 4
    assert uncovered(data["impact"]["uncovered"]) == {("kube-node-4", 4)}
    assert [(c["kind"], c["name"], c["action"]) for c in data["changes"]] == [("Node", "kube-node-4", "created")]


def test_relabelling_the_last_node_of_a_rack_to_rack_2(racks, sqlite_url):
    r = racks("label", "nodes", "kube-node-3", "rack=2", "--overwrite", "--dry-run")
    assert r.code == 4
    assert "Node(kube-node-3) would be replaced\n  metadata.labels.rack: \"1\" -> \"2\"\n" in r.out
    assert "  kube-node-3 loses IPv4 coverage: no pool selects it" in r.out
    data, code = predicted_then_made(racks, sqlite_url, "label", "nodes", "kube-node-3", "rack=2", "--overwrite")
    assert code == 4
    assert uncovered(data["impact"]["uncovered"]) == {("kube-node-3", 4)}
    assert {d["handle"] for d in data["impact"]["drift"]} == {"w3"}
    [loss] = data["impact"]["affinities"]
    assert (loss["node"], loss["pool"], loss["when"]) == ("kube-node-3", "rack-1-ippool", "once empty")


def test_deleting_a_pool_that_workloads_still_use(racks, sqlite_url):
    held = {n: affinities(sqlite_url, n) for n in ("kube-node-0", "kube-node-1")}
    assert all(held.values())
    data, code = predicted_then_made(racks, sqlite_url, "delete", "ippool", "rack-0-ippool")
    assert code == 4
    assert uncovered(data["impact"]["uncovered"]) == {("kube-node-0", 4), ("kube-node-1", 4)}
    assert {d["handle"] for d in data["impact"]["drift"]} == {"w0", "w0b", "w1"}
    losses = {(a["node"], a["block"], a["when"]) for a in data["impact"]["affinities"]}
    assert losses == {(n, b, "now") for n, blocks in held.items() for b in blocks}
    assert all("still allocated" in a["outcome"] for a in data["impact"]["affinities"])
    # made for real: the affinities are gone as predicted
    assert affinities(sqlite_url, "kube-node-0") == affinities(sqlite_url, "kube-node-1") == set()


def test_relabelling_a_node_with_workloads_on_it(racks, sqlite_url):
    (block,) = affinities(sqlite_url, "kube-node-0")
    data, code = predicted_then_made(racks, sqlite_url, "label", "nodes", "kube-node-0", "rack=1", "--overwrite")
    assert code == 4
    assert data["impact"]["uncovered"] == [] and data["impact"]["unused_pools"] == []
    assert {(d["handle"], d["pool"]) for d in data["impact"]["drift"]} == {("w0", "rack-0-ippool"),
                                                                           ("w0b", "rack-0-ippool")}
    [loss] = data["impact"]["affinities"]
    assert (loss["block"], loss["when"]) == (block, "once empty")
    # The engine keeps the affinity while the block holds addresses, and drops it once empty.
    assert affinities(sqlite_url, "kube-node-0") == {block}
    assert racks("ipam", "release", "--handle", "w0").code == 0
    assert affinities(sqlite_url, "kube-node-0") == {block}
    assert racks("ipam", "release", "--handle", "w0b").code == 0
    assert affinities(sqlite_url, "kube-node-0") == set()


def test_replace_and_patch_show_field_level_changes(racks, sqlite_url):
    moved = RACK_POOL.format(rack=1).replace('rack == "1"', 'rack in {"1", "2"}')
    data, code = dry(racks, sqlite_url, "replace", "-f", "-", stdin=moved)
    assert code == 0
    [change] = data["changes"]
    assert (change["name"], change["action"]) == ("rack-1-ippool", "replaced")
    assert change["fields"] == [{"path": "spec.nodeSelector", "old": 'rack == "1"', "new": 'rack in {"1", "2"}'}]
    data, code = dry(racks, sqlite_url, "patch", "ippool", "rack-1-ippool", "-p", '{"spec":{"disabled":true}}')
    assert code == 4
    assert data["changes"][0]["fields"] == [{"path": "spec.disabled", "old": None, "new": True}]
    assert uncovered(data["impact"]["uncovered"]) == {("kube-node-2", 4), ("kube-node-3", 4)}
    assert {d["handle"] for d in data["impact"]["drift"]} == {"w2", "w3"}


def test_label_remove_and_delete_of_a_node_in_a_dry_run(racks, sqlite_url):
    data, code = dry(racks, sqlite_url, "label", "nodes", "kube-node-2", "rack", "--remove")
    assert code == 4 and uncovered(data["impact"]["uncovered"]) == {("kube-node-2", 4)}
    data, code = dry(racks, sqlite_url, "delete", "node", "kube-node-2")
    assert code == 4
    assert [(c["kind"], c["name"], c["action"]) for c in data["changes"]] == [("Node", "kube-node-2", "deleted")]
    assert any(line.startswith("workload default/pod-2, handle w2: ") for line in data["released"])


BAD = {
    "a value for --dry-run": (["create", "-f", "-", "--dry-run=yes"], RACK_POOLS, "--dry-run"),
    "unknown output": (["apply", "-f", "-", "--dry-run", "-o", "yaml"], RACK_POOLS, "invalid choice: 'yaml'"),
    "output without --dry-run": (["delete", "ippool", "rack-0-ippool", "-o", "json"], None,
                                 "-o/--output json is only for --dry-run"),
    "bad selector": (["apply", "-f", "-", "--dry-run"], RACK_POOL.format(rack=1).replace('== "1"', '=== "1"'),
                     "NodeSelector"),
    "replace of a missing pool": (["replace", "-f", "-", "--dry-run"], RACK_POOL.format(rack=5), None),
    "patch that is not JSON": (["patch", "ippool", "rack-0-ippool", "-p", "{nope", "--dry-run"], None,
                               "patch is not valid JSON"),
    "label without a value": (["label", "nodes", "kube-node-0", "rack", "--dry-run"], None, "invalid label rack"),
    "delete without names": (["delete", "node", "--dry-run"], None, "delete needs -f FILE"),
    "label output without --dry-run": (["label", "nodes", "kube-node-0", "x=1", "-o", "text"], None,
                                       "only for --dry-run"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_input_to_dry_run_exits_2_and_changes_nothing(racks, sqlite_url, case):
    argv, stdin, message = BAD[case]
    if message is None:  # a missing resource: exit 1, as without --dry-run
        before = sqlite_dump(sqlite_url)
        r = racks(*argv, stdin=stdin)
        assert (r.code, r.out) == (1, "") and "resource does not exist: IPPool(rack-5-ippool)" in r.err
        assert sqlite_dump(sqlite_url) == before
        return
    unchanged(racks, sqlite_url, argv, 2, message, stdin=stdin)
