"""model.validate: Calico's validation rules and exact messages (reference 1.2, 3.4, 3.5, 5)."""

from __future__ import annotations

import pytest

from topoipam.errors import ValidationError
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
    NodeWireguardSpec,
)
from topoipam.model.validate import overlap_error, validate

TOO_SMALL = "IP pool size is too small for use with Calico IPAM. It must be equal to or greater than the block size."


def pool(cidr="10.0.0.0/24", name="p", **spec) -> IPPool:
    return IPPool(Metadata(name), IPPoolSpec(cidr=cidr, **spec))


def message(resource, old=None) -> str:
    with pytest.raises(ValidationError) as info:
        validate(resource, old=old)
    return str(info.value)


def one(name, value, reason):
    return f"error with field {name} = '{value}' ({reason})"


# ------------------------------------------------------------------ defaults and normalisation


def test_defaults_applied_and_input_untouched():
    p = pool(vxlan_mode="", ipip_mode="", node_selector="", allowed_uses=[], assignment_mode="")
    v = validate(p)
    assert (v.spec.vxlan_mode, v.spec.ipip_mode, v.spec.block_size, v.spec.node_selector,
            v.spec.allowed_uses, v.spec.assignment_mode) == ("Never", "Never", 26, "all()",
                                                             ["Workload", "Tunnel"], "Automatic")
    assert p.spec.block_size == 0  # validate returns a copy


def test_ipv6_defaults_and_canonical_cidr():
    v = validate(pool("FD00:0:0:0::/48"))
    assert (v.spec.cidr, v.spec.block_size) == ("fd00::/48", 122)


def test_bare_address_is_not_a_pool_cidr():
    # v3.32.1 parses pool CIDRs with ParseCIDR (not ParseCIDROrIP): a prefix length is required.
    assert message(pool("10.0.0.0", disabled=True, block_size=32)) == one(
        "IPPool.Spec.CIDR", "10.0.0.0", "IPPool CIDR must be a valid subnet")


def test_selector_text_is_kept_as_written():
    assert validate(pool(node_selector="rack=='0'")).spec.node_selector == "rack=='0'"


# ------------------------------------------------------------------ validateAndSetDefaults rules


def test_cidr_required():
    assert message(pool("")) == "error with field IPPool.Spec.CIDR (IPPool CIDR must be specified)"


@pytest.mark.parametrize("cidr", ["bad", "10.0.0.0/33", "10.0.0.0/255.255.255.0", "10.0.0/24", "10.0.0.0/"])
def test_cidr_must_be_valid_subnet(cidr):
    assert message(pool(cidr, block_size=40)) == one("IPPool.Spec.CIDR", cidr, "IPPool CIDR must be a valid subnet")


def test_invalid_cidr_is_returned_alone():
    msg = message(pool("nope", ipip_mode="Always", vxlan_mode="Always", block_size=2))
    assert msg == one("IPPool.Spec.CIDR", "nope", "IPPool CIDR must be a valid subnet")


def test_not_strictly_masked_shows_the_masked_cidr():
    # Calico normalises Spec.CIDR to the masked network before this check, so the value is 10.0.0.0/24.
    assert message(pool("10.0.0.1/24")) == one("IPPool.Spec.CIDR", "10.0.0.0/24", "IPPool CIDR is not strictly masked")
    assert message(pool("fd00::1/64")) == one("IPPool.Spec.CIDR", "fd00::/64", "IPPool CIDR is not strictly masked")


@pytest.mark.parametrize("size", [19, 33])
def test_ipv4_block_size_range(size):
    msg = message(pool("10.0.0.0/16", block_size=size))
    assert one("IPPool.Spec.BlockSize", size, "IPv4 block size must be between 20 and 32") in msg.replace(
        "error with the following fields:\n-  ", "error with field ")


@pytest.mark.parametrize("size", [115, 129])
def test_ipv6_block_size_range(size):
    msg = message(pool("fd00::/100", block_size=size))
    assert f"IPPool.Spec.BlockSize = '{size}' (IPv6 block size must be between 116 and 128)" in msg


@pytest.mark.parametrize("size", [20, 32])
def test_ipv4_block_size_bounds_accepted(size):
    assert validate(pool("10.0.0.0/16", block_size=size)).spec.block_size == size


def test_pool_too_small_for_block_unless_disabled():
    assert message(pool("10.0.0.0/27")) == one("IPPool.Spec.CIDR", "10.0.0.0/27", TOO_SMALL)
    assert validate(pool("10.0.0.0/27", disabled=True)).spec.cidr == "10.0.0.0/27"
    assert validate(pool("10.0.0.0/27", block_size=28)).spec.block_size == 28


def test_vxlan_and_ipip_together():
    assert message(pool(vxlan_mode="Always", ipip_mode="CrossSubnet")) == one(
        "IPPool.Spec.VXLANMode", "Always", "Cannot enable both VXLAN and IPIP on the same IPPool")


def test_ipip_on_ipv6_rejected_vxlan_allowed():
    assert message(pool("fd00::/64", ipip_mode="Always")) == one(
        "IPPool.Spec.IPIPMode", "Always", "IPIP is not supported on an IPv6 IP pool")
    assert validate(pool("fd00::/64", vxlan_mode="Always")).spec.vxlan_mode == "Always"


def test_link_local_ranges():
    assert message(pool("169.254.0.0/24")) == one(
        "IPPool.Spec.CIDR", "169.254.0.0/24", "IPPool CIDR overlaps with IPv4 Link Local range 169.254.0.0/16")
    assert message(pool("169.0.0.0/8", block_size=26)) == one(
        "IPPool.Spec.CIDR", "169.0.0.0/8", "IPPool CIDR overlaps with IPv4 Link Local range 169.254.0.0/16")
    assert message(pool("fe80::/64")) == one(
        "IPPool.Spec.CIDR", "fe80::/64", "IPPool CIDR overlaps with IPv6 Link Local range fe80::/10")


def test_several_errors_use_calico_list_form_in_order():
    msg = message(pool("10.0.0.1/30", ipip_mode="Always", vxlan_mode="Always"))
    assert msg == ("error with the following fields:\n"
                   f"-  IPPool.Spec.CIDR = '10.0.0.0/30' ({TOO_SMALL})\n"
                   "-  IPPool.Spec.VXLANMode = 'Always' (Cannot enable both VXLAN and IPIP on the same IPPool)\n"
                   "-  IPPool.Spec.CIDR = '10.0.0.0/30' (IPPool CIDR is not strictly masked)\n")


# ------------------------------------------------------------------ update-only rules


def test_update_cidr_and_block_size_cannot_change():
    old = validate(pool("10.0.0.0/24"))
    assert message(pool("10.0.1.0/24"), old=old) == one("IPPool.Spec.CIDR", "10.0.1.0/24",
                                                        "IPPool CIDR cannot be modified")
    assert message(pool("10.0.0.0/24", block_size=28), old=old) == one(
        "IPPool.Spec.BlockSize", 28, "IPPool BlockSize cannot be modified")
    # Same CIDR, block size left to its default, other fields changed: fine.
    assert validate(pool("10.0.0.0/24", disabled=True), old=old).spec.disabled is True


def test_update_with_equivalent_non_canonical_ipv6_text_is_allowed():
    old = validate(pool("fd00::/64"))
    assert validate(pool("fd00:0::/64"), old=old).spec.cidr == "fd00::/64"
    # A stored non-canonical CIDR may be rewritten in canonical form (cidrChangeOK).
    stored = validate(pool("fd00::/64"))
    stored.spec.cidr = "FD00:0::/64"
    assert validate(pool("fd00::/64"), old=stored).spec.cidr == "fd00::/64"


def test_update_load_balancer_use_cannot_change_and_is_returned_alone():
    old = validate(pool(allowed_uses=["LoadBalancer"]))
    msg = message(pool(allowed_uses=["Workload"], block_size=28), old=old)
    assert msg == one("IPPool.Spec.AllowedUses", "[Workload]",
                      "IPPool allowed use cannot be changed from LoadBalacer to Workload or Tunnel")


# ------------------------------------------------------------------ struct validator rules


def test_bad_node_selector_uses_tag_form():
    assert message(pool(node_selector="b == b")) == (
        "error with field NodeSelector = 'b == b' (Reason: failed to validate Field: NodeSelector "
        "because of Tag: selector ): expected string at character 6")


def test_bad_namespace_selector_uses_tag_form():
    assert message(pool(namespace_selector="x ==", allowed_uses=["Workload"])) == (
        "error with field NamespaceSelector = 'x ==' (Reason: failed to validate Field: NamespaceSelector "
        "because of Tag: selector ): expected string at character 5")


def test_struct_rules_run_only_after_client_rules_pass():
    msg = message(pool("10.0.0.1/24", node_selector="b == b"))
    assert "NodeSelector" not in msg and "not strictly masked" in msg


@pytest.mark.parametrize("field, attr, tag, value", [
    ("IPIPMode", "ipip_mode", "ipIpMode", "never"),
    ("VXLANMode", "vxlan_mode", "vxlanMode", "always"),
    ("AssignmentMode", "assignment_mode", "assignmentMode", "auto"),
])
def test_mode_strings_are_case_sensitive(field, attr, tag, value):
    assert message(pool(**{attr: value})) == (
        f"error with field {field} = '{value}' (Reason: failed to validate Field: {field} because of Tag: {tag} )")


def test_unknown_use():
    # Calico reports the whole list (Go's %v form) as the value.
    assert message(pool(allowed_uses=["Workload", "Pods"])) == one("IPpool.AllowedUses", "[Workload Pods]",
                                                                    "unknown use: Pods")


def test_load_balancer_rules():
    assert message(pool(allowed_uses=["LoadBalancer", "Tunnel"])) == one(
        "IPpool.AllowedUses", "[LoadBalancer Tunnel]", "LoadBalancer cannot be used at the same time as: Tunnel")
    assert message(pool(allowed_uses=["LoadBalancer"], vxlan_mode="Always")) == one(
        "IPpool.IPIPMode", "Never", "Neither IPIPMode nor VXLANMode can be enabled on AllowedUses LoadBalancer IP pool")
    assert message(pool(allowed_uses=["LoadBalancer"], disable_bgp_export=True)) == one(
        "IPpool.DisableBGPExport", "10.0.0.0/24",
        "IP Pool with AllowedUse LoadBalancer must have DisableBGPExport set to true")
    assert message(pool(allowed_uses=["LoadBalancer"], node_selector='rack == "0"')) == one(
        "IPpool.NodeSelector", "10.0.0.0/24", "IP Pool with AllowedUse LoadBalancer must have node selector set to all()")
    assert validate(pool(allowed_uses=["LoadBalancer"])).spec.allowed_uses == ["LoadBalancer"]


def test_tunnel_use_with_namespace_selector():
    assert message(pool(namespace_selector="all()")) == one(
        "IPpool.NamespaceSelector", "all()", "IP Pool with AllowedUse Tunnel cannot have namespaceSelector specified"
        " - tunnel IPs are not namespaced resources")
    assert validate(pool(namespace_selector="all()", allowed_uses=["Workload"])).spec.namespace_selector == "all()"


def test_global_selector_rejected():
    assert message(pool(node_selector="global()")) == one(
        "IPpool.NodeSelector", "global()", "global() selector is not valid for IPPool nodeSelector - use all() instead")


def test_bad_pool_name():
    assert "Metadata.Name = 'Rack_0'" in message(pool(name="Rack_0"))


# ------------------------------------------------------------------ overlap helper


def test_overlap_error_text():
    new = validate(pool("10.1.0.0/16", name="p2"))
    others = [validate(pool("10.0.0.0/8", name="p1", block_size=26)), validate(pool("10.2.0.0/16", name="p3")),
              validate(pool("10.1.0.0/16", name="p2")), validate(pool("fd00::/48", name="v6"))]
    assert overlap_error(new, others) == [
        "IPPool.Spec.CIDR = '10.1.0.0/16' (IPPool(p2) CIDR overlaps with IPPool(p1) CIDR 10.0.0.0/8)"]


# ------------------------------------------------------------------ IPAMConfiguration (3.4)


def cfg(name="default", **spec):
    return IPAMConfig(Metadata(name), IPAMConfigSpec(**spec))


def test_ipamconfig_name_must_be_default():
    assert message(cfg("other")) == 'Cannot create an IPAMConfiguration resource with a name other than "default"'


def test_ipamconfig_rules():
    assert validate(cfg()).spec.auto_allocate_blocks is True
    assert message(cfg(strict_affinity=False, auto_allocate_blocks=False)) == (
        "Cannot disable 'StrictAffinity' and 'AutoAllocateBlocks' at the same time")
    assert message(cfg(max_blocks_per_host=2)) == "MaxBlocksPerHost requires StrictAffinity to be enabled"
    assert validate(cfg(strict_affinity=True, max_blocks_per_host=2)).spec.max_blocks_per_host == 2
    assert message(cfg(strict_affinity=True, max_blocks_per_host=-1)) == one(
        "MaxBlocksPerHost", -1, "must be greater than or equal to 0")
    assert "KubeVirtVMAddressPersistence = 'Maybe'" in message(cfg(kube_virt_vm_address_persistence="Maybe"))


# ------------------------------------------------------------------ IPReservation (3.5)


def test_ipreservation_normalised():
    r = validate(IPReservation(Metadata("r"), IPReservationSpec(["10.0.0.5", "FD00::1", "10.0.1.0/28", "10.0.0.5/32"])))
    assert r.spec.reserved_cidrs == ["10.0.0.5/32", "fd00::1/128", "10.0.1.0/28"]


def test_ipreservation_bad_entry():
    msg = message(IPReservation(Metadata("r"), IPReservationSpec(["10.0.0.0/24", "x"])))
    assert msg == "error with field ReservedCIDRs = 'x' (Reason: failed to validate Field: ReservedCIDRs because of Tag: cidrs )"


# ------------------------------------------------------------------ Node


def test_node_valid_with_tunnel_addresses():
    n = Node(Metadata("kube-node-0", labels={"rack": "0", "topology.kubernetes.io/zone": "west"}),
             NodeSpec(bgp=NodeBGPSpec(ipv4_address="10.0.0.1/24", ipv4_ipip_tunnel_addr="192.168.0.1"),
                      ipv4_vxlan_tunnel_addr="192.168.0.65", ipv6_vxlan_tunnel_addr="fd00::1",
                      wireguard=NodeWireguardSpec(interface_ipv4_address="192.168.0.129")))
    assert validate(n) == n


def test_node_bad_tunnel_addresses():
    n = Node(Metadata("n"), NodeSpec(bgp=NodeBGPSpec(ipv4_ipip_tunnel_addr="fd00::1"),
                                     ipv4_vxlan_tunnel_addr="nope"))
    assert message(n) == (
        "error with the following fields:\n"
        "-  IPv4IPIPTunnelAddr = 'fd00::1' (Reason: failed to validate Field: IPv4IPIPTunnelAddr because of Tag: ipv4 )\n"
        "-  IPv4VXLANTunnelAddr = 'nope' (Reason: failed to validate Field: IPv4VXLANTunnelAddr because of Tag: ipv4 )\n")


NAME_REASON = ("name must consist of lower case alphanumeric characters, '-' or '.' "
               "(regex: [a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)")


def test_node_name():
    assert message(Node(Metadata(""))) == one("Metadata.Name", "", NAME_REASON)
    assert message(Node(Metadata("Kube_Node"))) == one("Metadata.Name", "Kube_Node", NAME_REASON)
    long_name = "a" * 254
    assert message(Node(Metadata(long_name))) == one("Metadata.Name", long_name, "name is too long by 1 bytes")


def test_node_label_key_and_value_use_kubernetes_texts():
    assert message(Node(Metadata("n", labels={"bad key": "x"}))) == one(
        "Metadata.Labels (label)", "bad key",
        "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
        "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
        "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
    assert message(Node(Metadata("n", labels={"rack": "a b"}))) == one(
        "Metadata.Labels (value)", "a b",
        "a valid label value must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
        "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', "
        "regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
    assert "prefix part a lowercase RFC 1123 subdomain" in message(Node(Metadata("n", labels={"Topo.IO/zone": "w"})))
    assert "prefix part must be non-empty" in message(Node(Metadata("n", labels={"/zone": "w"})))
    assert "with an optional DNS subdomain prefix" in message(Node(Metadata("n", labels={"a/b/c": "w"})))
    assert "must be no more than 63 characters" in message(Node(Metadata("n", labels={"rack": "x" * 64})))
    ok = {"empty": "", "topology.kubernetes.io/zone": "west", "A_b.c-9": "Z_9.x-1"}
    assert validate(Node(Metadata("n", labels=ok))).labels == ok


def test_node_empty_bgp_section():
    assert message(Node(Metadata("n"), NodeSpec(bgp=NodeBGPSpec()))) == one(
        "BGP", "&{<nil>    }", "Spec.BGP should not be empty")
