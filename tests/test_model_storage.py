"""model.storage and model.kinds: strict v3 dict decoding, Calico key order, storage round trips."""

from __future__ import annotations

import json

import re

import pytest

from topoipam.errors import ValidationError
from topoipam.model.kinds import KIND_PLURAL, canonical_kind
from topoipam.model.storage import from_storage, resource_from_dict, resource_to_dict, to_storage
from topoipam.model.types import (
    IPAMConfig,
    IPAMConfigSpec,
    IPPool,
    IPPoolSpec,
    IPReservation,
    IPReservationSpec,
    Metadata,
    Node,
    NodeBGPSpec,
    NodeSpec,
)

WHERE = "document 2 of rack.yaml"


def pool_dict(**spec):
    return {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "p"},
            "spec": {"cidr": "10.0.0.0/24", **spec}}


def error_of(d, where=WHERE) -> str:
    with pytest.raises(ValidationError) as info:
        resource_from_dict(d, where)
    return str(info.value)


# ------------------------------------------------------------------ kinds


@pytest.mark.parametrize("alias, kind", [
    ("ippool", "IPPool"), ("ippools", "IPPool"), ("ipp", "IPPool"), ("ipps", "IPPool"),
    ("pool", "IPPool"), ("pools", "IPPool"), ("IPPool", "IPPool"), ("IPPOOLS", "IPPool"),
    ("node", "Node"), ("nodes", "Node"), ("no", "Node"), ("Node", "Node"),
    ("ipamconfig", "IPAMConfiguration"), ("ipamconfigs", "IPAMConfiguration"),
    ("ipamconfiguration", "IPAMConfiguration"), ("IPAMConfigurations", "IPAMConfiguration"),
    ("ipreservation", "IPReservation"), ("ipreservations", "IPReservation"),
])
def test_canonical_kind_aliases(alias, kind):
    assert canonical_kind(alias) == kind


def test_canonical_kind_unknown_uses_calicoctl_text():
    with pytest.raises(ValidationError, match=r"^resource type 'bgppeerz' is not supported$"):
        canonical_kind("bgppeerz")


def test_kind_plural_covers_every_kind():
    assert KIND_PLURAL == {"IPPool": "ippools", "Node": "nodes", "IPAMConfiguration": "ipamconfigurations",
                           "IPReservation": "ipreservations", "Profile": "profiles"}


# ------------------------------------------------------------------ IPPool defaults (reference 1.1)


def test_ippool_defaults_filled_on_decode_and_encode():
    pool = resource_from_dict(pool_dict(), WHERE)
    s = pool.spec
    assert (s.vxlan_mode, s.ipip_mode, s.nat_outgoing, s.disabled, s.disable_bgp_export) == \
        ("Never", "Never", False, False, False)
    assert s.node_selector == "all()" and s.namespace_selector == ""
    assert s.allowed_uses == ["Workload", "Tunnel"] and s.assignment_mode == "Automatic"
    spec = resource_to_dict(pool)["spec"]
    assert spec == {"cidr": "10.0.0.0/24", "vxlanMode": "Never", "ipipMode": "Never", "blockSize": 26,
                    "nodeSelector": "all()", "allowedUses": ["Workload", "Tunnel"], "assignmentMode": "Automatic"}


def test_ippool_ipv6_default_block_size_in_output():
    pool = resource_from_dict(pool_dict(cidr="fd00::/48"), WHERE)
    assert resource_to_dict(pool)["spec"]["blockSize"] == 122


def test_ippool_empty_strings_mean_defaults():
    pool = resource_from_dict(pool_dict(vxlanMode="", ipipMode="", nodeSelector="", assignmentMode="",
                                        allowedUses=[]), WHERE)
    assert (pool.spec.vxlan_mode, pool.spec.ipip_mode, pool.spec.node_selector, pool.spec.assignment_mode) == \
        ("Never", "Never", "all()", "Automatic")
    assert pool.spec.allowed_uses == ["Workload", "Tunnel"]


def test_ippool_key_order_and_omitempty():
    pool = resource_from_dict(pool_dict(natOutgoing=True, disabled=True, disableBGPExport=True, blockSize=28,
                                        namespaceSelector="all()", allowedUses=["Workload"],
                                        assignmentMode="Manual", ipipMode="Always"), WHERE)
    d = resource_to_dict(pool)
    assert list(d) == ["kind", "apiVersion", "metadata", "spec"]
    assert list(d["spec"]) == ["cidr", "vxlanMode", "ipipMode", "natOutgoing", "disabled", "disableBGPExport",
                               "blockSize", "nodeSelector", "namespaceSelector", "allowedUses", "assignmentMode"]
    false_pool = resource_from_dict(pool_dict(natOutgoing=False, disabled=False), WHERE)
    assert "natOutgoing" not in resource_to_dict(false_pool)["spec"]
    assert "disabled" not in resource_to_dict(false_pool)["spec"]


def test_metadata_fields_and_order():
    d = pool_dict()
    d["metadata"] = {"name": "p", "labels": {"rack": "0"}, "annotations": {"a": "b"}, "uid": "u-1",
                     "creationTimestamp": "2024-01-01T00:00:00Z", "resourceVersion": "7",
                     "generation": 3, "finalizers": ["x"], "managedFields": [], "namespace": ""}
    pool = resource_from_dict(d, WHERE)
    m = pool.metadata
    assert (m.name, m.labels, m.annotations, m.uid, m.creation_timestamp, m.resource_version) == \
        ("p", {"rack": "0"}, {"a": "b"}, "u-1", "2024-01-01T00:00:00Z", "7")
    assert list(resource_to_dict(pool)["metadata"]) == ["name", "uid", "resourceVersion", "creationTimestamp",
                                                        "labels", "annotations"]


# ------------------------------------------------------------------ strictness


@pytest.mark.parametrize("spec, expected", [
    ({"blockSize": "26"}, 'spec.blockSize: expected an integer, got string "26"'),
    ({"blockSize": 26.5}, "spec.blockSize: expected an integer, got number 26.5"),
    ({"blockSize": True}, "spec.blockSize: expected an integer, got boolean true"),
    ({"natOutgoing": "true"}, 'spec.natOutgoing: expected a boolean (true or false), got string "true"'),
    ({"disabled": 1}, "spec.disabled: expected a boolean (true or false), got integer 1"),
    ({"cidr": 10}, "spec.cidr: expected a string, got integer 10"),
    ({"allowedUses": "Workload"}, 'spec.allowedUses: expected a list of strings, got string "Workload"'),
    ({"allowedUses": ["Workload", 3]}, "spec.allowedUses[1]: expected a string, got integer 3"),
    ({"nodeSelectr": "all()"}, "spec.nodeSelectr: unknown field"),
    ({"ipip": {"enabled": True}}, "spec.ipip: unknown field"),
])
def test_ippool_wrong_types_and_unknown_fields_name_document_and_field(spec, expected):
    message = error_of(pool_dict(**spec))
    assert message.startswith(f"{WHERE}: {expected}")


def test_unknown_top_level_and_metadata_fields():
    d = pool_dict()
    d["specs"] = {}
    assert error_of(d).startswith(f"{WHERE}: specs: unknown field")
    d = pool_dict()
    d["metadata"]["lables"] = {"a": "b"}
    assert error_of(d).startswith(f"{WHERE}: metadata.lables: unknown field")


def test_label_values_must_be_strings():
    d = pool_dict()
    d["metadata"]["labels"] = {"rack": 0}
    assert error_of(d) == f"{WHERE}: metadata.labels.rack: expected a string, got integer 0"


def test_spec_must_be_mapping():
    d = pool_dict()
    d["spec"] = ["cidr"]
    assert error_of(d) == f"{WHERE}: spec: expected a mapping, got a list"


def test_missing_name_and_namespace_rejected():
    d = pool_dict()
    d["metadata"] = {}
    assert error_of(d) == f"{WHERE}: metadata.name: a name is required"
    d["metadata"] = {"name": "p", "namespace": "default"}
    assert "metadata.namespace: IPPool is cluster-scoped" in error_of(d)


def test_api_version_required_and_checked():
    d = pool_dict()
    del d["apiVersion"]
    assert error_of(d) == f"{WHERE}: apiVersion: an apiVersion is required (expected projectcalico.org/v3)"
    d["apiVersion"] = "projectcalico.org/v1"
    assert error_of(d) == (f'{WHERE}: apiVersion: unsupported apiVersion string "projectcalico.org/v1" '
                           "for IPPool (expected projectcalico.org/v3)")


def test_unknown_and_missing_kind():
    d = pool_dict()
    d["kind"] = "BGPPeer"
    assert error_of(d).startswith(f'{WHERE}: kind: unknown resource type "BGPPeer"')
    del d["kind"]
    assert error_of(d).startswith(f"{WHERE}: kind: a kind is required")
    assert error_of(["x"]).startswith(f"{WHERE}: document: expected a mapping")


def test_nested_node_fields_are_strict():
    d = {"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": "n"},
         "spec": {"bgp": {"ipv4IPIPTunnelAddr": 5}}}
    assert error_of(d) == f"{WHERE}: spec.bgp.ipv4IPIPTunnelAddr: expected a string, got integer 5"
    d["spec"] = {"bgp": {"ipv4Adress": "10.0.0.1/24"}}
    assert error_of(d).startswith(f"{WHERE}: spec.bgp.ipv4Adress: unknown field")
    d["spec"] = {"addresses": [{"address": "10.0.0.1", "kind": "x"}]}
    assert error_of(d).startswith(f"{WHERE}: spec.addresses[0].kind: unknown field")


# ------------------------------------------------------------------ other kinds


def test_node_round_trip_with_tunnel_fields():
    d = {"kind": "Node", "apiVersion": "projectcalico.org/v3",
         "metadata": {"name": "kube-node-0", "labels": {"rack": "0"}},
         "spec": {"bgp": {"asNumber": 64512, "ipv4Address": "10.0.0.1/24", "ipv4IPIPTunnelAddr": "192.168.0.1"},
                  "ipv4VXLANTunnelAddr": "192.168.0.65", "ipv6VXLANTunnelAddr": "fd00::1",
                  "orchRefs": [{"nodeName": "kube-node-0", "orchestrator": "k8s"}],
                  "wireguard": {"interfaceIPv4Address": "192.168.0.129"},
                  "addresses": [{"address": "10.0.0.1", "type": "InternalIP"}]}}
    node = resource_from_dict(d, WHERE)
    assert node.spec.bgp.ipv4_ipip_tunnel_addr == "192.168.0.1"
    assert node.spec.bgp.as_number == "64512"
    assert node.spec.ipv4_vxlan_tunnel_addr == "192.168.0.65"
    assert node.labels == {"rack": "0"}
    assert resource_to_dict(node) == d


def test_node_without_spec():
    node = resource_from_dict({"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": "n"}}, "x")
    assert node.spec.bgp is None
    assert resource_to_dict(node)["spec"] == {}


def test_ipamconfig_defaults_and_order():
    cfg = resource_from_dict({"apiVersion": "projectcalico.org/v3", "kind": "IPAMConfiguration",
                              "metadata": {"name": "default"}, "spec": {"strictAffinity": True}}, WHERE)
    assert (cfg.spec.strict_affinity, cfg.spec.auto_allocate_blocks, cfg.spec.max_blocks_per_host,
            cfg.spec.kube_virt_vm_address_persistence) == (True, True, 0, "Enabled")
    assert resource_to_dict(cfg)["spec"] == {"strictAffinity": True, "autoAllocateBlocks": True}
    cfg.spec.max_blocks_per_host = 4
    cfg.spec.kube_virt_vm_address_persistence = "Disabled"
    assert list(resource_to_dict(cfg)["spec"]) == ["strictAffinity", "maxBlocksPerHost", "autoAllocateBlocks",
                                                   "kubeVirtVMAddressPersistence"]
    bad = {"apiVersion": "projectcalico.org/v3", "kind": "IPAMConfiguration", "metadata": {"name": "default"},
           "spec": {"maxBlocksPerHost": "2"}}
    assert error_of(bad) == f'{WHERE}: spec.maxBlocksPerHost: expected an integer, got string "2"'


def test_ipreservation_fields():
    r = resource_from_dict({"apiVersion": "projectcalico.org/v3", "kind": "IPReservation",
                            "metadata": {"name": "r"}, "spec": {"reservedCIDRs": ["10.0.0.5", "10.0.1.0/28"]}}, WHERE)
    assert r.spec.reserved_cidrs == ["10.0.0.5", "10.0.1.0/28"]
    assert resource_to_dict(r)["spec"] == {"reservedCIDRs": ["10.0.0.5", "10.0.1.0/28"]}


# ------------------------------------------------------------------ storage


@pytest.mark.parametrize("resource", [
    IPPool(Metadata("rack-0-ippool", labels={"a": "b"}, uid="u", creation_timestamp="2024-01-01T00:00:00Z"),
           IPPoolSpec(cidr="192.168.0.0/24", ipip_mode="Always", nat_outgoing=True, block_size=26,
                      node_selector='rack == "0"')),
    Node(Metadata("kube-node-0", labels={"rack": "0"}), NodeSpec(bgp=NodeBGPSpec(ipv4_ipip_tunnel_addr="10.0.0.1"))),
    IPAMConfig(Metadata("default"), IPAMConfigSpec(strict_affinity=True, max_blocks_per_host=3)),
    IPReservation(Metadata("r"), IPReservationSpec(reserved_cidrs=["10.0.0.0/30"])),
])
def test_storage_round_trip(resource):
    data = to_storage(resource)
    assert b"\n" not in data and b": " not in data  # compact
    back = from_storage(resource.kind, data, 42)
    assert back.metadata.resource_version == "42"
    back.metadata.resource_version = ""
    assert back == resource
    assert resource_from_dict(resource_to_dict(resource), "x") == resource


def test_to_storage_drops_resource_version():
    pool = IPPool(Metadata("p", resource_version="9"), IPPoolSpec(cidr="10.0.0.0/24", block_size=26))
    assert "resourceVersion" not in json.loads(to_storage(pool))["metadata"]


def test_from_storage_rejects_garbage_and_kind_mismatch():
    with pytest.raises(ValidationError, match="not valid JSON"):
        from_storage("IPPool", b"{nope", 1)
    data = to_storage(IPReservation(Metadata("r")))
    with pytest.raises(ValidationError, match="holds a IPReservation"):
        from_storage("IPPool", data, 1)


def test_storage_module_is_standard_library_only():
    import subprocess
    import sys

    code = ("import sys, topoipam.model.storage, topoipam.model.kinds; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('yaml', '_yaml', 'argparse')); "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


PROFILE = {"apiVersion": "projectcalico.org/v3", "kind": "Profile", "metadata": {"name": "kns.team-a"},
           "spec": {"labelsToApply": {"tier": "gold"},
                    "ingress": [{"action": "Allow", "protocol": "TCP",
                                 "source": {"selector": "a == 'b'", "ports": [80, "8000:8080"]}}]}}


def test_profile_round_trips_and_is_strict():
    from topoipam.model.storage import resource_from_dict, resource_to_dict
    from topoipam.model.validate import validate

    profile = validate(resource_from_dict(PROFILE, "doc"))
    assert profile.spec.labels_to_apply == {"tier": "gold"}
    assert resource_to_dict(profile) == PROFILE
    for spec, problem in (({"labelsToApply": ["tier"]}, "spec.labelsToApply: expected a mapping"),
                          ({"ingress": [{"action": "Allow", "sauce": {}}]}, "spec.ingress[0].sauce: unknown field"),
                          ({"egress": [{"action": "Allow", "destination": {"ports": [True]}}]},
                           "spec.egress[0].destination.ports[0]: expected a number or a string")):
        with pytest.raises(ValidationError, match=re.escape(problem)):
            resource_from_dict({**PROFILE, "spec": spec}, "doc")
    for spec, problem in (({"labelsToApply": {"bad key!": "x"}}, "LabelsToApply (label) = 'bad key!'"),
                          ({"egress": [{"action": "Maybe"}]}, "Egress[0].Action = 'Maybe'"),
                          ({"ingress": [{"action": "Deny", "source": {"selector": "a ==="}}]},
                           "Ingress[0].source.selector")):
        with pytest.raises(ValidationError, match=re.escape(problem)):
            validate(resource_from_dict({**PROFILE, "spec": spec}, "doc"))
