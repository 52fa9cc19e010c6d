"""Rejected input: a clear message, exit 2, no traceback, and the SQLite file's contents exactly as before.

"Exactly as before" is a full dump of every table (records, revisions and the
store-wide revision counter) taken before and after the command.
"""

from __future__ import annotations

import pytest

from conftest import sqlite_dump

SEED = """\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: existing
spec:
  cidr: 10.0.0.0/16
---
apiVersion: projectcalico.org/v3
kind: Node
metadata:
  name: node1
  labels: {rack: "0"}
"""


def doc(name="p", cidr="10.1.0.0/24", extra=""):
    return (f"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: {name}\n"
            f"spec:\n  cidr: {cidr}\n{extra}")


CASES = {
    "malformed YAML": ("create", "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: [unclosed\n", "cannot parse YAML"),
    "wrong apiVersion": ("create", doc().replace("projectcalico.org/v3", "projectcalico.org/v1"), "apiVersion"),
    "unknown kind": ("create", doc().replace("kind: IPPool", "kind: BGPPeer"), "BGPPeer"),
    "unknown field": ("create", doc(extra="  ipipMod: Always\n"), "spec.ipipMod"),
    "wrong type": ("create", doc(extra="  blockSize: big\n"), "spec.blockSize"),
    "invalid CIDR": ("create", doc(cidr="10.1.0.300/24"), "IPPool CIDR must be a valid subnet"),
    "host-bit CIDR": ("create", doc(cidr="10.1.0.1/24"), "IPPool CIDR is not strictly masked"),
    "overlap with a stored pool": ("create", doc(cidr="10.0.1.0/24"),
                                   "IPPool(p) CIDR overlaps with IPPool(existing) CIDR 10.0.0.0/16"),
    "overlap among the new pools": ("create", doc("a", "10.2.0.0/16") + "---\n" + doc("b", "10.2.1.0/24"),
                                    "IPPool(b) CIDR overlaps with IPPool(a) CIDR 10.2.0.0/16"),
    "block size out of range": ("create", doc(extra="  blockSize: 33\n"), "IPv4 block size must be between 20 and 32"),
    "bad selector": ("create", doc(extra="  nodeSelector: rack === 0\n"), "NodeSelector"),
    "IPIP on IPv6": ("apply", doc(cidr="fd00::/64", extra="  ipipMode: Always\n"), "IPIP is not supported on an IPv6 IP pool"),
    "third document bad": ("create", doc("a", "10.3.0.0/24") + "---\n" + doc("b", "10.3.1.0/24") + "---\n"
                           + doc("c", "10.3.2.0/24", "  vxlanMode: sometimes\n"), "document 3 of 3"),
    "same name twice": ("create", doc("a", "10.3.0.0/24") + "---\n" + doc("a", "10.4.0.0/24"), "given twice"),
    "empty input": ("create", "", "No resources specified"),
    "apply: third document bad": ("apply", doc("existing", "10.0.0.0/16") + "---\n" + doc("x", "10.5.0.0/24") + "---\n"
                                  + doc("y", "10.5.1.0/24", "  blockSize: 19\n"), "document 3 of 3"),
}


@pytest.fixture
def seeded(cli, sqlite_url):
    assert cli("create", "-f", "-", stdin=SEED).code == 0
    return sqlite_dump(sqlite_url)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_file_exits_2_and_changes_nothing(cli, sqlite_url, seeded, case):
    verb, text, expected = CASES[case]
    r = cli(verb, "-f", "-", stdin=text)
    assert r.code == 2, r
    assert expected in r.err, r.err
    assert "Traceback" not in r.err and r.out == ""
    assert sqlite_dump(sqlite_url) == seeded


def test_third_document_message_names_it(cli, sqlite_url, seeded):
    _, text, _ = CASES["third document bad"]
    r = cli("create", "-f", "-", stdin=text)
    assert r.err.startswith("failed to create any 'IPPool' resources: [document 3 of 3, IPPool(c): error with field")
    assert r.err.rstrip().endswith("(nothing was created)")
    assert cli("get", "ippool").out.count("\n") == 3  # header, existing, blank line


def test_decode_error_names_the_document_and_source(cli, tmp_path, sqlite_url, seeded):
    f = tmp_path / "pools.yaml"
    f.write_text(doc("a", "10.3.0.0/24") + "---\n" + doc("b", "10.3.1.0/24", "  natOutgoing: maybe\n"))
    r = cli("create", "-f", str(f))
    assert r.code == 2 and "document 2 (IPPool b)" in r.err and "pools.yaml" in r.err and "spec.natOutgoing" in r.err
    assert sqlite_dump(sqlite_url) == seeded


@pytest.mark.parametrize("argv, expected", [
    (["label", "nodes", "node1", "rack"], "invalid label rack\n"),
    (["label", "nodes", "node1", "rack=1=2"], "invalid label rack=1=2\n"),
    (["label", "nodes", "node1", "bad key=x", "--overwrite"], "bad key"),
    (["patch", "ippool", "existing", "-p", '{"spec":{"cidr":"10.9.0.0/16"}}'], "IPPool CIDR cannot be modified"),
    (["patch", "ippool", "existing", "-p", '{"metadata":{"name":"other"}}'], "cannot change the kind or name"),
    (["patch", "ippool", "existing", "-p", '[1]'], "JSON object"),
    (["get", "ippool", "-o", "name"], "unrecognized output format 'name'\n"),
    (["delete", "wibble", "x"], "resource type 'wibble' is not supported\n"),
])
def test_bad_arguments_exit_2_and_change_nothing(cli, sqlite_url, seeded, argv, expected):
    r = cli(*argv)
    assert r.code == 2, r
    assert expected in r.err and "Traceback" not in r.err
    assert sqlite_dump(sqlite_url) == seeded


def test_failed_create_of_existing_changes_nothing(cli, sqlite_url, seeded):
    r = cli("create", "-f", "-", stdin=doc("new", "10.6.0.0/24") + "---\n" + doc("existing", "10.0.0.0/16"))
    assert r.code == 1
    assert r.err == ("failed to create any 'IPPool' resources: [document 2 of 2, IPPool(existing): "
                     "resource already exists: IPPool(existing)] (nothing was created)\n")
    assert sqlite_dump(sqlite_url) == seeded
