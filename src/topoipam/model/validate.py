"""Single-resource validation with Calico's field names and reasons (reference 1.2, 3.4, 3.5).

``validate`` returns a copy with defaults applied and the CIDR in canonical
form, or raises ``ValidationError`` whose message is Calico's
``ErrorValidation`` text. For an IPPool the order is Calico's: the client's
``validateAndSetDefaults`` rules first (returning early when any fired), then
the struct-validator rules. Rules that need other stored objects (overlap with
other pools, blocks of another size) belong to ``resources/``; ``overlap_error``
gives them Calico's wording.
"""

from __future__ import annotations

import copy
import ipaddress
import re

from topoipam.errors import SelectorError, ValidationError
from topoipam.model.types import (
    ALLOWED_USES,
    ASSIGN_AUTOMATIC,
    DEFAULT_BLOCK_SIZE,
    MODE_ALWAYS,
    MODE_CROSS_SUBNET,
    MODE_NEVER,
    USE_LOAD_BALANCER,
    USE_TUNNEL,
    USE_WORKLOAD,
    IPAMConfig,
    IPPool,
    IPReservation,
    Node,
    NodeBGPSpec,
    Profile,
)

_MODE_RE = re.compile(r"^(Always|CrossSubnet|Never)$")
_ASSIGNMENT_RE = re.compile(r"^(Automatic|Manual)$")
_LINK_LOCAL = {4: ipaddress.ip_network("169.254.0.0/16"), 6: ipaddress.ip_network("fe80::/10")}
_LINK_LOCAL_REASON = {4: "IPPool CIDR overlaps with IPv4 Link Local range 169.254.0.0/16",
                      6: "IPPool CIDR overlaps with IPv6 Link Local range fe80::/10"}
_SELECTOR_MAX = 1024
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def field_error(name: str, value, reason: str) -> str:
    """One entry of Calico's ErrorValidation: ``<Name> = '<Value>' (<Reason>)``."""
    return f"{name} ({reason})" if value is None else f"{name} = '{value}' ({reason})"


def validation_error(fields: list[str]) -> ValidationError:
    """Calico's ErrorValidation text for one or several field entries."""
    if len(fields) == 1:
        return ValidationError(f"error with field {fields[0]}")
    body = "".join(f"-  {f}\n" for f in fields)
    return ValidationError(f"error with the following fields:\n{body}")


def overlap_error(new_pool: IPPool, other_pools) -> list[str]:
    """Calico's create-time overlap entries for ``new_pool`` against every other pool (own name skipped)."""
    net = ipaddress.ip_network(new_pool.spec.cidr, strict=False)
    out = []
    for other in other_pools:
        if other.name == new_pool.name:
            continue
        other_net = ipaddress.ip_network(other.spec.cidr, strict=False)
        if other_net.version == net.version and other_net.overlaps(net):
            reason = f"IPPool({new_pool.name}) CIDR overlaps with IPPool({other.name}) CIDR {other.spec.cidr}"
            out.append(field_error("IPPool.Spec.CIDR", new_pool.spec.cidr, reason))
    return out


def validate(resource, *, old=None):
    """A validated copy of ``resource`` with defaults applied; ValidationError with Calico's text otherwise."""
    resource = copy.deepcopy(resource)
    check = _CHECKS.get(type(resource))
    if check is None:
        raise ValidationError(f"cannot validate a {type(resource).__name__}")
    check(resource, old)
    return resource


# ---------------------------------------------------------------- IPPool


def _parse_cidr(text: str, *, bare_ip: bool = True):
    """Calico's ParseCIDROrIP (``bare_ip``) or ParseCIDR: an interface keeping the host bits, or None."""
    addr, slash, prefix = text.partition("/")
    if slash and not (prefix.isdigit() and prefix.isascii()):
        return None
    if not slash and not bare_ip:
        return None
    try:
        return ipaddress.ip_interface(text if slash else addr)
    except ValueError:
        return None


def _same_network(old_cidr: str, new_net) -> bool:
    """Calico's cidrChangeOK for an already canonical new CIDR: the same network, however the old one was written."""
    try:
        return ipaddress.ip_network(old_cidr, strict=False) == new_net
    except ValueError:
        return False


def _pool_defaults_and_client_rules(pool: IPPool, old: IPPool | None) -> list[str]:
    spec = pool.spec
    if not spec.cidr:
        return [field_error("IPPool.Spec.CIDR", None, "IPPool CIDR must be specified")]
    iface = _parse_cidr(spec.cidr, bare_ip=False)
    if iface is None:
        return [field_error("IPPool.Spec.CIDR", spec.cidr, "IPPool CIDR must be a valid subnet")]
    version, net = iface.version, iface.network
    # Calico stores the masked network; the error values below show it too.
    spec.cidr = str(net)
    spec.vxlan_mode = spec.vxlan_mode or MODE_NEVER
    spec.ipip_mode = spec.ipip_mode or MODE_NEVER
    spec.block_size = spec.block_size or DEFAULT_BLOCK_SIZE[version]
    spec.node_selector = spec.node_selector or "all()"
    spec.allowed_uses = list(spec.allowed_uses) or [USE_WORKLOAD, USE_TUNNEL]
    spec.assignment_mode = spec.assignment_mode or ASSIGN_AUTOMATIC

    errors = []
    if old is not None:
        if spec.cidr != old.spec.cidr and not _same_network(old.spec.cidr, net):
            errors.append(field_error("IPPool.Spec.CIDR", spec.cidr, "IPPool CIDR cannot be modified"))
        if USE_LOAD_BALANCER in old.spec.allowed_uses and any(u != USE_LOAD_BALANCER for u in spec.allowed_uses):
            return [field_error("IPPool.Spec.AllowedUses", spec.allowed_uses and _go_list(spec.allowed_uses),
                                "IPPool allowed use cannot be changed from LoadBalacer to Workload or Tunnel")]
        if spec.block_size != (old.spec.block_size or DEFAULT_BLOCK_SIZE[version]):
            errors.append(field_error("IPPool.Spec.BlockSize", spec.block_size, "IPPool BlockSize cannot be modified"))
    if version == 4 and not 20 <= spec.block_size <= 32:
        errors.append(field_error("IPPool.Spec.BlockSize", spec.block_size, "IPv4 block size must be between 20 and 32"))
    if version == 6 and not 116 <= spec.block_size <= 128:
        errors.append(field_error("IPPool.Spec.BlockSize", spec.block_size,
                                  "IPv6 block size must be between 116 and 128"))
    if not spec.disabled and net.prefixlen > spec.block_size:
        errors.append(field_error("IPPool.Spec.CIDR", spec.cidr, "IP pool size is too small for use with Calico IPAM. "
                                  "It must be equal to or greater than the block size."))
    if spec.vxlan_mode != MODE_NEVER and spec.ipip_mode != MODE_NEVER:
        errors.append(field_error("IPPool.Spec.VXLANMode", spec.vxlan_mode,
                                  "Cannot enable both VXLAN and IPIP on the same IPPool"))
    if version == 6 and spec.ipip_mode != MODE_NEVER:
        errors.append(field_error("IPPool.Spec.IPIPMode", spec.ipip_mode, "IPIP is not supported on an IPv6 IP pool"))
    if iface.ip != net.network_address:
        errors.append(field_error("IPPool.Spec.CIDR", spec.cidr, "IPPool CIDR is not strictly masked"))
    if net.overlaps(_LINK_LOCAL[version]):
        errors.append(field_error("IPPool.Spec.CIDR", spec.cidr, _LINK_LOCAL_REASON[version]))
    return errors


def _go_list(items) -> str:
    return "[" + " ".join(items) + "]"


def _tag_error(field: str, value, tag: str) -> str:
    return field_error(field, value, f"Reason: failed to validate Field: {field} because of Tag: {tag} ")


def _selector_errors(field: str, text: str) -> list[str]:
    if not text:
        return []
    if len(text) > _SELECTOR_MAX:
        return [_tag_error(field, text, "selector")]
    from topoipam.selector import parse

    try:
        parse(text)
    except SelectorError as err:
        # Calico's entry, then the parser's reason and where it stopped (Calico's entry names neither).
        where = f" at character {err.position + 1}" if err.position is not None else ""
        return [f"{_tag_error(field, text, 'selector')}: {err.message}{where}"]
    return []


def _pool_struct_rules(pool: IPPool) -> list[str]:
    spec = pool.spec
    errors = []
    if not _MODE_RE.match(spec.vxlan_mode):
        errors.append(_tag_error("VXLANMode", spec.vxlan_mode, "vxlanMode"))
    if not _MODE_RE.match(spec.ipip_mode):
        errors.append(_tag_error("IPIPMode", spec.ipip_mode, "ipIpMode"))
    errors += _selector_errors("NodeSelector", spec.node_selector)
    errors += _selector_errors("NamespaceSelector", spec.namespace_selector)
    if not _ASSIGNMENT_RE.match(spec.assignment_mode):
        errors.append(_tag_error("AssignmentMode", spec.assignment_mode, "assignmentMode"))
    return errors + _pool_spec_rules(pool)


def _pool_spec_rules(pool: IPPool) -> list[str]:
    """validateIPPoolSpec's rules that the client-side checks do not already cover (names/values as Calico's)."""
    spec = pool.spec
    errors = []
    uses = spec.allowed_uses
    load_balancer = USE_LOAD_BALANCER in uses
    encap = spec.ipip_mode in (MODE_ALWAYS, MODE_CROSS_SUBNET) or spec.vxlan_mode in (MODE_ALWAYS, MODE_CROSS_SUBNET)
    if load_balancer and encap:
        errors.append(field_error("IPpool.IPIPMode", spec.ipip_mode, "Neither IPIPMode nor VXLANMode can be enabled "
                                  "on AllowedUses LoadBalancer IP pool"))
    for use in uses:  # Calico reports the whole list as the value
        if use not in ALLOWED_USES:
            errors.append(field_error("IPpool.AllowedUses", _go_list(uses), f"unknown use: {use}"))
        elif load_balancer and use != USE_LOAD_BALANCER:
            errors.append(field_error("IPpool.AllowedUses", _go_list(uses),
                                      f"LoadBalancer cannot be used at the same time as: {use}"))
    if load_balancer and spec.disable_bgp_export:
        errors.append(field_error("IPpool.DisableBGPExport", spec.cidr, "IP Pool with AllowedUse LoadBalancer "
                                  "must have DisableBGPExport set to true"))
    if load_balancer and spec.node_selector != "all()":
        errors.append(field_error("IPpool.NodeSelector", spec.cidr,
                                  "IP Pool with AllowedUse LoadBalancer must have node selector set to all()"))
    if USE_TUNNEL in uses and spec.namespace_selector:
        errors.append(field_error("IPpool.NamespaceSelector", spec.namespace_selector,
                                  "IP Pool with AllowedUse Tunnel cannot have namespaceSelector specified - "
                                  "tunnel IPs are not namespaced resources"))
    for field, text in (("NodeSelector", spec.node_selector), ("NamespaceSelector", spec.namespace_selector)):
        if "global(" in text:
            errors.append(field_error(f"IPpool.{field}", text, f"global() selector is not valid for IPPool "
                                      f"{field[0].lower()}{field[1:]} - use all() instead"))
    return errors


def _check_pool(pool: IPPool, old) -> None:
    errors = _pool_defaults_and_client_rules(pool, old)
    if not errors:
        errors = _name_errors(pool) + _pool_struct_rules(pool) + _affinity_label_errors(pool)
    if errors:
        raise validation_error(errors)


def _affinity_label_errors(pool: IPPool) -> list[str]:
    """topoipam's own annotation (core.affinity): its value must be a node label key."""
    from topoipam.core.affinity import AFFINITY_LABEL_ANNOTATION

    annotations = pool.metadata.annotations
    if AFFINITY_LABEL_ANNOTATION not in annotations:
        return []
    value = annotations[AFFINITY_LABEL_ANNOTATION]
    return [field_error(f"Metadata.Annotations ({AFFINITY_LABEL_ANNOTATION})", value,
                        f"the affinity label must be a node label key: {e}") for e in qualified_name_errors(value)]


# ---------------------------------------------------------------- other kinds


def _name_errors(resource) -> list[str]:
    """validateObjectMeta: the name (DNS subdomain) and the label keys and values (Kubernetes syntax)."""
    meta = resource.metadata
    errors = []
    if len(meta.name) > 253:
        errors.append(field_error("Metadata.Name", meta.name, f"name is too long by {len(meta.name) - 253} bytes"))
    if not _DNS_SUBDOMAIN.match(meta.name):
        errors.append(field_error("Metadata.Name", meta.name, "name must consist of lower case alphanumeric "
                                  "characters, '-' or '.' (regex: [a-z0-9]([-a-z0-9]*[a-z0-9])?"
                                  "(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)"))
    for key, value in meta.labels.items():
        errors += [field_error("Metadata.Labels (label)", key, e) for e in qualified_name_errors(key)]
        errors += [field_error("Metadata.Labels (value)", value, e) for e in label_value_errors(value)]
    return errors


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    """Kubernetes' RegexError text (its double spaces included)."""
    shown = "".join(f"'{e}', " if i == 0 else f" or '{e}', " for i, e in enumerate(examples))
    return f"{msg} (e.g. {shown}regex used for validation is '{fmt}')"


_QNAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QNAME_MSG = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
_QNAME_RE = re.compile(f"^{_QNAME_FMT}$")
_DNS_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_DNS_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
            "and must start and end with an alphanumeric character")


def qualified_name_errors(key: str) -> list[str]:
    """Kubernetes IsQualifiedName: a label key, optionally ``<dns-subdomain>/`` prefixed."""
    parts = key.split("/")
    if len(parts) > 2:
        return [_regex_error("a qualified name " + _QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc")
                + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    errors = []
    name = parts[-1]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            if len(prefix) > 253:
                errors.append("prefix part must be no more than 253 characters")
            if not _DNS_SUBDOMAIN.match(prefix):
                errors.append("prefix part " + _regex_error(_DNS_MSG, _DNS_FMT, "example.com"))
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > 63:
        errors.append("name part must be no more than 63 characters")
    if not _QNAME_RE.match(name):
        errors.append("name part " + _regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc"))
    return errors


def label_value_errors(value: str) -> list[str]:
    """Kubernetes IsValidLabelValue: empty, or a qualified name of at most 63 characters."""
    errors = []
    if len(value) > 63:
        errors.append("must be no more than 63 characters")
    if value and not _QNAME_RE.match(value):
        errors.append(_regex_error("a valid label value must be an empty string or consist of alphanumeric "
                                   "characters, '-', '_' or '.', and must start and end with an alphanumeric "
                                   "character", f"({_QNAME_FMT})?", "MyValue", "my_value", "12345"))
    return errors


def _ip_errors(field: str, text: str, version: int) -> list[str]:
    if not text:
        return []
    try:
        ok = ipaddress.ip_address(text).version == version
    except ValueError:
        ok = False
    return [] if ok else [_tag_error(field, text, f"ipv{version}")]


def _cidr_errors(field: str, text: str, version: int) -> list[str]:
    if not text:
        return []
    iface = _parse_cidr(text)
    return [] if iface is not None and iface.version == version else [_tag_error(field, text, f"cidrv{version}")]


def _check_node(node: Node, old) -> None:
    spec = node.spec
    errors = _name_errors(node)
    if spec.bgp is not None:
        if spec.bgp == NodeBGPSpec():
            # Go prints the empty *NodeBGPSpec as "&{<nil>    }".
            errors.append(field_error("BGP", "&{<nil>    }", "Spec.BGP should not be empty"))
        errors += _cidr_errors("IPv4Address", spec.bgp.ipv4_address, 4)
        errors += _cidr_errors("IPv6Address", spec.bgp.ipv6_address, 6)
        errors += _ip_errors("IPv4IPIPTunnelAddr", spec.bgp.ipv4_ipip_tunnel_addr, 4)
        errors += _ip_errors("RouteReflectorClusterID", spec.bgp.route_reflector_cluster_id, 4)
    errors += _ip_errors("IPv4VXLANTunnelAddr", spec.ipv4_vxlan_tunnel_addr, 4)
    errors += _ip_errors("IPv6VXLANTunnelAddr", spec.ipv6_vxlan_tunnel_addr, 6)
    if spec.wireguard is not None:
        errors += _ip_errors("InterfaceIPv4Address", spec.wireguard.interface_ipv4_address, 4)
        errors += _ip_errors("InterfaceIPv6Address", spec.wireguard.interface_ipv6_address, 6)
    if errors:
        raise validation_error(errors)


def _check_ipam_config(config: IPAMConfig, old) -> None:
    spec = config.spec
    if config.name != "default":
        raise ValidationError('Cannot create an IPAMConfiguration resource with a name other than "default"')
    errors = _name_errors(config)
    if spec.max_blocks_per_host < 0:
        errors.append(field_error("MaxBlocksPerHost", spec.max_blocks_per_host, "must be greater than or equal to 0"))
    elif spec.max_blocks_per_host > 1000000:  # the CRD's maximum
        errors.append(field_error("MaxBlocksPerHost", spec.max_blocks_per_host, "must be less than or equal to 1000000"))
    if spec.kube_virt_vm_address_persistence not in ("Enabled", "Disabled"):
        errors.append(_tag_error("KubeVirtVMAddressPersistence", spec.kube_virt_vm_address_persistence,
                                 "kubeVirtVMAddressPersistence"))
    if errors:
        raise validation_error(errors)
    if not spec.strict_affinity and not spec.auto_allocate_blocks:
        raise ValidationError("Cannot disable 'StrictAffinity' and 'AutoAllocateBlocks' at the same time")
    if spec.max_blocks_per_host > 0 and not spec.strict_affinity:
        raise ValidationError("MaxBlocksPerHost requires StrictAffinity to be enabled")


def _check_reservation(reservation: IPReservation, old) -> None:
    errors = _name_errors(reservation)
    normalised = []
    for text in reservation.spec.reserved_cidrs:
        iface = _parse_cidr(text)
        if iface is None:
            errors.append(_tag_error("ReservedCIDRs", text, "cidrs"))
            continue
        # Calico masks each entry to its network (a bare address is a /32 or /128).
        normalised.append(str(iface.network))
    if errors:
        raise validation_error(errors)
    reservation.spec.reserved_cidrs = list(dict.fromkeys(normalised))


_RULE_ACTIONS = ("Allow", "Deny", "Log", "Pass")


def _check_profile(profile: Profile, old) -> None:
    spec = profile.spec
    errors = _name_errors(profile)
    for key, value in spec.labels_to_apply.items():
        errors += [field_error("LabelsToApply (label)", key, e) for e in qualified_name_errors(key)]
        errors += [field_error("LabelsToApply (value)", value, e) for e in label_value_errors(value)]
    for direction, rules in (("Ingress", spec.ingress), ("Egress", spec.egress)):
        for i, rule in enumerate(rules):
            errors += _rule_errors(f"{direction}[{i}]", rule)
    if errors:
        raise validation_error(errors)


def _rule_errors(where: str, rule: dict) -> list[str]:
    errors = []
    if rule.get("action") not in _RULE_ACTIONS:
        errors.append(field_error(f"{where}.Action", rule.get("action", ""),
                                  f"must be one of {', '.join(_RULE_ACTIONS)}"))
    if rule.get("ipVersion") not in (None, 4, 6):
        errors.append(field_error(f"{where}.IPVersion", rule["ipVersion"], "must be 4 or 6"))
    for side in ("source", "destination"):
        entity = rule.get(side) or {}
        for key in ("selector", "notSelector", "namespaceSelector"):
            errors += _selector_errors(f"{where}.{side}.{key}", entity.get(key, ""))
        for key in ("nets", "notNets"):
            errors += [_tag_error(f"{where}.{side}.{key}", net, "net") for net in entity.get(key, ())
                       if _parse_cidr(net) is None]
    return errors


_CHECKS = {IPPool: _check_pool, Node: _check_node, IPAMConfig: _check_ipam_config, IPReservation: _check_reservation,
           Profile: _check_profile}
