"""What a new user tripped over (issue 9, item 5), through the public CLI on SQLite: a shortfall of
``ipam assign`` with and without ``--allow-partial``, the selector parser's reason in manifest errors,
``ipam show``'s IPS RESERVED column, and ``headroom --by`` counting no address in two domains."""

from __future__ import annotations

import json

from conftest import sqlite_dump
from seed_yaml import NODES_YAML as NODES, RACK_POOL


def pool_doc(name, cidr, extra=""):
    return f"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: {name}\nspec:\n  cidr: {cidr}\n{extra}"


RESERVATION = ("apiVersion: projectcalico.org/v3\nkind: IPReservation\nmetadata:\n  name: keep\nspec:\n"
               "  reservedCIDRs: [{cidrs}]\n")


def nodes_in_racks(cli):
    assert cli("create", "-f", "-", stdin=NODES).code == 0
    for i in range(4):
        assert cli("label", "nodes", f"kube-node-{i}", f"rack={i // 2}").code == 0


def in_use(cli, handle):
    r = cli("ipam", "release", "--handle", handle)
    return [line.rsplit(" ", 1)[1] for line in r.out.splitlines() if line.startswith("Successfully released IP")]


# ---------------------------------------------------------------- assign shortfall


def test_assign_more_than_free_keeps_nothing_and_says_so(cli, sqlite_url):
    nodes_in_racks(cli)
    cli("create", "-f", "-", stdin=pool_doc("small", "10.9.0.0/24"))
    before = sqlite_dump(sqlite_url)
    r = cli("ipam", "assign", "--node", "kube-node-0", "--ipv4", "257", "--handle", "big")
    assert (r.code, r.out) == (1, "")
    assert r.err.startswith("could not assign 257 IPv4 address(es), so none was kept")
    assert "Assigned 256 out of 257 requested IPv4 addresses" in r.err  # Calico's text, after the truth
    assert "Handle ID" not in r.err
    assert "| IP Pool  | 10.9.0.0/24 |       256 | 0 (0%)     |" in cli("ipam", "show").out
    r = cli("ipam", "release", "--handle", "big")
    assert r.code == 1 and "does not exist" in r.err
    assert len(sqlite_dump(sqlite_url)) == len(before)  # blocks claimed on the way were given back


def test_assign_allow_partial_keeps_and_prints_every_address_it_got(cli):
    nodes_in_racks(cli)
    cli("create", "-f", "-", stdin=pool_doc("small", "10.9.0.0/24"))
    r = cli("ipam", "assign", "--node", "kube-node-0", "--ipv4", "257", "--allow-partial", "--handle", "big")
    assert r.code == 0, r
    got = r.out.split()
    assert len(got) == len(set(got)) == 256 and all(ip.startswith("10.9.0.") for ip in got)
    assert r.err == "Assigned 256 out of 257 requested IPv4 addresses; No IPs available in pools: [10.9.0.0/24]\n"
    assert "| IP Pool  | 10.9.0.0/24 |       256 | 256 (100%) |" in cli("ipam", "show").out
    assert sorted(in_use(cli, "big")) == sorted(got)


def test_assign_allow_partial_when_all_fits_is_an_ordinary_success(cli):
    nodes_in_racks(cli)
    cli("create", "-f", "-", stdin=pool_doc("small", "10.9.0.0/24"))
    r = cli("ipam", "assign", "--node", "kube-node-0", "--ipv4", "2", "--allow-partial")
    assert r.code == 0 and len(r.out.split()) == 2 and r.err.startswith("Handle ID: ")


# ---------------------------------------------------------------- manifest selector errors


def test_bad_selector_in_a_manifest_names_the_parsers_reason_and_position(cli, sqlite_url):
    nodes_in_racks(cli)
    before = sqlite_dump(sqlite_url)
    bad = pool_doc("bad", "10.1.0.0/16", "  nodeSelector: rack == 0\n")
    r = cli("create", "-f", "-", stdin=bad)
    assert (r.code, r.out) == (2, "")
    assert "because of Tag: selector ): expected string at character 9" in r.err
    r = cli("apply", "-f", "-", stdin=pool_doc("bad", "10.1.0.0/16", "  nodeSelector: 'rack == \"0\" &&'\n"))
    assert r.code == 2 and "unexpected token: TokEOF() at character 15" in r.err
    assert sqlite_dump(sqlite_url) == before


# ---------------------------------------------------------------- ipam show: IPS RESERVED


def test_show_counts_reserved_addresses_apart_from_free(cli):
    nodes_in_racks(cli)
    cli("create", "-f", "-", stdin=pool_doc("small", "10.9.0.0/24", "  nodeSelector: all()\n"))
    # 4 reserved in the first block, 2 at the end of the pool (in a block not claimed yet)
    cli("create", "-f", "-", stdin=RESERVATION.format(cidrs="10.9.0.0/30, 10.9.0.254/31"))
    assert cli("ipam", "assign", "--node", "kube-node-0", "--ipv4", "3", "--pool", "10.9.0.0/24").code == 0
    lines = cli("ipam", "show", "--show-blocks").out.splitlines()
    assert [c.strip() for c in lines[1].split("|")[1:-1]] == ["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE",
                                                               "IPS RESERVED", "IPS FREE"]
    pool_row = next(line for line in lines if line.startswith("| IP Pool"))
    assert [c.strip() for c in pool_row.split("|")[1:-1]] == ["IP Pool", "10.9.0.0/24", "256", "3 (1%)", "6 (2%)",
                                                              "247 (96%)"]
    block_rows = [line for line in lines if line.startswith("| Block")]
    assert len(block_rows) == 1 and "| 3 (5%)     | " in block_rows[0]


def test_show_an_address_reserved_after_it_was_allocated_is_counted_once(cli):
    nodes_in_racks(cli)
    cli("create", "-f", "-", stdin=pool_doc("small", "10.9.0.0/24", "  nodeSelector: all()\n"))
    ips = cli("ipam", "assign", "--node", "kube-node-0", "--ipv4", "2").out.split()
    cli("create", "-f", "-", stdin=RESERVATION.format(cidrs=f"{ips[0]}/32"))
    row = next(line for line in cli("ipam", "show").out.splitlines() if line.startswith("| IP Pool"))
    # in use 2, reserved 1 (the same address), free 256 - 2 = 254: nothing subtracted twice
    assert row == "| IP Pool  | 10.9.0.0/24 |       256 | 2 (1%)     | 1 (0%)       | 254 (99%) |"


# ---------------------------------------------------------------- headroom: a shared pool


def test_headroom_splits_a_shared_pool_into_held_blocks_and_a_shared_row(cli):
    nodes_in_racks(cli)
    for rack in (0, 1):
        assert cli("create", "-f", "-", stdin=RACK_POOL.format(rack=rack)).code == 0
    # one pool used by both racks (and only by them)
    assert cli("create", "-f", "-", stdin=pool_doc("both", "10.8.0.0/24", "  nodeSelector: has(rack)\n")).code == 0
    assert cli("ipam", "assign", "--node", "kube-node-0", "--ipv4", "3", "--pool", "both").code == 0
    assert cli("ipam", "assign", "--node", "kube-node-2", "--ipv4", "65", "--pool", "both").code == 0
    data = json.loads(cli("ipam", "headroom", "--by", "rack", "-o", "json").out)
    rows = {d["domain"]: d for d in data["domains"]}
    assert set(rows) == {"0", "1", "<shared:both>"}
    r0, r1, shared = rows["0"], rows["1"], rows["<shared:both>"]
    # rack 0: its own pool whole, and of the shared pool only its one block
    assert (r0["total"], r0["in_use"], r0["free"], r0["blocks_claimed"]) == (256 + 64, 3, 256 + 61, 1)
    assert (r1["total"], r1["in_use"], r1["free"], r1["blocks_claimed"]) == (256 + 128, 65, 256 + 63, 2)
    assert (shared["total"], shared["free"], shared["blocks_unclaimed"], shared["shared_by"]) == (64, 64, 1, ["0", "1"])
    # every address of the three pools counted exactly once
    assert sum(d["total"] for d in rows.values()) == 3 * 256
    assert sum(d["free"] for d in rows.values()) == sum(p["free"] for p in data["pools"])
    table = cli("ipam", "headroom", "--by", "rack").out
    assert "| <shared:both> | IPv4   | any node with rack=0 or rack=1 | both" in table
