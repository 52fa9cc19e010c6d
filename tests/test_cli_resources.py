"""The calicoctl-compatible resource commands, driven through the real entry point on real SQLite files.

Tables are compared byte for byte (tabwriter padding, trailing spaces, the
blank line after each table); messages and exit codes are calicoctl's
(reference 7.1-7.3) or DESIGN.md's.
"""

from __future__ import annotations

import json

import pytest

POOL = """\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: {name}
spec:
  cidr: {cidr}
  ipipMode: Always
  natOutgoing: true
  nodeSelector: {selector}
"""

NODE = """\
apiVersion: projectcalico.org/v3
kind: Node
metadata:
  name: {name}
"""


def pool(name="ippool-name1", cidr="10.0.1.0/24", selector="foo == 'bar'"):
    return POOL.format(name=name, cidr=cidr, selector=selector)


def node(name):
    return NODE.format(name=name)


def test_get_ippool_ps_and_wide_tables_are_calicoctls_byte_for_byte(cli):
    assert cli("create", "-f", "-", stdin=pool()).code == 0
    ps = cli("get", "ippool")
    assert ps.code == 0 and ps.err == ""
    assert ps.out == (
        "NAME           CIDR          SELECTOR       \n"
        "ippool-name1   10.0.1.0/24   foo == 'bar'   \n"
        "\n"
    )
    wide = cli("get", "ippool", "-o", "wide")
    assert wide.out == (
        "NAME           CIDR          NAT    IPIPMODE   VXLANMODE   DISABLED   DISABLEBGPEXPORT   SELECTOR       ASSIGNMENTMODE   \n"
        "ippool-name1   10.0.1.0/24   true   Always     Never       false      false              foo == 'bar'   Automatic        \n"
        "\n"
    )


def test_minimum_column_width_is_five(cli):
    cli("create", "-f", "-", stdin=node("a"))
    assert cli("get", "node").out == "NAME   \na      \n\n"
    # Empty cells still take the minimum width of 5.
    assert cli("get", "node", "-o", "wide").out == "NAME   ASN   IPV4   IPV6   \na                          \n\n"


def test_node_wide_shows_asn_and_addresses(cli):
    doc = """\
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n1}
spec:
  bgp: {ipv4Address: 10.0.0.1/24, ipv6Address: "fd00::1/64", asNumber: 64600}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n2}
spec:
  bgp: {ipv4Address: 10.0.0.2/24}
"""
    assert cli("create", "-f", "-", stdin=doc).out == "Successfully created 2 'Node' resource(s)\n"
    assert cli("get", "nodes", "-o", "wide").out == (
        "NAME   ASN       IPV4          IPV6         \n"
        "n1     64600     10.0.0.1/24   fd00::1/64   \n"
        "n2     (64512)   10.0.0.2/24                \n"
        "\n"
    )


def test_ipamconfig_and_ipreservation_tables(cli):
    docs = """\
apiVersion: projectcalico.org/v3
kind: IPAMConfiguration
metadata: {name: default}
spec: {strictAffinity: true, maxBlocksPerHost: 4, autoAllocateBlocks: true}
---
apiVersion: projectcalico.org/v3
kind: IPReservation
metadata: {name: gateways}
spec:
  reservedCIDRs: [192.168.0.0/31, 192.168.1.0/30]
"""
    r = cli("create", "-f", "-", stdin=docs)
    assert (r.code, r.out) == (0, "Successfully created 2 resource(s)\n")
    assert cli("get", "ipamconfig").out == (
        "NAME      STRICTAFFINITY   AUTOALLOCATEBLOCKS   \n"
        "default   true             true                 \n\n"
    )
    assert cli("get", "ipamconfigs", "-o", "wide").out == (
        "NAME      STRICTAFFINITY   AUTOALLOCATEBLOCKS   MAXBLOCKSPERHOST   \n"
        "default   true             true                 4                  \n\n"
    )
    assert cli("get", "ipreservation").out == "NAME       \ngateways   \n\n"
    assert cli("get", "ipreservations", "-o", "wide").out == (
        "NAME       CIDRS                           \n"
        "gateways   192.168.0.0/31,192.168.1.0/30   \n\n"
    )


def test_ipreservation_cidrs_truncated_at_80_like_calicoctl(cli):
    cidrs = [f"10.0.{i}.0/24" for i in range(10)]
    doc = ("apiVersion: projectcalico.org/v3\nkind: IPReservation\nmetadata: {name: many}\n"
           f"spec: {{reservedCIDRs: [{', '.join(cidrs)}]}}\n")
    assert cli("create", "-f", "-", stdin=doc).code == 0
    row = cli("get", "ipreservation", "-o", "wide").out.splitlines()[1]
    cell = row.split()[1]
    assert cell == ",".join(cidrs)[:77] + "..." and len(cell) == 80


def test_ipamconfiguration_only_named_default(cli):
    r = cli("create", "-f", "-", stdin="apiVersion: projectcalico.org/v3\nkind: IPAMConfiguration\nmetadata: {name: other}\n")
    assert r.code == 2
    assert "IPAMConfiguration" in r.err and "default" in r.err
    assert cli("get", "ipamconfig").out.count("\n") == 2


@pytest.mark.parametrize("alias", ["ippool", "ippools", "ipp", "ipps", "pool", "pools", "IPPool", "IPPOOLS"])
def test_every_ippool_alias(cli, alias):
    cli("create", "-f", "-", stdin=pool())
    assert cli("get", alias).out.startswith("NAME           CIDR          SELECTOR")


@pytest.mark.parametrize("alias", ["node", "nodes", "no", "nos"])
def test_every_node_alias(cli, alias):
    cli("create", "-f", "-", stdin=node("kube-node-0"))
    assert cli("get", alias).out == "NAME          \nkube-node-0   \n\n"
    assert cli("label", alias, "kube-node-0", "rack=0").code == 0


@pytest.mark.parametrize("alias", ["ipamconfiguration", "ipamconfigurations", "ipamconfig", "ipamconfigs"])
def test_every_ipamconfig_alias(cli, alias):
    assert cli("get", alias).out.startswith("NAME   STRICTAFFINITY")


@pytest.mark.parametrize("alias", ["ipreservation", "ipreservations", "reservation", "reservations"])
def test_every_ipreservation_alias(cli, alias):
    assert cli("get", alias).out == "NAME   \n\n"


def test_unknown_kind(cli):
    r = cli("get", "bgppeers")
    assert (r.code, r.out, r.err) == (2, "", "resource type 'bgppeers' is not supported\n")


def test_output_name_is_rejected_like_calicoctl(cli):
    r = cli("get", "ippool", "-o", "name")
    assert (r.code, r.out, r.err) == (2, "", "unrecognized output format 'name'\n")


def test_named_get_prints_one_table_per_name_and_fails_for_a_missing_one(cli):
    cli("create", "-f", "-", stdin=pool("p1", "10.0.1.0/24") + "---\n" + pool("p2", "10.0.2.0/24"))
    r = cli("get", "ippool", "p2", "blah", "p1")
    assert r.code == 1
    assert r.out == (
        "NAME   CIDR          SELECTOR       \np2     10.0.2.0/24   foo == 'bar'   \n\n"
        "NAME   CIDR          SELECTOR       \np1     10.0.1.0/24   foo == 'bar'   \n\n"
    )
    assert r.err == "resource does not exist: IPPool(blah) with error: <nil>\n"


def test_list_is_in_name_order(cli):
    cli("create", "-f", "-", stdin=pool("zz", "10.0.9.0/24") + "---\n" + pool("aa", "10.0.8.0/24"))
    rows = cli("get", "pools").out.splitlines()
    assert [row.split()[0] for row in rows[1:3]] == ["aa", "zz"]


def test_get_yaml_and_json(cli):
    cli("create", "-f", "-", stdin=pool())
    one = cli("get", "ippool", "ippool-name1", "-o", "json")
    obj = json.loads(one.out)
    assert list(obj) == ["kind", "apiVersion", "metadata", "spec"]
    assert obj["metadata"]["resourceVersion"] and obj["metadata"]["uid"]
    assert obj["metadata"]["creationTimestamp"].endswith("Z")
    assert obj["spec"]["blockSize"] == 26 and obj["spec"]["allowedUses"] == ["Workload", "Tunnel"]
    assert one.out.endswith("}\n")
    listing = json.loads(cli("get", "ippool", "-o", "json").out)
    assert listing["kind"] == "IPPoolList" and [i["metadata"]["name"] for i in listing["items"]] == ["ippool-name1"]
    y = cli("get", "ippool", "-o", "yaml").out
    assert y.startswith("apiVersion: projectcalico.org/v3\nitems:\n")
    assert "kind: IPPoolList" in y and "nodeSelector: foo == 'bar'" in y
    named = cli("get", "ippool", "ippool-name1", "-o", "yaml").out
    assert named.startswith("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n")


def test_create_duplicate_and_skip_exists(cli):
    assert cli("create", "-f", "-", stdin=pool()).out == "Successfully created 1 'IPPool' resource(s)\n"
    r = cli("create", "-f", "-", stdin=pool())
    assert (r.code, r.out) == (1, "")
    assert r.err == "failed to create 'IPPool' resource: [resource already exists: IPPool(ippool-name1)]\n"
    r = cli("create", "--skip-exists", "-f", "-", stdin=pool())
    assert (r.code, r.out) == (0, "Successfully created 1 'IPPool' resource(s)\n")


def test_create_from_file_and_missing_file(cli, tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(pool())
    assert cli("create", "-f", str(f)).code == 0
    r = cli("create", "-f", str(tmp_path / "nope.yaml"))
    assert r.code == 2 and "nope.yaml" in r.err and "No such file" in r.err


def test_apply_creates_then_updates_and_keeps_identity(cli):
    assert cli("apply", "-f", "-", stdin=pool()).out == "Successfully applied 1 'IPPool' resource(s)\n"
    before = json.loads(cli("get", "ippool", "ippool-name1", "-o", "json").out)
    changed = pool().replace("natOutgoing: true", "natOutgoing: false")
    assert cli("apply", "-f", "-", stdin=changed).code == 0
    after = json.loads(cli("get", "ippool", "ippool-name1", "-o", "json").out)
    assert "natOutgoing" not in after["spec"]
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["metadata"]["creationTimestamp"] == before["metadata"]["creationTimestamp"]
    assert int(after["metadata"]["resourceVersion"]) > int(before["metadata"]["resourceVersion"])


def test_replace_missing_and_stale_resource_version(cli):
    r = cli("replace", "-f", "-", stdin=pool())
    assert r.code == 1
    assert r.err == ("failed to replace 'IPPool' resource: resource does not exist: "
                     "IPPool(ippool-name1) with error: <nil>\n")
    cli("create", "-f", "-", stdin=pool())
    current = json.loads(cli("get", "ippool", "ippool-name1", "-o", "json").out)
    rv = current["metadata"]["resourceVersion"]
    cli("label", "ippool", "ippool-name1", "a=b")  # moves the revision on
    stale = pool().replace("metadata:\n", f"metadata:\n  resourceVersion: '{rv}'\n")
    r = cli("replace", "-f", "-", stdin=stale)
    assert (r.code, r.err) == (1, "failed to replace 'IPPool' resource: update conflict: IPPool(ippool-name1)\n")
    r = cli("apply", "-f", "-", stdin=stale)
    assert (r.code, r.err) == (1, "failed to apply 'IPPool' resource: [update conflict: IPPool(ippool-name1)]\n")
    fresh = json.loads(cli("get", "ippool", "ippool-name1", "-o", "json").out)["metadata"]["resourceVersion"]
    ok = pool().replace("metadata:\n", f"metadata:\n  resourceVersion: '{fresh}'\n")
    assert cli("replace", "-f", "-", stdin=ok).out == "Successfully replaced 1 'IPPool' resource(s)\n"


def test_replace_cannot_change_cidr(cli):
    cli("create", "-f", "-", stdin=pool())
    r = cli("replace", "-f", "-", stdin=pool(cidr="10.0.2.0/24"))
    assert r.code == 2
    assert "IPPool CIDR cannot be modified" in r.err and r.err.startswith("failed to replace 'IPPool' resource: ")


def test_delete_by_name_and_file_with_calicoctl_messages(cli, tmp_path):
    cli("create", "-f", "-", stdin=pool("p1", "10.0.1.0/24") + "---\n" + pool("p2", "10.0.2.0/24"))
    r = cli("delete", "ippool", "p1", "nope")
    assert r.code == 1
    assert r.out == "Successfully deleted 1 'IPPool' resource(s)\n"
    assert r.err == "Failed to delete 'IPPool' resource: resource does not exist: IPPool(nope) with error: <nil>\n"
    f = tmp_path / "p2.yaml"
    f.write_text(pool("p2", "10.0.2.0/24"))
    assert cli("delete", "-f", str(f)).out == "Successfully deleted 1 'IPPool' resource(s)\n"
    assert cli("get", "ippool").out == "NAME   CIDR   SELECTOR   \n\n"


def test_delete_only_missing_prints_no_success(cli):
    r = cli("delete", "node", "ghost")
    assert (r.code, r.out) == (1, "")
    assert r.err == "Failed to delete 'Node' resource: resource does not exist: Node(ghost) with error: <nil>\n"


def test_delete_usage_errors(cli):
    assert cli("delete").code == 2
    r = cli("delete", "ippool")
    assert r.code == 2 and "NAME" in r.err


def test_patch_merge_patch(cli):
    cli("create", "-f", "-", stdin=pool())
    r = cli("patch", "ippool", "ippool-name1", "-p", '{"spec":{"disabled":true,"natOutgoing":null}}')
    assert (r.code, r.out) == (0, "Successfully patched 1 'IPPool' resource\n")
    assert cli("get", "ippool", "-o", "wide").out.splitlines()[1].split()[2:6] == ["false", "Always", "Never", "true"]
    r = cli("patch", "ippool", "ippool-name1", "-p", '{"spec":{"blockSize":28}}')
    assert r.code == 2 and "IPPool BlockSize cannot be modified" in r.err
    r = cli("patch", "ippool", "missing", "-p", "{}")
    assert (r.code, r.err) == (1, "failed to patch 'IPPool' resource: resource does not exist: IPPool(missing) with error: <nil>\n")
    r = cli("patch", "ippool", "ippool-name1", "-p", "{not json")
    assert r.code == 2 and "not valid JSON" in r.err
    r = cli("patch", "ippool", "ippool-name1", "-p", '{"spec":{"bogus":1}}')
    assert r.code == 2 and "spec.bogus" in r.err


def test_label_messages_exactly_as_calicoctl(cli):
    cli("create", "-f", "-", stdin=node("node1"))
    assert cli("label", "nodes", "node1", "cluster=a").out == "Successfully set label cluster on nodes node1\n"
    assert cli("label", "nodes", "node1", "cluster=a").out == "Successfully updated label cluster on nodes node1\n"
    r = cli("label", "nodes", "node1", "cluster=b")
    assert (r.code, r.out) == (1, "")
    assert r.err == ("failed to update label of nodes node1, key cluster is already present. "
                     "please use '--overwrite' to set a new value\n")
    r = cli("label", "nodes", "node1", "cluster=b", "--overwrite")
    assert r.out == "Successfully updated label cluster on nodes node1\n"
    assert cli("label", "nodes", "node1", "cluster", "--remove").out == "Successfully removed label cluster from nodes node1\n"
    r = cli("label", "nodes", "node1", "cluster", "--remove")
    assert (r.code, r.err) == (1, "cannot remove label of nodes node1, key cluster does not exist\n")
    r = cli("label", "no", "ghost", "a=b")
    assert (r.code, r.err) == (1, "no ghost not found\n")
    for bad in ("rack", "a=b=c"):
        r = cli("label", "nodes", "node1", bad)
        assert (r.code, r.err) == (2, f"invalid label {bad}\n")
    r = cli("label", "nodes", "node1", "bad key=x")
    assert r.code == 2


def test_usage_errors_exit_2_without_traceback(cli):
    for argv in ([], ["frobnicate"], ["get"], ["create"], ["patch", "ippool", "x"], ["get", "ippool", "--bogus"]):
        r = cli(*argv)
        assert r.code == 2, argv
        assert "Traceback" not in r.err and r.err.strip(), argv
    assert cli("--help").code == 0


def test_datastore_unavailable_exits_3(tmp_path, capsys):
    from topoipam.cli.main import main

    blocker = tmp_path / "file"
    blocker.write_text("")
    code = main(["--datastore", f"sqlite://{blocker}/sub/db.sqlite", "get", "ippool"])
    err = capsys.readouterr().err
    assert code == 3 and "Traceback" not in err and str(blocker) in err


def test_mixed_kinds_wording_and_multi_document_apply_replace_delete(cli, tmp_path):
    both = pool("p1", "10.0.1.0/24") + "---\n" + node("n1")
    f = tmp_path / "both.yaml"
    f.write_text(both)
    assert cli("apply", "-f", str(f)).out == "Successfully applied 2 resource(s)\n"
    assert cli("replace", "-f", str(f)).out == "Successfully replaced 2 resource(s)\n"
    assert cli("create", "--skip-exists", "-f", str(f)).out == "Successfully created 2 resource(s)\n"
    r = cli("create", "-f", str(f))
    assert r.code == 1 and r.err.startswith("failed to create any resources: [document 1 of 2, IPPool(p1): "
                                            "resource already exists: IPPool(p1)]")
    assert cli("delete", "-f", str(f)).out == "Successfully deleted 2 resource(s)\n"
    assert cli("get", "nodes").out == "NAME   \n\n"


def test_json_input_and_list_kind(cli):
    doc = json.dumps({"apiVersion": "projectcalico.org/v3", "kind": "IPPoolList", "items": [
        {"metadata": {"name": "a"}, "spec": {"cidr": "10.1.0.0/24"}},
        {"metadata": {"name": "b"}, "spec": {"cidr": "fd00:1::/64", "vxlanMode": "Always"}}]})
    assert cli("create", "-f", "-", stdin=doc).out == "Successfully created 2 'IPPool' resource(s)\n"
    assert cli("get", "ippool").out == (
        "NAME   CIDR          SELECTOR   \n"
        "a      10.1.0.0/24   all()      \n"
        "b      fd00:1::/64   all()      \n\n"
    )


def test_patch_types(cli):
    cli("create", "-f", "-", stdin=pool())
    assert cli("patch", "pool", "ippool-name1", "--type", "merge", "-p", '{"spec":{"disabled":true}}').code == 0
    r = cli("patch", "pool", "ippool-name1", "-t", "json", "-p", "[]")
    assert (r.code, r.err) == (2, "patch type 'json' is not supported: use strategic or merge\n")
