"""model.codec: YAML/JSON resource files, multi-document, List kinds, errors, output formats."""

from __future__ import annotations

import json
import pathlib
import re

import pytest

from seed_yaml import RACK_POOLS
from topoipam.errors import ValidationError
from topoipam.model.codec import decode_documents, dumps_json, dumps_yaml
from topoipam.model.storage import resource_to_dict
from topoipam.model.validate import validate

SEED = pathlib.Path("/work/shared/seed/000_f45c358d4eeae7f9.txt")



def decode_error(text: str, source: str = "rack.yaml") -> str:
    with pytest.raises(ValidationError) as info:
        decode_documents(text, source)
    return str(info.value)


def test_seed_rack_pools_parse_and_validate():
    pools = [validate(p) for p in decode_documents(RACK_POOLS, "rack.yaml")]
    assert [(p.name, p.spec.cidr, p.spec.ipip_mode, p.spec.nat_outgoing, p.spec.node_selector, p.spec.block_size)
            for p in pools] == [
        ("rack-0-ippool", "192.168.0.0/24", "Always", True, 'rack == "0"', 26),
        ("rack-1-ippool", "192.168.1.0/24", "Always", True, 'rack == "1"', 26),
    ]


@pytest.mark.skipif(not SEED.exists(), reason="seed tutorial not present")
def test_every_ippool_block_of_the_seed_parses_and_validates():
    text = SEED.read_text()
    blocks = re.findall(r"^(apiVersion: projectcalico\.org/v3\nkind: IPPool\n.*?)(?=^EOF|^```)", text, re.M | re.S)
    assert len(blocks) >= 3
    for block in blocks:
        (pool,) = decode_documents(block, "seed")
        assert validate(pool).spec.block_size == 26


def test_multi_document_with_empty_documents_and_comments():
    text = "---\n# nothing here\n---\n" + RACK_POOLS + "---\n...\n"
    assert [p.name for p in decode_documents(text, "f.yaml")] == ["rack-0-ippool", "rack-1-ippool"]


def test_list_kind_is_expanded():
    text = """\
apiVersion: projectcalico.org/v3
kind: IPPoolList
metadata:
  resourceVersion: "12"
items:
- metadata:
    name: a
  spec:
    cidr: 10.0.0.0/24
- apiVersion: projectcalico.org/v3
  kind: IPPool
  metadata:
    name: b
  spec:
    cidr: 10.0.1.0/24
"""
    pools = decode_documents(text, "list.yaml")
    assert [(p.kind, p.name, p.spec.cidr) for p in pools] == [("IPPool", "a", "10.0.0.0/24"),
                                                            ("IPPool", "b", "10.0.1.0/24")]


def test_node_list_and_mixed_kinds():
    text = """\
kind: NodeList
apiVersion: projectcalico.org/v3
items:
- metadata: {name: kube-node-0, labels: {rack: "0"}}
---
apiVersion: projectcalico.org/v3
kind: IPAMConfiguration
metadata: {name: default}
spec: {strictAffinity: true, autoAllocateBlocks: true, maxBlocksPerHost: 2}
---
apiVersion: projectcalico.org/v3
kind: IPReservation
metadata: {name: r}
spec: {reservedCIDRs: [10.0.0.5]}
"""
    kinds = [(r.kind, r.name) for r in decode_documents(text, "mixed.yaml")]
    assert kinds == [("Node", "kube-node-0"), ("IPAMConfiguration", "default"), ("IPReservation", "r")]


def test_list_item_of_wrong_kind_is_an_error():
    text = "apiVersion: projectcalico.org/v3\nkind: IPPoolList\nitems:\n- kind: Node\n  metadata: {name: n}\n"
    assert decode_error(text) == ('document 1 (IPPoolList) of rack.yaml: items[0].kind: a IPPoolList holds '
                                  'IPPool items, got string "Node"')


def test_error_in_list_item_names_item_and_field():
    text = "apiVersion: projectcalico.org/v3\nkind: IPPoolList\nitems:\n- metadata: {name: a}\n  spec: {blockSize: x}\n"
    assert decode_error(text) == ('document 1 (IPPoolList) of rack.yaml, items[0]: spec.blockSize: '
                                  'expected an integer, got string "x"')


def test_json_input_single_and_array():
    doc = {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "j"},
           "spec": {"cidr": "10.2.0.0/16", "blockSize": 24}}
    (pool,) = decode_documents(json.dumps(doc), "pool.json")
    assert (pool.name, pool.spec.block_size) == ("j", 24)
    doc2 = dict(doc, metadata={"name": "k"})
    assert [p.name for p in decode_documents(json.dumps([doc, doc2]), "pools.json")] == ["j", "k"]


def test_second_document_error_names_document_kind_and_name():
    bad = RACK_POOLS.replace("cidr: 192.168.1.0/24", 'cidr: 192.168.1.0/24\n  blockSize: "26"')
    assert decode_error(bad) == ('document 2 (IPPool rack-1-ippool) of rack.yaml: spec.blockSize: '
                                 'expected an integer, got string "26"')


def test_unknown_field_and_kind_name_the_document():
    assert decode_error(RACK_POOLS.replace("natOutgoing", "natOutgoin", 1)).startswith(
        "document 1 (IPPool rack-0-ippool) of rack.yaml: spec.natOutgoin: unknown field")
    assert decode_error(RACK_POOLS.replace("kind: IPPool", "kind: BGPPeer", 1)).startswith(
        'document 1 (BGPPeer rack-0-ippool) of rack.yaml: kind: unknown resource type "BGPPeer"')


def test_malformed_yaml_gives_line_and_column():
    message = decode_error("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: [a\n", "bad.yaml")
    assert message.startswith("bad.yaml: cannot parse YAML at line ")
    assert re.search(r"line \d+, column \d+", message)


def test_malformed_json_falls_back_to_yaml_error():
    assert decode_error('{"kind": "IPPool",', "bad.json").startswith("bad.json: cannot parse YAML at line 2, column 1")


@pytest.mark.parametrize("text", ["", "   \n", "---\n", "# only a comment\n", "---\n---\n"])
def test_empty_input(text):
    assert decode_error(text) == "No resources specified"


def test_timestamps_stay_strings():
    text = RACK_POOLS.split("---")[0].replace("metadata:\n", "metadata:\n  creationTimestamp: 2024-05-01T10:00:00Z\n")
    (pool,) = decode_documents(text, "t.yaml")
    assert pool.metadata.creation_timestamp == "2024-05-01T10:00:00Z"


def test_dumps_yaml_sorted_keys_block_style():
    pool = validate(decode_documents(RACK_POOLS, "rack.yaml")[0])
    out = dumps_yaml(resource_to_dict(pool))
    assert out == """\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: rack-0-ippool
spec:
  allowedUses:
  - Workload
  - Tunnel
  assignmentMode: Automatic
  blockSize: 26
  cidr: 192.168.0.0/24
  ipipMode: Always
  natOutgoing: true
  nodeSelector: rack == "0"
  vxlanMode: Never
"""
    assert [p.name for p in decode_documents(out, "again.yaml")] == ["rack-0-ippool"]


def test_dumps_json_struct_order_two_space_no_trailing_newline():
    pool = validate(decode_documents(RACK_POOLS, "rack.yaml")[0])
    out = dumps_json(resource_to_dict(pool))
    assert not out.endswith("\n")
    assert out.startswith('{\n  "kind": "IPPool",\n  "apiVersion": "projectcalico.org/v3",\n  "metadata": {\n')
    assert '\n    "cidr": "192.168.0.0/24",\n    "vxlanMode": "Never",\n    "ipipMode": "Always",' in out
    (again,) = decode_documents(out, "again.json")
    assert again == pool


def test_dumps_yaml_quotes_like_go_yaml():
    out = dumps_yaml({"metadata": {"creationTimestamp": "2024-01-01T00:00:00Z", "resourceVersion": "12",
                                   "labels": {"flag": "yes", "rack": "0"}}})
    assert out == ('metadata:\n  creationTimestamp: "2024-01-01T00:00:00Z"\n  labels:\n    flag: "yes"\n'
                   '    rack: "0"\n  resourceVersion: "12"\n')
    (node,) = decode_documents("apiVersion: projectcalico.org/v3\nkind: Node\n" + out.replace(
        "metadata:\n", "metadata:\n  name: n\n"), "n.yaml")
    assert node.labels == {"flag": "yes", "rack": "0"} and node.metadata.resource_version == "12"


def test_list_to_dict_round_trips_through_decode():
    from topoipam.model.codec import list_to_dict

    pools = [validate(p) for p in decode_documents(RACK_POOLS, "rack.yaml")]
    d = list_to_dict("IPPool", pools, "42")
    assert list(d) == ["kind", "apiVersion", "metadata", "items"]
    assert d["kind"] == "IPPoolList" and d["metadata"] == {"resourceVersion": "42"}
    assert decode_documents(dumps_yaml(d), "list.yaml") == pools
    assert decode_documents(dumps_json(d), "list.json") == pools


def test_duplicate_keys_are_errors():
    yaml_text = RACK_POOLS.split("---")[0] + "  cidr: 10.0.0.0/24\n"
    message = decode_error(yaml_text)
    assert message.startswith("rack.yaml: cannot parse YAML at line 10, column 3: mapping key 'cidr' already defined")
    json_text = '{"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "kind": "Node"}'
    assert decode_error(json_text, "p.json") == "p.json: cannot parse JSON: key 'kind' given twice"


# Found by tests/test_fuzz.py: each of these crashed the process or escaped as a traceback.

def test_nesting_deeper_than_the_limit_is_an_error_not_a_crash():
    # 100,000 levels overflowed libyaml's recursive composer: a segfault, not an exception.
    deep_yaml = "a: " + "[" * 100_000 + "]" * 100_000
    assert decode_error(deep_yaml, "d.yaml") == "d.yaml: cannot parse YAML at line 1, column 67: nested more than 64 levels deep"
    for deep_json in ("[" * 100_000 + "]" * 100_000, '{"a":' * 500 + "1" + "}" * 500):  # RecursionError / our limit
        assert decode_error(deep_json, "d.json") == "d.json: cannot parse JSON: nested more than 64 levels deep"
    decode_documents("apiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: n, labels: {a: b}}\n", "ok")


def test_numbers_over_pythons_digit_limit_are_errors():
    doc = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/24, blockSize: %s}\n"
    assert "cannot parse YAML: Exceeds the limit (4300 digits)" in decode_error(doc % ("9" * 5000), "p.yaml")
    as_json = json.dumps({"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "p"}})
    assert "cannot parse JSON: Exceeds the limit" in decode_error(as_json[:-1] + ', "x": ' + "9" * 5000 + "}", "p.json")


def test_a_list_as_a_key_or_a_kind_is_an_error():
    assert decode_error("? [a, b]\n: 1\n", "k.yaml") == "k.yaml: cannot parse YAML at line 1, column 3: found unhashable key"
    message = decode_error('{"apiVersion": "projectcalico.org/v3", "kind": ["IPPoolList"], "metadata": {}}', "k.json")
    assert "kind" in message


def test_messages_quote_a_long_value_cut():
    message = decode_error(json.dumps({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                                       "metadata": {"name": "p"}, "spec": {"blockSize": "x" * 1_000_000}}), "big.json")
    assert len(message) < 400 and "... (1000002 characters)" in message
