"""``topoipam ipam show|release|configure|split|assign`` and ``get workloadendpoints`` end to end on SQLite.

Every test drives the real CLI entry point (the ``cli`` fixture) against a real
SQLite file; rejected input is checked to leave the file's full dump unchanged.
"""

from __future__ import annotations

import pytest

from conftest import sqlite_dump
from seed_yaml import NODES_YAML as NODES, RACK_POOL
from topoipam.cli.tables import render


def pool_doc(name, cidr, extra=""):
    return f"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: {name}\nspec:\n  cidr: {cidr}\n{extra}"


@pytest.fixture
def seed(cli):
    """The seed's cluster: four nodes in two racks, one pool per rack, no default pool."""
    assert cli("create", "-f", "-", stdin=NODES).code == 0
    for i in range(4):
        assert cli("label", "nodes", f"kube-node-{i}", f"rack={i // 2}").code == 0
    for rack in (0, 1):
        assert cli("create", "-f", "-", stdin=RACK_POOL.format(rack=rack)).code == 0
    return cli


def assign(cli, *argv):
    r = cli("ipam", "assign", *argv)
    assert r.code == 0, r
    return r.out.split()


def unchanged(cli, sqlite_url, argv, code, message, stdin=None):
    """Run a command that must fail: its exit code, its message on stderr, nothing on stdout, the file as before."""
    before = sqlite_dump(sqlite_url)
    r = cli(*argv, stdin=stdin)
    assert (r.code, r.out) == (code, ""), r
    assert message in r.err, r
    assert "Traceback" not in r.err
    assert sqlite_dump(sqlite_url) == before
    return r


# ---------------------------------------------------------------- tables


def test_table_layout_is_tablewriters_on_calicos_fv_example():
    rows = [["IP Pool", "10.65.0.0/16", "65536", "5 (0%)", "65531 (100%)"],
            ["Block", "10.65.79.0/26", "64", "5 (8%)", "59 (92%)"],
            ["IP Pool", "x" * 41, "1.2089e+24", "0 (0%)", "1.2089e+24 (100%)"]]
    lines = render(["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"], rows).splitlines()
    assert lines[:5] == [
        "+----------+-------------------------------------------+------------+------------+-------------------+",
        "| GROUPING |                   CIDR                    | IPS TOTAL  | IPS IN USE |     IPS FREE      |",
        "+----------+-------------------------------------------+------------+------------+-------------------+",
        "| IP Pool  | 10.65.0.0/16                              |      65536 | 5 (0%)     | 65531 (100%)      |",
        "| Block    | 10.65.79.0/26                             |         64 | 5 (8%)     | 59 (92%)          |",
    ]
    # %.5g text is not a decimal for tablewriter: it stays left-aligned
    assert lines[5].startswith("| IP Pool  | " + "x" * 41 + " | 1.2089e+24 |")
    assert lines[6] == lines[0]


def test_table_numeric_cells_right_aligned_wide_cells_wrapped_at_spaces():
    text = render(["key_name", "v"], [["a", "1,024"], ["b", "-1.5"], ["c", "1.5.2"],
                                      ["d", "the quick brown fox jumps over the lazy dog"]])
    assert text.splitlines() == [
        "+----------+--------------------------------+",
        "| KEY NAME |               V                |",
        "+----------+--------------------------------+",
        "| a        |                          1,024 |",
        "| b        |                           -1.5 |",
        "| c        | 1.5.2                          |",
        "| d        | the quick brown fox jumps over |",
        "|          | the lazy dog                   |",
        "+----------+--------------------------------+",
    ]


def test_table_without_rows_prints_header_and_borders():
    assert render(["A", "BB"], []) == "+---+----+\n| A | BB |\n+---+----+\n+---+----+\n"


# ---------------------------------------------------------------- ipam show


def test_show_pools_and_blocks(seed):
    for node in ("kube-node-0", "kube-node-0", "kube-node-2"):
        assign(seed, "--node", node)
    r = seed("ipam", "show")
    assert (r.code, r.err) == (0, "")
    assert r.out == (
        "+----------+----------------+-----------+------------+--------------+------------+\n"
        "| GROUPING |      CIDR      | IPS TOTAL | IPS IN USE | IPS RESERVED |  IPS FREE  |\n"
        "+----------+----------------+-----------+------------+--------------+------------+\n"
        "| IP Pool  | 192.168.0.0/24 |       256 | 2 (1%)     | 0 (0%)       | 254 (99%)  |\n"
        "| IP Pool  | 192.168.1.0/24 |       256 | 1 (0%)     | 0 (0%)       | 255 (100%) |\n"
        "+----------+----------------+-----------+------------+--------------+------------+\n")
    r = seed("ipam", "show", "--show-blocks")
    assert r.out == (
        "+----------+------------------+-----------+------------+--------------+------------+\n"
        "| GROUPING |       CIDR       | IPS TOTAL | IPS IN USE | IPS RESERVED |  IPS FREE  |\n"
        "+----------+------------------+-----------+------------+--------------+------------+\n"
        "| IP Pool  | 192.168.0.0/24   |       256 | 2 (1%)     | 0 (0%)       | 254 (99%)  |\n"
        "| Block    | 192.168.0.64/26  |        64 | 2 (3%)     | 0 (0%)       | 62 (97%)   |\n"
        "| IP Pool  | 192.168.1.0/24   |       256 | 1 (0%)     | 0 (0%)       | 255 (100%) |\n"
        "| Block    | 192.168.1.192/26 |        64 | 1 (2%)     | 0 (0%)       | 63 (98%)   |\n"
        "+----------+------------------+-----------+------------+--------------+------------+\n")


def test_show_percentages_round_half_to_even_and_g5_for_big_pools(cli):
    cli("create", "-f", "-", stdin=NODES)
    cli("create", "-f", "-", stdin=pool_doc("eight", "10.0.0.0/29", "  blockSize: 29\n"))
    cli("create", "-f", "-", stdin=pool_doc("v6", "fd00:1::/48"))
    assign(cli, "--node", "kube-node-0", "--ipv4", "3", "--pool", "eight")
    r = cli("ipam", "show", "--show-blocks")
    assert r.out.splitlines() == [
        "+----------+-------------+------------+------------+--------------+-------------------+",
        "| GROUPING |    CIDR     | IPS TOTAL  | IPS IN USE | IPS RESERVED |     IPS FREE      |",
        "+----------+-------------+------------+------------+--------------+-------------------+",
        "| IP Pool  | 10.0.0.0/29 |          8 | 3 (38%)    | 0 (0%)       | 5 (62%)           |",
        "| Block    | 10.0.0.0/29 |          8 | 3 (38%)    | 0 (0%)       | 5 (62%)           |",
        "| IP Pool  | fd00:1::/48 | 1.2089e+24 | 0 (0%)     | 0 (0%)       | 1.2089e+24 (100%) |",
        "+----------+-------------+------------+------------+--------------+-------------------+",
    ]


def test_show_blocks_lists_blocks_outside_every_pool_last_without_a_pool_row(seed):
    (ip,) = assign(seed, "--node", "kube-node-0")
    assert seed("delete", "ippool", "rack-0-ippool").code == 0  # the non-empty block stays, without affinity
    lines = seed("ipam", "show", "--show-blocks").out.splitlines()
    assert lines[3:6] == ["| IP Pool  | 192.168.1.0/24  |       256 | 0 (0%)     | 0 (0%)       | 256 (100%) |",
                          "| Block    | 192.168.0.64/26 |        64 | 1 (2%)     | 0 (0%)       | 63 (98%)   |",
                          "+----------+-----------------+-----------+------------+--------------+------------+"]
    assert ip == "192.168.0.64"


def test_show_ip(seed):
    (ip,) = assign(seed, "--node", "kube-node-1", "--handle", "web-1", "--namespace", "prod", "--attr", "pod=web-1")
    r = seed("ipam", "show", "--ip", ip)
    assert (r.code, r.out) == (0, f"IP {ip} is in use\nHandle ID: web-1\nActive Owner Attributes:\n"
                                  "  namespace: prod\n  node: kube-node-1\n  pod: web-1\n")
    r = seed("ipam", "show", "--ip", "192.168.0.255")
    assert (r.code, r.out) == (0, "192.168.0.255 is not assigned\n")
    r = seed("ipam", "show", "--ip", "192.168.0.300")
    assert (r.code, r.out, r.err) == (2, "", "invalid IP address specified: 192.168.0.300\n")


def test_show_ip_without_attributes(seed, sqlite_url):
    from topoipam.ipam import IpamService
    from topoipam.store import open_store

    store = open_store(sqlite_url)
    try:
        IpamService(store).assign_ip("192.168.1.7", None, {}, "kube-node-2")
    finally:
        store.close()
    r = seed("ipam", "show", "--ip", "192.168.1.7")
    assert r.out == "IP 192.168.1.7 is in use\nHandle ID: <none>\nNo Active Owner attributes defined\n"


def test_show_borrowed(seed, sqlite_url):
    assign(seed, "--node", "kube-node-0", "--handle", "own")
    assign(seed, "--node", "kube-node-1", "--ip", "192.168.0.70", "--namespace", "prod", "--attr", "pod=web")
    from topoipam.ipam import IpamService
    from topoipam.store import open_store

    store = open_store(sqlite_url)
    try:
        IpamService(store).assign_ip("192.168.0.71", "anon", {}, "kube-node-0")  # no node attribute
    finally:
        store.close()
    r = seed("ipam", "show", "--show-borrowed")
    assert r.out == (
        "+--------------+----------------+-----------------+-------------+------+--------------+\n"
        "|      IP      | BORROWING-NODE |      BLOCK      | BLOCK OWNER | TYPE | ALLOCATED-TO |\n"
        "+--------------+----------------+-----------------+-------------+------+--------------+\n"
        "| 192.168.0.70 | kube-node-1    | 192.168.0.64/26 | kube-node-0 | pod  | prod/web     |\n"
        "+--------------+----------------+-----------------+-------------+------+--------------+\n"
        "\nNote: found 1 IP allocations without an explicit node association. "
        "Unable to determine if they are borrowed.\n")


def test_show_configuration_and_exclusive_flags(cli, sqlite_url):
    r = cli("ipam", "show", "--show-configuration")
    assert r.out == ("+--------------------+-------+\n"
                     "|      PROPERTY      | VALUE |\n"
                     "+--------------------+-------+\n"
                     "| StrictAffinity     | false |\n"
                     "| AutoAllocateBlocks | true  |\n"
                     "| MaxBlocksPerHost   |     0 |\n"
                     "+--------------------+-------+\n")
    unchanged(cli, sqlite_url, ["ipam", "show", "--show-blocks", "--show-borrowed"], 2, "not allowed with argument")


# ---------------------------------------------------------------- configure


def test_configure_messages_and_result(cli):
    r = cli("ipam", "configure", "--strictaffinity=true", "--max-blocks-per-host=2")
    assert (r.code, r.out, r.err) == (0, "Successfully set StrictAffinity to: true\n"
                                         "Successfully set MaxBlocksPerHost to: 2\n", "")
    assert "| StrictAffinity     | true  |" in cli("ipam", "show", "--show-configuration").out
    assert "| MaxBlocksPerHost   |     2 |" in cli("ipam", "show", "--show-configuration").out
    r = cli("ipam", "configure", "--max-blocks-per-host", "3")
    assert (r.code, r.out) == (0, "Successfully set MaxBlocksPerHost to: 3\n")
    r = cli("get", "ipamconfig", "-o", "wide")
    assert r.out.splitlines()[1].split() == ["default", "true", "true", "3"]
    for text, value in (("F", "false"), ("1", "true"), ("False", "false")):
        extra = ["--max-blocks-per-host=0"] if value == "false" else []
        r = cli("ipam", "configure", f"--strictaffinity={text}", *extra)
        assert r.code == 0 and r.out.startswith(f"Successfully set StrictAffinity to: {value}\n"), r


@pytest.mark.parametrize("argv,message", [
    ([], "at least one configuration option must be specified"),
    (["--strictaffinity=yes"], "invalid value. Use true or false to set strictaffinity"),
    (["--max-blocks-per-host=two"], "invalid value for maxblockhost. Use a valid number"),
    (["--max-blocks-per-host=4294967296"], "invalid value for maxblockhost. Use a valid number"),
    (["--max-blocks-per-host=2"], "error: MaxBlocksPerHost requires StrictAffinity to be enabled"),
    (["--strictaffinity=true", "--max-blocks-per-host=-1"], "error: "),
    (["--strictaffinity=true", "--max-blocks-per-host=2000000"], "less than or equal to 1000000"),
])
def test_configure_rejects_bad_values_and_changes_nothing(cli, sqlite_url, argv, message):
    cli("ipam", "configure", "--strictaffinity=false")  # the configuration exists: a patch is what fails
    unchanged(cli, sqlite_url, ["ipam", "configure", *argv], 2, message)


def test_configure_rejection_on_a_fresh_datastore_writes_nothing(cli, sqlite_url):
    cli("create", "-f", "-", stdin=NODES)
    unchanged(cli, sqlite_url, ["ipam", "configure", "--max-blocks-per-host=2"], 2,
              "error: MaxBlocksPerHost requires StrictAffinity to be enabled")


# ---------------------------------------------------------------- assign


def test_assign_prints_addresses_and_generated_handle(seed):
    r = seed("ipam", "assign", "--node", "kube-node-0")
    assert r.code == 0 and r.out == "192.168.0.64\n"
    assert r.err.startswith("Handle ID: topoipam-assign.") and r.err.count("\n") == 1
    handle = r.err.split()[-1]
    assert f"Handle ID: {handle}" in seed("ipam", "show", "--ip", "192.168.0.64").out
    r = seed("ipam", "assign", "--node", "kube-node-2", "--ipv4", "3", "--handle", "web")
    assert (r.code, r.out, r.err) == (0, "192.168.1.192\n192.168.1.193\n192.168.1.194\n", "")
    r = seed("ipam", "release", "--handle", handle)
    assert r.out == "Successfully released IP address 192.168.0.64\n"


def test_assign_requested_pool_bypasses_selector_and_specific_ip(seed):
    assert assign(seed, "--node", "kube-node-0", "--pool", "rack-1-ippool") == ["192.168.1.64"]
    assert assign(seed, "--node", "kube-node-0", "--pool", "192.168.1.0/24", "--handle", "h2") == ["192.168.1.65"]
    assert assign(seed, "--node", "kube-node-3", "--ip", "192.168.1.200", "--handle", "h3") == ["192.168.1.200"]
    r = seed("ipam", "show", "--ip", "192.168.1.200")
    assert "Handle ID: h3" in r.out and "  node: kube-node-3" in r.out


def test_assign_dual_stack(cli):
    cli("create", "-f", "-", stdin=NODES)
    cli("create", "-f", "-", stdin=pool_doc("v4", "10.1.0.0/24") + "---\n" + pool_doc("v6", "fd00:9::/120",
                                                                                          "  blockSize: 122\n"))
    r = cli("ipam", "assign", "--node", "kube-node-0", "--ipv6", "1", "--ipv4", "1", "--handle", "ds")
    assert (r.code, r.out) == (0, "10.1.0.64\nfd00:9::40\n"), r
    r = cli("ipam", "assign", "--node", "kube-node-0", "--ipv6", "1", "--handle", "v6only")
    assert (r.code, r.out) == (0, "fd00:9::41\n")
    assert cli("ipam", "show", "--ip", "fd00:9::40").out.startswith("IP fd00:9::40 is in use\nHandle ID: ds\n")


@pytest.mark.parametrize("argv,code,message", [
    (["--node", "kube-node-9"], 1, "resource does not exist: Node(kube-node-9)"),
    (["--node", "kube-node-0", "--pool", "nope"], 1, "the given pool (nope) does not exist, or is not enabled"),
    (["--node", "kube-node-0", "--pool", "10.99.0.0/24"], 1, "the given pool (10.99.0.0/24) does not exist"),
    (["--node", "kube-node-0", "--pool", "off"], 1, "the given pool (off) does not exist, or is not enabled"),
    (["--node", "kube-node-0", "--ip", "10.99.0.1"], 2, "The provided IP address 10.99.0.1 is not in a configured pool"),
    (["--node", "kube-node-0", "--ip", "192.168.7.1"], 2, "is not in a configured pool"),  # in the disabled pool
    (["--node", "kube-node-0", "--ip", "192.168.0.1", "--ipv4", "2"], 2, "cannot be combined"),
    (["--node", "kube-node-0", "--ip", "banana"], 2, "invalid IP address specified: banana"),
    (["--node", "kube-node-0", "--attr", "novalue"], 2, "invalid attribute 'novalue': expected KEY=VALUE"),
    (["--node", "kube-node-0", "--ipv4", "-1"], 2, "must not be negative"),
    (["--node", "kube-node-0", "--ipv4", "x"], 2, "invalid number of addresses"),
    (["--node", "kube-node-0", "--ipv4", "0"], 2, "nothing to assign"),
    (["--node", "kube-node-0", "--ipv6", "1", "--ipv4", "0", "--pool", "rack-0-ippool"], 2,
     "--pool names IPv4 pools but no IPv4 address is asked for"),
    (["--ipv4", "1"], 2, "the following arguments are required: --node"),
])
def test_assign_bad_input_changes_nothing(seed, sqlite_url, argv, code, message):
    seed("create", "-f", "-", stdin=pool_doc("off", "192.168.7.0/24", "  disabled: true\n"))
    assign(seed, "--node", "kube-node-1", "--handle", "existing")
    unchanged(seed, sqlite_url, ["ipam", "assign", *argv], code, message)


def test_assign_of_an_assigned_address_fails_and_changes_nothing(seed, sqlite_url):
    assign(seed, "--node", "kube-node-0", "--ip", "192.168.0.5", "--handle", "first")
    unchanged(seed, sqlite_url, ["ipam", "assign", "--node", "kube-node-0", "--ip", "192.168.0.5"], 1,
              "192.168.0.5")


def test_assign_from_an_exhausted_pool_fails_with_calicos_text_and_keeps_no_address(cli):
    cli("create", "-f", "-", stdin=NODES)
    cli("create", "-f", "-", stdin=pool_doc("tiny", "10.9.0.0/30", "  blockSize: 30\n"))
    assign(cli, "--node", "kube-node-0", "--ipv4", "3", "--handle", "a")
    r = cli("ipam", "assign", "--node", "kube-node-0", "--ipv4", "2", "--handle", "b")
    assert (r.code, r.out) == (1, "")
    # truthful: Calico's text counts what was assigned before the undo, so it says that none was kept
    assert r.err == ("could not assign 2 IPv4 address(es), so none was kept (every address this request had "
                     "taken was released; --allow-partial keeps them): Assigned 1 out of 2 requested IPv4 "
                     "addresses; No IPs available in pools: [10.9.0.0/30]\n")
    # the one address it had taken went back: the pool still has exactly one free address
    assert "| IP Pool  | 10.9.0.0/30 |         4 | 3 (75%)    | 0 (0%)       | 1 (25%)  |" in cli("ipam", "show").out
    r = cli("ipam", "release", "--handle", "b")
    assert r.code == 1 and "handle b does not exist" in r.err


# ---------------------------------------------------------------- release


def test_release_ip_and_handle(seed, sqlite_url):
    assign(seed, "--node", "kube-node-0", "--handle", "one")
    assign(seed, "--node", "kube-node-2", "--ipv4", "2", "--handle", "two")
    r = seed("ipam", "release", "--ip", "192.168.0.64")
    assert (r.code, r.out, r.err) == (0, "Successfully released IP address 192.168.0.64\n", "")
    unchanged(seed, sqlite_url, ["ipam", "release", "--ip", "192.168.0.64"], 1,
              "IP address 192.168.0.64 is not assigned")
    unchanged(seed, sqlite_url, ["ipam", "release", "--ip", "10.77.0.1"], 1, "IP address 10.77.0.1 is not assigned")
    unchanged(seed, sqlite_url, ["ipam", "release", "--ip", "300.1.1.1"], 2, "invalid IP address specified: 300.1.1.1")
    r = seed("ipam", "release", "--handle", "two")
    assert (r.code, r.out) == (0, "Successfully released IP address 192.168.1.192\n"
                                  "Successfully released IP address 192.168.1.193\n")
    unchanged(seed, sqlite_url, ["ipam", "release", "--handle", "two"], 1,
              "handle two does not exist (no address is held under it)")
    unchanged(seed, sqlite_url, ["ipam", "release"], 2, "one of the arguments --ip --handle --from-report is required")
    unchanged(seed, sqlite_url, ["ipam", "release", "--ip", "192.168.0.1", "--handle", "x"], 2, "not allowed with")
    assert "IPS IN USE" in seed("ipam", "show").out and "0 (0%)" in seed("ipam", "show").out


# ---------------------------------------------------------------- split


def test_split_by_name_keeps_spec_blocks_and_allocations(seed):
    assign(seed, "--node", "kube-node-0", "--handle", "keep")
    r = seed("ipam", "split", "2", "--name", "rack-0-ippool")
    assert (r.code, r.err) == (0, "")
    assert r.out == ("IP Pool rack-0-ippool was successfully split into 2 smaller pools.\n"
                     "Created split-rack-0-ippool-0 with CIDR 192.168.0.0/25.\n"
                     "Created split-rack-0-ippool-1 with CIDR 192.168.0.128/25.\n"
                     "Please refer to the documentation for final steps: docs/operations.md, \"After ipam split\".\n")
    wide = seed("get", "ippool", "-o", "wide").out.splitlines()
    assert [line.split()[:8] for line in wide[1:4]] == [
        ["rack-1-ippool", "192.168.1.0/24", "true", "Always", "Never", "false", "false", "rack"],
        ["split-rack-0-ippool-0", "192.168.0.0/25", "true", "Always", "Never", "false", "false", "rack"],
        ["split-rack-0-ippool-1", "192.168.0.128/25", "true", "Always", "Never", "false", "false", "rack"]]
    assert 'rack == "0"' in wide[2] and 'rack == "0"' in wide[3]
    blocks = seed("ipam", "show", "--show-blocks").out
    assert "| IP Pool  | 192.168.0.0/25   |       128 | 1 (1%)     | 0 (0%)       | 127 (99%)  |" in blocks
    assert "| Block    | 192.168.0.64/26  |        64 | 1 (2%)     | 0 (0%)       | 63 (98%)   |" in blocks
    # the block is still kube-node-0's: its next address comes from it
    assert assign(seed, "--node", "kube-node-0", "--handle", "next") == ["192.168.0.65"]
    assert seed("ipam", "check").code == 0


def test_split_by_cidr(seed):
    r = seed("ipam", "split", "4", "--cidr", "192.168.1.0/24")
    assert r.code == 0 and "Created split-rack-1-ippool-3 with CIDR 192.168.1.192/26.\n" in r.out
    assert "rack-1-ippool " not in seed("get", "ippool").out


def test_split_help_says_one_transaction_no_lock(cli):
    r = cli("ipam", "split", "--help")
    assert r.code == 0 and "no datastore lock" in r.out and "one transaction" in r.out


@pytest.mark.parametrize("argv,code,message", [
    (["3", "--name", "rack-0-ippool"], 2, "number to split CIDR into is not a valid power of 2: 3"),
    (["1", "--name", "rack-0-ippool"], 2, "number to split CIDR into is not a valid power of 2: 1"),
    (["two", "--name", "rack-0-ippool"], 2, "two is not a valid number"),
    (["8", "--name", "rack-0-ippool"], 2, "IP pool size is too small"),  # /27 pools with /26 blocks
    (["2", "--name", "slash32"], 2, "the CIDR 10.5.0.1/32 is not large enough to be split into 2 parts"),
    (["2", "--name", "nope"], 1, "unable to find IP pool with name nope"),
    (["2", "--cidr", "10.0.0.0/8"], 1, "unable to find IP pool covering the specified CIDR 10.0.0.0/8"),
    (["2", "--cidr", "bad"], 2, "invalid CIDR 'bad'"),
    (["2"], 2, "one of the arguments --cidr --name is required"),
])
def test_split_bad_input_changes_nothing(seed, sqlite_url, argv, code, message):
    seed("create", "-f", "-", stdin=pool_doc("slash32", "10.5.0.1/32", "  blockSize: 32\n"))
    unchanged(seed, sqlite_url, ["ipam", "split", *argv], code, message)


def test_split_refuses_when_a_child_name_exists(seed, sqlite_url):
    seed("create", "-f", "-", stdin=pool_doc("split-rack-0-ippool-1", "10.8.0.0/24"))
    unchanged(seed, sqlite_url, ["ipam", "split", "2", "--name", "rack-0-ippool"], 2,
              "IPPool(split-rack-0-ippool-1) already exists")


# ---------------------------------------------------------------- get workloadendpoints


def test_get_workloadendpoints_tables(seed, sqlite_url):
    from topoipam.ipam import IpamService
    from topoipam.store import open_store

    assign(seed, "--node", "kube-node-0", "--handle", "k8s.a", "--namespace", "default", "--attr", "pod=nginx-a")
    assign(seed, "--node", "kube-node-2", "--ipv4", "2", "--handle", "k8s.b", "--namespace", "web",
           "--attr", "pod=api-b")
    assign(seed, "--node", "kube-node-3", "--handle", "bare")
    store = open_store(sqlite_url)
    try:  # a tunnel address is not a workload
        IpamService(store).assign_ip("192.168.1.1", "tunnel", {"type": "ipipTunnelAddress"}, "kube-node-3")
    finally:
        store.close()
    expected = ("NAME      NAMESPACE   IP                            NODE          \n"
                "bare      <none>      192.168.1.128                 kube-node-3   \n"
                "nginx-a   default     192.168.0.64                  kube-node-0   \n"
                "api-b     web         192.168.1.192,192.168.1.193   kube-node-2   \n"
                "\n")
    for alias in ("workloadendpoints", "workloadendpoint", "wep", "weps", "WEPS"):
        r = seed("get", alias)
        assert (r.code, r.out, r.err) == (0, expected, ""), alias
    r = seed("get", "wep", "-o", "wide")
    assert r.out == (
        "NAME      NAMESPACE   IP                            NODE          POOL            BLOCK              \n"
        "bare      <none>      192.168.1.128                 kube-node-3   rack-1-ippool   192.168.1.128/26   \n"
        "nginx-a   default     192.168.0.64                  kube-node-0   rack-0-ippool   192.168.0.64/26    \n"
        "api-b     web         192.168.1.192,192.168.1.193   kube-node-2   rack-1-ippool   192.168.1.192/26   \n"
        "\n")
    r = seed("get", "wep", "api-b")
    assert r.out.splitlines()[1].split() == ["api-b", "web", "192.168.1.192,192.168.1.193", "kube-node-2"]
    r = seed("get", "wep", "api-b", "ghost")
    assert r.code == 1 and "api-b" in r.out
    assert r.err == "resource does not exist: WorkloadEndpoint(ghost) with error: <nil>\n"
    unchanged(seed, sqlite_url, ["get", "wep", "-o", "yaml"], 2, "unrecognized output format 'yaml'")
    # every other kind still reaches the resource commands
    assert seed("get", "ippool").out.startswith("NAME            CIDR             SELECTOR")
    assert seed("get", "bgppeer").code == 2


def test_get_workloadendpoints_empty(cli):
    r = cli("get", "weps")
    assert (r.code, r.out) == (0, "NAME   NAMESPACE   IP   NODE   \n\n")


@pytest.mark.parametrize("argv", [
    ["ipam", "show"], ["ipam", "show", "--ip", "10.0.0.1"], ["ipam", "check"], ["ipam", "release", "--ip", "10.0.0.1"],
    ["ipam", "configure", "--strictaffinity=true"], ["ipam", "split", "2", "--name", "p"],
    ["ipam", "assign", "--node", "n"], ["get", "wep"],
])
def test_datastore_unavailable_exits_3(capsys, argv):
    from topoipam.cli.main import main

    code = main(["--datastore", "sqlite:///proc/no-such-dir/topoipam.db", *argv])
    out, err = capsys.readouterr()
    assert (code, out) == (3, "")
    prefix = "error: " if argv[1:2] == ["configure"] else ""  # calicoctl prefixes configure's datastore errors
    assert err.startswith(prefix + "cannot open SQLite datastore /proc/no-such-dir/topoipam.db")
    assert "Traceback" not in err


class _ConfigFlapping:
    """The real SQLite store; before each of our first ``races`` commits that write the IPAM
    configuration, another writer deletes it if present or creates it if absent (so every plan we made
    is stale, alternately as a create and as an update)."""

    def __init__(self, url, races):
        from topoipam.resources.keys import resource_key
        from topoipam.store import open_store
        from topoipam.store.counting import CountingStore

        class Flapping(CountingStore):
            def commit(inner_self, ops):
                if self.races and any(op.key == self.key for op in ops):
                    self.races -= 1
                    self.flip()
                return super(Flapping, inner_self).commit(ops)

        self.url, self.races, self.key = url, races, resource_key("IPAMConfiguration", "default")
        self.store = Flapping(open_store(url))

    def flip(self):
        from topoipam.model.codec import decode_documents
        from topoipam.resources.service import ResourceService
        from topoipam.store import open_store

        with open_store(self.url) as other:
            svc = ResourceService(other)
            if other.get(self.key) is None:
                svc.create(decode_documents("kind: IPAMConfiguration\napiVersion: projectcalico.org/v3\n"
                                            "metadata: {name: default}\nspec: {strictAffinity: false}\n", "racer"))
            else:
                assert svc.delete([("IPAMConfiguration", "default")])[0][2] is None


def test_configure_under_concurrent_create_and_delete_lands_once_the_races_stop(cli, sqlite_url):
    import argparse
    import io
    import types

    from topoipam.cli.ipam import run_configure
    from topoipam.resources import repo

    cli("get", "ippool")  # creates the datastore file
    flapping = _ConfigFlapping(sqlite_url, races=6)
    ctx = types.SimpleNamespace(store=flapping.store, out=io.StringIO())
    try:
        code = run_configure(argparse.Namespace(strictaffinity="true", max_blocks_per_host="7"), ctx)
        assert (code, flapping.races) == (0, 0)
        spec = repo.get_ipam_config(flapping.store).spec
        assert (spec.strict_affinity, spec.max_blocks_per_host) == (True, 7)
    finally:
        flapping.store.close()


def test_get_workloadendpoints_is_a_branch_of_get_not_a_wrapper(cli):
    """``get``'s run is cli.resources.run_get itself (no module wraps it or edits argparse's internals)."""
    from topoipam.cli import resources
    from topoipam.cli.main import build_parser

    assert build_parser().parse_args(["get", "wep"]).run is resources.run_get
    r = cli("get", "--help")
    assert r.code == 0 and "workloadendpoint (wep: IPAM's workload allocations)" in r.out
    r = cli("get", "WEP", "-o", "wide")
    assert (r.code, r.out.split()) == (0, ["NAME", "NAMESPACE", "IP", "NODE", "POOL", "BLOCK"]), r
