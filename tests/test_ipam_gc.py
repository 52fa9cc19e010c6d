"""``topoipam ipam gc`` end to end on a real SQLite file, and the fences of ``ipam.gc``.

Garbage is made the way it arises where the datastore cannot do otherwise: a Node record deleted
behind topoipam's back (a node that vanished without ``delete node``), a handle record lost or left
behind (written with the datastore contract, as only a crash or a bug could leave them).
"""

from __future__ import annotations

import json

import pytest

from conftest import sqlite_dump
from test_cli_ipam import assign
from test_cli_ipam_check import raw, seed  # noqa: F401 - fixtures
from topoipam.ipam import IpamService, gc, keys
from topoipam.resources.keys import resource_key
from topoipam.store.base import Create, Delete

OLD = "timestamp=2020-01-02 03:04:05.5 +0000 UTC"  # a CNI-style timestamp long past any grace


def vanish_node(raw, name):
    rec = raw.get(resource_key("Node", name))
    raw.commit([Delete(rec.key, rec.revision)])


def test_nothing_to_collect_exits_0_and_says_so(seed):
    assign(seed, "--node", "kube-node-0", "--handle", "live", "--attr", OLD)
    r = seed("ipam", "gc", "--grace", "0s")
    assert r.code == 0, r
    assert r.out == "Released 0; 0 skipped (changed since read); 0 failed; 0 kept within the grace period.\n"
    assert seed("ipam", "gc", "--dry-run", "--grace", "0s").code == 0


def test_node_gone_dry_run_writes_nothing_then_gc_releases_with_who_and_why(seed, raw, sqlite_url):
    ip = assign(seed, "--node", "kube-node-1", "--handle", "k8s-pod-network.c1", "--namespace", "shop",
                "--attr", "pod=web-1", "--attr", OLD)[0].split("/")[0]
    keep = assign(seed, "--node", "kube-node-0", "--handle", "other", "--attr", OLD)[0]
    vanish_node(raw, "kube-node-1")
    before = sqlite_dump(sqlite_url)
    r = seed("ipam", "gc", "--dry-run")
    assert r.code == 4, r
    assert r.out.splitlines()[0] == (
        f"would release: address {ip} held by handle k8s-pod-network.c1, node kube-node-1, namespace shop, "
        f"pod web-1, since 2020-01-02T03:04:05Z ({r.out.split('(')[1].split('s ago')[0]}s ago): node-gone, "
        f"node kube-node-1 no longer exists")
    assert sqlite_dump(sqlite_url) == before
    r = seed("ipam", "gc", "-o", "json")
    assert r.code == 0, r
    doc = json.loads(r.out)
    assert [(i["kind"], i["ip"], i["handle"], i["node"], i["outcome"], i["sinceRecorded"]) for i in doc["items"]] == \
        [("node-gone", ip, "k8s-pod-network.c1", "kube-node-1", "released", True)]
    assert doc["items"][0]["attributes"]["pod"] == "web-1" and doc["graceSeconds"] == 900
    assert seed("ipam", "show", "--ip", ip).out == f"{ip} is not assigned\n"
    assert raw.get(keys.handle_key("k8s-pod-network.c1")) is None  # its last address went: the handle too
    assert seed("ipam", "show", "--ip", keep.split("/")[0]).out.startswith(f"IP {keep.split('/')[0]} is in use")
    assert seed("ipam", "gc", "--grace", "0s").out.startswith("Released 0;")


def test_grace_keeps_what_has_no_timestamp_until_grace_0(seed, raw):
    ip = assign(seed, "--node", "kube-node-1", "--handle", "fresh")[0].split("/")[0]
    vanish_node(raw, "kube-node-1")
    r = seed("ipam", "gc", "--grace", "10m")
    assert r.code == 0, r
    assert r.out.startswith(f"kept (gone for less than 10m): address {ip} held by handle fresh, node kube-node-1, "
                            "first seen ")
    assert r.out.endswith("Released 0; 0 skipped (changed since read); 0 failed; 1 kept within the grace period.\n")
    assert "is in use" in seed("ipam", "show", "--ip", ip).out
    r = seed("ipam", "gc", "--grace", "0s")
    assert r.out.startswith(f"released: address {ip} held by handle fresh, node kube-node-1, first seen "), r


def test_handle_without_address_and_address_without_handle(seed, raw):
    raw.commit([Create(keys.handle_key("orphan"), b'{"block":{},"deleted":false}')])
    ip = assign(seed, "--node", "kube-node-0", "--handle", "lost", "--attr", OLD)[0].split("/")[0]
    rec = raw.get(keys.handle_key("lost"))
    raw.commit([Delete(rec.key, rec.revision)])
    assert seed("ipam", "check").code == 4
    r = seed("ipam", "gc", "--grace", "0s", "-o", "json")
    assert r.code == 0, r
    got = {(i["kind"], i["ip"], i["handle"], i["outcome"]) for i in json.loads(r.out)["items"]}
    assert got == {("handle-without-address", None, "orphan", "released"),
                   ("address-without-handle", ip, "lost", "released")}
    assert seed("ipam", "check").code == 0


def test_bad_grace_is_a_usage_error_that_changes_nothing(seed, sqlite_url):
    before = sqlite_dump(sqlite_url)
    r = seed("ipam", "gc", "--grace", "soon")
    assert r.code == 2 and "invalid duration 'soon'" in r.err and "Traceback" not in r.err
    assert sqlite_dump(sqlite_url) == before


@pytest.mark.parametrize("text, seconds", [("0s", 0), ("90", 90), ("15m", 900), ("1h30m", 5400), ("500ms", 0.5)])
def test_parse_duration(text, seconds):
    from topoipam.core.duration import parse_duration

    assert parse_duration(text) == seconds


def test_fence_an_address_reassigned_after_the_pass_read_is_not_freed(seed, raw):
    ip = assign(seed, "--node", "kube-node-1", "--handle", "old", "--attr", OLD)[0].split("/")[0]
    vanish_node(raw, "kube-node-1")
    svc = IpamService(raw)
    verdict = gc.read_and_judge(raw, 1e10, 0.0)
    [g] = verdict.due
    # meanwhile: the holder is released and the same address is taken again (same handle even)
    assert svc.release_by_handle("old")
    raw.commit([Create(resource_key("Node", "kube-node-1"), raw.get(resource_key("Node", "kube-node-0")).value
                       .replace(b"kube-node-0", b"kube-node-1"))])
    svc.assign_ip(ip, "old", {"node": "kube-node-1"}, "kube-node-1")
    assert gc.release(svc, g).startswith("skipped: the address was released or re-assigned")
    assert svc.allocation_of(ip).handle == "old"


def test_fence_a_handle_used_after_the_pass_read_is_not_deleted(seed, raw):
    raw.commit([Create(keys.handle_key("reused"), b'{"block":{},"deleted":false}')])
    [g] = gc.read_and_judge(raw, 1e10, 0.0).due
    svc = IpamService(raw)
    ip = assign(seed, "--node", "kube-node-0", "--handle", "reused")[0].split("/")[0]
    assert gc.release(svc, g).startswith("skipped: the handle changed")
    assert [str(a) for a in svc.ips_by_handle("reused")] == [ip]


def test_address_without_handle_whose_handle_appears_before_release_is_kept(seed, raw):
    ip = assign(seed, "--node", "kube-node-0", "--handle", "late", "--attr", OLD)[0].split("/")[0]
    rec = raw.get(keys.handle_key("late"))
    raw.commit([Delete(rec.key, rec.revision)])
    [g] = gc.read_and_judge(raw, 1e10, 0.0).due
    raw.commit([Create(rec.key, rec.value)])  # as if its assignment's commit landed between the two reads
    assert gc.release(IpamService(raw), g).startswith("skipped: its handle exists now")
    assert IpamService(raw).allocation_of(ip).handle == "late"


def test_first_seen_ages_holders_without_timestamp_between_passes(seed, raw):
    assign(seed, "--node", "kube-node-1", "--handle", "quiet")
    vanish_node(raw, "kube-node-1")
    seen: dict = {}
    assert len(gc.read_and_judge(raw, 1000.0, 60.0, first_seen=seen).young) == 1
    assert len(gc.read_and_judge(raw, 1059.0, 60.0, first_seen=seen).young) == 1
    assert len(gc.read_and_judge(raw, 1060.0, 60.0, first_seen=seen).due) == 1
    IpamService(raw).release_by_handle("quiet")
    assert not gc.read_and_judge(raw, 1061.0, 60.0, first_seen=seen).due and seen == {}


def test_the_agent_collects_garbage_periodically_and_logs_who_and_why(tmp_path):
    from agent_proc import AgentProc
    from test_agent import POOLS, create, wait_for
    from topoipam.agent.node import register_node
    from topoipam.ipam import AssignRequest
    from topoipam.store import open_store

    url = f"sqlite://{tmp_path}/agent.db"
    store = open_store(url)
    agent = AgentProc(tmp_path, url, "node-a", {"rack": "0"}, extra_args=("--gc-interval", "0.2s", "--gc-grace", "0s"))
    try:
        create(store, POOLS)
        register_node(store, "node-b", {"rack": "0"})
        svc = IpamService(store)
        res = svc.auto_assign(AssignRequest(node="node-b", handle="net.c-b", attrs={"node": "node-b", "pod": "db-0"}))
        agent.start()
        live = svc.auto_assign(AssignRequest(node="node-a", handle="net.c-live", attrs={"node": "node-a"}))
        vanish_node(store, "node-b")
        ip = res.ipv4[0].ip
        wait_for(lambda: svc.allocation_of(ip) is None, what=f"the agent's gc releasing {ip}")
        wait_for(lambda: f"gc released: address {ip} held by handle net.c-b, node node-b, pod db-0, first seen"
                 in agent.log(), what="the release in the agent's log")
        assert "node-gone, node node-b no longer exists" in agent.log()
        assert svc.allocation_of(live.ipv4[0].ip).handle == "net.c-live"
        assert agent.stop() == 0
    finally:
        agent.kill()
        store.close()
