"""Damaged state is reported, not fatal: records written directly into a real SQLite store, then
``ipam check``, ``ipam assign``, ``ipam gc`` and the repairs check prints, all through the CLI."""

from __future__ import annotations

import ipaddress
import json
import shlex

from test_cli_ipam import assign
from test_cli_ipam_check import raw, seed  # noqa: F401 - fixtures
from topoipam.ipam import keys
from topoipam.store.base import Create

FIRST = ipaddress.ip_network("192.168.0.64/26")  # kube-node-0's first block in rack-0-ippool


def repairs(out: str) -> list[list[str]]:
    return [shlex.split(line.split("repair: ", 1)[1]) for line in out.splitlines() if line.startswith("    repair: ")]


def repair_until_clean(cli) -> int:
    """Run every repair ``ipam check`` prints until it is clean; returns how many were run."""
    done = 0
    for _ in range(5):
        r = cli("ipam", "check")
        if r.code == 0:
            return done
        fixes = repairs(r.out)
        assert fixes, r.out
        for argv in fixes:
            assert argv[:3] == ["topoipam", "ipam", "repair"]
            fixed = cli(*argv[1:])
            assert fixed.code == 0, fixed
            done += 1
        cli("ipam", "gc", "--grace", "0s")  # what the repair left holding nothing
    raise AssertionError(cli("ipam", "check").out)


def test_a_block_that_does_not_decode(seed, raw):
    held = assign(seed, "--node", "kube-node-0", "--handle", "h")[0]
    key = keys.block_key(FIRST)
    raw.update(key, b"{not json", raw.get(key).revision)
    r = seed("ipam", "check")
    assert r.code == 4 and "Traceback" not in r.err
    revision = raw.get(key).revision
    assert f"  record {key} (revision {revision}) is damaged: it does not decode (JSONDecodeError: " in r.out
    assert f"    repair: topoipam ipam repair --delete-record {key} --revision {revision}\n" in r.out
    got = assign(seed, "--node", "kube-node-0", "--handle", "next")[0]  # the rest of the space works
    assert ipaddress.ip_interface(got).ip not in FIRST
    gc = seed("ipam", "gc", "--grace", "0s", "-o", "json")
    assert gc.code == 0 and json.loads(gc.out)["items"] == []  # nothing judged from a record it cannot read
    assert seed("ipam", "release", "--ip", held.split("/")[0]).code == 1  # a clear failure, no traceback
    assert repair_until_clean(seed) == 2  # the record, then its affinity without a block
    assert seed("ipam", "show", "--ip", got.split("/")[0]).out.startswith("IP ")


def test_a_block_whose_ordinals_disagree_is_passed_over_until_rebuilt(seed, raw):
    assign(seed, "--node", "kube-node-0", "--handle", "h", "--ipv4", "2")
    key = keys.block_key(FIRST)
    rec = raw.get(key)
    doc = json.loads(rec.value)
    doc["unallocated"] = [0, *doc["unallocated"]]  # ordinal 0 is allocated AND free: could be given twice
    raw.update(key, json.dumps(doc).encode(), rec.revision)
    r = seed("ipam", "check")
    assert r.code == 4
    assert "  block 192.168.0.64/26: ordinal 0 is allocated and also in the free list\n" \
           "    repair: topoipam ipam repair --block 192.168.0.64/26\n" in r.out
    got = ipaddress.ip_interface(assign(seed, "--node", "kube-node-0", "--handle", "other")[0]).ip
    assert got not in FIRST  # never 192.168.0.64 a second time
    assert repair_until_clean(seed) == 1
    assert seed("ipam", "show", "--ip", "192.168.0.64").out.splitlines()[1] == "Handle ID: h"
    again = ipaddress.ip_interface(assign(seed, "--node", "kube-node-0", "--handle", "third")[0]).ip
    assert again == ipaddress.ip_address("192.168.0.66")  # the rebuilt block is used again


def test_an_affinity_without_a_block(seed, raw):
    assign(seed, "--node", "kube-node-0", "--handle", "h")
    stale = keys.affinity_key("kube-node-1", ipaddress.ip_network("192.168.0.128/26"))
    raw.commit([Create(stale, b'{"state":"confirmed","deleted":false}')])
    r = seed("ipam", "check")
    assert r.code == 4
    assert f"  affinity record {stale} has no block affine to its node\n" \
           f"    repair: topoipam ipam repair --delete-record {stale} --revision {raw.get(stale).revision}\n" in r.out
    assert assign(seed, "--node", "kube-node-1", "--handle", "n1")
    assert repair_until_clean(seed) <= 1  # kube-node-1's assignment may have dropped it already (Calico does)


def test_a_handle_record_that_does_not_decode_is_not_garbage(seed, raw):
    ip = assign(seed, "--node", "kube-node-0", "--handle", "h")[0].split("/")[0]
    hkey = keys.handle_key("h")
    raw.update(hkey, b"\xff garbage", raw.get(hkey).revision)
    r = seed("ipam", "check")
    assert r.code == 4 and f"  record {hkey} (revision {raw.get(hkey).revision}) is damaged: it does not decode" in r.out
    gc = seed("ipam", "gc", "--grace", "0s", "-o", "json")
    assert gc.code == 0 and json.loads(gc.out)["items"] == []  # its address is not "without a handle"
    assert seed("ipam", "show", "--ip", ip).out.startswith(f"IP {ip} is in use")
    assert assign(seed, "--node", "kube-node-0", "--handle", "other")
    r = seed("ipam", "repair", "--delete-record", hkey, "--revision", "1")
    assert r.code == 1 and "is gone or changed since revision 1" in r.err  # fenced: nothing deleted
    assert raw.get(hkey) is not None
