"""The v3 dict form of the resources, and the bytes kept in the datastore.

Standard library only: the CNI plugin reads pools, nodes and the IPAM
configuration through ``from_storage`` on every ADD.

``resource_from_dict`` is strict the way calicoctl's ``UnmarshalStrict`` is:
an unknown kind or field, or a value of the wrong JSON type, is an error that
names the caller's ``where`` (e.g. ``document 2 of rack.yaml``) and the field
path (``spec.blockSize``). It fills the trivial defaults (empty mode -> Never,
empty selector -> ``all()``, ...); ``model.validate`` checks the rules.

``resource_to_dict`` writes Calico's JSON form: struct key order, ``omitempty``
fields left out when empty, defaults filled.
"""

from __future__ import annotations

import ipaddress
from topoipam import leanjson

from topoipam.errors import ValidationError
from topoipam.model.types import (
    API_VERSION,
    ASSIGN_AUTOMATIC,
    DEFAULT_BLOCK_SIZE,
    MODE_NEVER,
    USE_TUNNEL,
    USE_WORKLOAD,
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
    Profile,
    ProfileSpec,
)

# Schemas: json name -> (attribute name, type). Types: str, bool, int, strlist,
# strmap, asnumber, numorstr (Calico's NumOrString: a port or protocol), portlist,
# or a nested schema dict (object) / ("list", schema).
_METADATA = {
    "name": ("name", "str"),
    "namespace": ("namespace", "str"),
    "uid": ("uid", "str"),
    "resourceVersion": ("resource_version", "str"),
    "creationTimestamp": ("creation_timestamp", "str"),
    "labels": ("labels", "strmap"),
    "annotations": ("annotations", "strmap"),
}
# ObjectMeta keys calicoctl accepts but drops before a create (prepareMetadataForCreate).
_METADATA_IGNORED = frozenset(
    ("generateName", "selfLink", "generation", "deletionTimestamp", "deletionGracePeriodSeconds",
     "ownerReferences", "finalizers", "managedFields")
)

_IPPOOL_SPEC = {
    "cidr": ("cidr", "str"),
    "vxlanMode": ("vxlan_mode", "str"),
    "ipipMode": ("ipip_mode", "str"),
    "natOutgoing": ("nat_outgoing", "bool"),
    "disabled": ("disabled", "bool"),
    "disableBGPExport": ("disable_bgp_export", "bool"),
    "blockSize": ("block_size", "int"),
    "nodeSelector": ("node_selector", "str"),
    "namespaceSelector": ("namespace_selector", "str"),
    "allowedUses": ("allowed_uses", "strlist"),
    "assignmentMode": ("assignment_mode", "str"),
}

_NODE_BGP = {
    "asNumber": ("as_number", "asnumber"),
    "ipv4Address": ("ipv4_address", "str"),
    "ipv6Address": ("ipv6_address", "str"),
    "ipv4IPIPTunnelAddr": ("ipv4_ipip_tunnel_addr", "str"),
    "routeReflectorClusterID": ("route_reflector_cluster_id", "str"),
}
_NODE_WIREGUARD = {
    "interfaceIPv4Address": ("interface_ipv4_address", "str"),
    "interfaceIPv6Address": ("interface_ipv6_address", "str"),
}
_NODE_SPEC = {
    "bgp": ("bgp", _NODE_BGP),
    "ipv4VXLANTunnelAddr": ("ipv4_vxlan_tunnel_addr", "str"),
    "vxlanTunnelMACAddr": ("vxlan_tunnel_mac_addr", "str"),
    "ipv6VXLANTunnelAddr": ("ipv6_vxlan_tunnel_addr", "str"),
    "vxlanTunnelMACAddrV6": ("vxlan_tunnel_mac_addr_v6", "str"),
    "orchRefs": ("orch_refs", ("list", {"nodeName": ("nodeName", "str"), "orchestrator": ("orchestrator", "str")})),
    "wireguard": ("wireguard", _NODE_WIREGUARD),
    "addresses": ("addresses", ("list", {"address": ("address", "str"), "type": ("type", "str")})),
    "interfaces": ("interfaces", ("list", {"name": ("name", "str"), "addresses": ("addresses", "strlist")})),
}

_IPAMCONFIG_SPEC = {
    "strictAffinity": ("strict_affinity", "bool"),
    "maxBlocksPerHost": ("max_blocks_per_host", "int"),
    "autoAllocateBlocks": ("auto_allocate_blocks", "bool"),
    "kubeVirtVMAddressPersistence": ("kube_virt_vm_address_persistence", "str"),
}

_IPRESERVATION_SPEC = {"reservedCIDRs": ("reserved_cidrs", "strlist")}

# Calico's v3 Rule and EntityRule in their JSON names (a rule is kept as the dict it was given).
_ENTITY_RULE = {name: (name, typ) for name, typ in (
    ("nets", "strlist"), ("notNets", "strlist"), ("selector", "str"), ("notSelector", "str"),
    ("namespaceSelector", "str"), ("ports", "portlist"), ("notPorts", "portlist"),
    ("serviceAccounts", {"names": ("names", "strlist"), "selector": ("selector", "str")}),
    ("services", {"name": ("name", "str"), "namespace": ("namespace", "str")}))}
_ICMP = {"type": ("type", "int"), "code": ("code", "int")}
_RULE = {name: (name, typ) for name, typ in (
    ("action", "str"), ("ipVersion", "int"), ("protocol", "numorstr"), ("icmp", _ICMP),
    ("notProtocol", "numorstr"), ("notICMP", _ICMP), ("source", _ENTITY_RULE), ("destination", _ENTITY_RULE),
    ("http", {"methods": ("methods", "strlist"),
              "paths": ("paths", ("list", {"exact": ("exact", "str"), "prefix": ("prefix", "str")}))}),
    ("metadata", {"annotations": ("annotations", "strmap")}))}
_PROFILE_SPEC = {
    "ingress": ("ingress", ("list", _RULE)),
    "egress": ("egress", ("list", _RULE)),
    "labelsToApply": ("labels_to_apply", "strmap"),
}

_SPEC_SCHEMA = {
    "IPPool": _IPPOOL_SPEC,
    "Node": _NODE_SPEC,
    "IPAMConfiguration": _IPAMCONFIG_SPEC,
    "IPReservation": _IPRESERVATION_SPEC,
    "Profile": _PROFILE_SPEC,
}
_TOP_LEVEL = frozenset(("apiVersion", "kind", "metadata", "spec", "status"))


# ---------------------------------------------------------------- decoding


def describe(value) -> str:
    """A JSON-ish description of a value for error messages: ``string "26"``, ``integer 26``.

    A long value is cut (``_clip``): a 10 MB string or a 4000-digit number in a manifest must not
    come back as a 10 MB message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"integer {_clip(str(value))}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        return "string " + _clip(leanjson.dumps(value, ensure_ascii=False))
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__} value {_clip(repr(value))}"


MAX_QUOTED = 100  # characters of a value an error message quotes


def _clip(text: str) -> str:
    if len(text) <= MAX_QUOTED:
        return text
    return f"{text[:MAX_QUOTED]}... ({len(text)} characters)"


class _Ctx:
    """Where a document came from, for error messages."""

    __slots__ = ("where",)

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, path: str, problem: str) -> ValidationError:
        prefix = f"{self.where}: " if self.where else ""
        return ValidationError(f"{prefix}{path}: {problem}")


def _expect(ctx: _Ctx, value, typ, path: str):
    if typ == "str":
        if isinstance(value, str):
            return value
        raise ctx.fail(path, f"expected a string, got {describe(value)}")
    if typ == "bool":
        if isinstance(value, bool):
            return value
        raise ctx.fail(path, f"expected a boolean (true or false), got {describe(value)}")
    if typ == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ctx.fail(path, f"expected an integer, got {describe(value)}")
    if typ == "asnumber":
        if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
            return str(value)
        raise ctx.fail(path, f"expected an AS number (integer or string), got {describe(value)}")
    if typ == "numorstr":
        if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        raise ctx.fail(path, f"expected a number or a string, got {describe(value)}")
    if typ == "portlist":
        if not isinstance(value, list):
            raise ctx.fail(path, f"expected a list of ports (numbers or strings), got {describe(value)}")
        return [_expect(ctx, item, "numorstr", f"{path}[{i}]") for i, item in enumerate(value)]
    if typ == "strlist":
        if not isinstance(value, list):
            raise ctx.fail(path, f"expected a list of strings, got {describe(value)}")
        return [_expect(ctx, item, "str", f"{path}[{i}]") for i, item in enumerate(value)]
    if typ == "strmap":
        if not isinstance(value, dict):
            raise ctx.fail(path, f"expected a mapping of strings to strings, got {describe(value)}")
        for key, item in value.items():
            if not isinstance(key, str):
                raise ctx.fail(path, f"expected string keys, got key {describe(key)}")
            _expect(ctx, item, "str", f"{path}.{key}")
        return dict(value)
    if isinstance(typ, tuple):  # ("list", schema)
        if not isinstance(value, list):
            raise ctx.fail(path, f"expected a list, got {describe(value)}")
        return [_fields(ctx, item, typ[1], f"{path}[{i}]", keep_json_names=True) for i, item in enumerate(value)]
    return _fields(ctx, value, typ, path)


def _fields(ctx: _Ctx, obj, schema: dict, path: str, *, ignored=frozenset(), keep_json_names=False) -> dict:
    """Check a mapping against a schema; returns {attribute: value} for the fields present and not null."""
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise ctx.fail(path, f"expected a mapping, got {describe(obj)}")
    out = {}
    for key, value in obj.items():
        entry = schema.get(key)
        if entry is None:
            if key in ignored:
                continue
            known = ", ".join(schema)
            raise ctx.fail(f"{path}.{key}" if path else str(key), f"unknown field (known fields: {known})")
        if value is None:
            continue
        attr, typ = entry
        out[key if keep_json_names else attr] = _expect(ctx, value, typ, f"{path}.{key}" if path else key)
    return out


def _metadata(ctx: _Ctx, kind: str, raw) -> Metadata:
    values = _fields(ctx, raw, _METADATA, "metadata", ignored=_METADATA_IGNORED)
    if values.pop("namespace", ""):
        raise ctx.fail("metadata.namespace", f"{kind} is cluster-scoped: a namespace must not be given")
    if not values.get("name"):
        raise ctx.fail("metadata.name", "a name is required")
    return Metadata(**values)


def _ippool(meta: Metadata, spec: dict) -> IPPool:
    for attr, default in (("vxlan_mode", MODE_NEVER), ("ipip_mode", MODE_NEVER),
                          ("node_selector", "all()"), ("assignment_mode", ASSIGN_AUTOMATIC)):
        if not spec.get(attr):
            spec[attr] = default
    if not spec.get("allowed_uses"):
        spec.pop("allowed_uses", None)
    spec.setdefault("cidr", "")
    return IPPool(meta, IPPoolSpec(**spec))


def _node(meta: Metadata, spec: dict) -> Node:
    if "bgp" in spec:
        spec["bgp"] = NodeBGPSpec(**spec["bgp"])
    if "wireguard" in spec:
        spec["wireguard"] = NodeWireguardSpec(**spec["wireguard"])
    return Node(meta, NodeSpec(**spec))


def _ipamconfig(meta: Metadata, spec: dict) -> IPAMConfig:
    if not spec.get("kube_virt_vm_address_persistence"):
        spec.pop("kube_virt_vm_address_persistence", None)
    return IPAMConfig(meta, IPAMConfigSpec(**spec))


_BUILD = {
    "IPPool": _ippool,
    "Node": _node,
    "IPAMConfiguration": _ipamconfig,
    "IPReservation": lambda meta, spec: IPReservation(meta, IPReservationSpec(**spec)),
    "Profile": lambda meta, spec: Profile(meta, ProfileSpec(**spec)),
}


def resource_from_dict(d: dict, where: str):
    """Build a resource from its v3 dict form; strict about kinds, field names and JSON types."""
    ctx = _Ctx(where)
    if not isinstance(d, dict):
        raise ctx.fail("document", f"expected a mapping with apiVersion, kind, metadata and spec, got {describe(d)}")
    if d.get("apiVersion") != API_VERSION:  # stored records never are: this stays off the CNI path
        from topoipam.model.foreign import to_v3

        d = to_v3(d, where)  # crd.projectcalico.org/v1 objects and Kubernetes Nodes
    for key in d:
        if key not in _TOP_LEVEL:
            raise ctx.fail(str(key), "unknown field (known fields: apiVersion, kind, metadata, spec)")
    kind = d.get("kind")
    if kind is None or kind == "":
        raise ctx.fail("kind", "a kind is required (IPPool, Node, IPAMConfiguration, IPReservation or Profile)")
    kind = _expect(ctx, kind, "str", "kind")
    if kind not in _SPEC_SCHEMA:
        raise ctx.fail("kind", f"unknown resource type \"{kind}\" (supported: IPPool, Node, IPAMConfiguration, IPReservation, Profile)")
    api_version = d.get("apiVersion")
    if api_version is None or api_version == "":
        raise ctx.fail("apiVersion", f"an apiVersion is required (expected {API_VERSION})")
    if api_version != API_VERSION:
        raise ctx.fail("apiVersion", f"unsupported apiVersion {describe(api_version)} for {kind} (expected {API_VERSION})")
    meta = _metadata(ctx, kind, d.get("metadata"))
    spec = _fields(ctx, d.get("spec"), _SPEC_SCHEMA[kind], "spec")
    if d.get("status") is not None and not isinstance(d["status"], dict):
        raise ctx.fail("status", f"expected a mapping, got {describe(d['status'])}")
    return _BUILD[kind](meta, spec)


def from_storage(kind: str, data: bytes, revision: int):
    """Decode a stored record; ``metadata.resource_version`` becomes the record's revision."""
    try:
        d = leanjson.loads(data)
    except ValueError as exc:
        raise ValidationError(f"stored {kind} record is not valid JSON: {exc}") from None
    resource = resource_from_dict(d, f"stored {kind} record")
    if resource.kind != kind:
        raise ValidationError(f"stored {kind} record holds a {resource.kind}")
    resource.metadata.resource_version = str(revision)
    return resource


def to_storage(resource) -> bytes:
    """Compact JSON of the v3 form; the revision is the record's own, so resourceVersion is not kept."""
    d = resource_to_dict(resource)
    d["metadata"].pop("resourceVersion", None)
    return leanjson.dumps(d, separators=(",", ":"), ensure_ascii=False).encode()


# ---------------------------------------------------------------- encoding


def _metadata_dict(meta: Metadata) -> dict:
    out = {"name": meta.name}
    for key, value in (("uid", meta.uid), ("resourceVersion", meta.resource_version),
                       ("creationTimestamp", meta.creation_timestamp),
                       ("labels", meta.labels), ("annotations", meta.annotations)):
        if value:
            out[key] = dict(value) if isinstance(value, dict) else value
    return out


def _default_block_size(cidr: str) -> int:
    try:
        return DEFAULT_BLOCK_SIZE[ipaddress.ip_interface(cidr).version]
    except ValueError:
        return 0


def _ippool_spec(s: IPPoolSpec) -> dict:
    out = {"cidr": s.cidr, "vxlanMode": s.vxlan_mode or MODE_NEVER, "ipipMode": s.ipip_mode or MODE_NEVER}
    for key, value in (("natOutgoing", s.nat_outgoing), ("disabled", s.disabled),
                       ("disableBGPExport", s.disable_bgp_export)):
        if value:
            out[key] = True
    block_size = s.block_size or _default_block_size(s.cidr)
    if block_size:
        out["blockSize"] = block_size
    out["nodeSelector"] = s.node_selector or "all()"
    if s.namespace_selector:
        out["namespaceSelector"] = s.namespace_selector
    out["allowedUses"] = list(s.allowed_uses) or [USE_WORKLOAD, USE_TUNNEL]
    out["assignmentMode"] = s.assignment_mode or ASSIGN_AUTOMATIC
    return out


def _omitempty(obj, schema: dict) -> dict:
    out = {}
    for key, (attr, _typ) in schema.items():
        value = getattr(obj, attr)
        if value:
            out[key] = value
    return out


def _node_spec(s: NodeSpec) -> dict:
    out = {}
    if s.bgp is not None:
        bgp = _omitempty(s.bgp, _NODE_BGP)
        if bgp.get("asNumber", "").isdigit():
            bgp["asNumber"] = int(bgp["asNumber"])
        out["bgp"] = bgp
    for key in ("ipv4VXLANTunnelAddr", "vxlanTunnelMACAddr", "ipv6VXLANTunnelAddr", "vxlanTunnelMACAddrV6", "orchRefs"):
        value = getattr(s, _NODE_SPEC[key][0])
        if value:
            out[key] = value
    if s.wireguard is not None:
        out["wireguard"] = _omitempty(s.wireguard, _NODE_WIREGUARD)
    for key in ("addresses", "interfaces"):
        value = getattr(s, key)
        if value:
            out[key] = value
    return out


def _ipamconfig_spec(s: IPAMConfigSpec) -> dict:
    out = {"strictAffinity": s.strict_affinity}
    if s.max_blocks_per_host:
        out["maxBlocksPerHost"] = s.max_blocks_per_host
    out["autoAllocateBlocks"] = s.auto_allocate_blocks
    # A pointer in Calico's struct: shown only when set to something other than the default.
    if s.kube_virt_vm_address_persistence and s.kube_virt_vm_address_persistence != "Enabled":
        out["kubeVirtVMAddressPersistence"] = s.kube_virt_vm_address_persistence
    return out


def _ipreservation_spec(s: IPReservationSpec) -> dict:
    return {"reservedCIDRs": list(s.reserved_cidrs)} if s.reserved_cidrs else {}


def _profile_spec(s: ProfileSpec) -> dict:
    return _omitempty(s, _PROFILE_SPEC)


_SPEC_DICT = {
    "IPPool": _ippool_spec,
    "Node": _node_spec,
    "IPAMConfiguration": _ipamconfig_spec,
    "IPReservation": _ipreservation_spec,
    "Profile": _profile_spec,
}


def resource_to_dict(resource) -> dict:
    """The v3 form in Calico's struct order: kind, apiVersion, metadata, spec."""
    return {
        "kind": resource.kind,
        "apiVersion": API_VERSION,
        "metadata": _metadata_dict(resource.metadata),
        "spec": _SPEC_DICT[resource.kind](resource.spec),
    }
