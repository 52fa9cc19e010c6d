"""Resource value types: IPPool, Node, IPAMConfig, IPReservation, Profile (``projectcalico.org/v3``).

Plain dataclasses with Python field names; ``model.codec`` converts them to and
from Calico's v3 JSON/YAML (camelCase keys, defaults filled) and
``model.validate`` checks them with Calico's field names and reasons. They do
no I/O. A value read from the datastore carries ``metadata.resource_version``
(the store revision, as a decimal string) so that an update can be a
compare-and-swap on it.
"""

from __future__ import annotations

import ipaddress
from topoipam.structs import dataclass, field
from functools import cached_property

API_VERSION = "projectcalico.org/v3"

MODE_NEVER, MODE_ALWAYS, MODE_CROSS_SUBNET = "Never", "Always", "CrossSubnet"
ENCAP_MODES = (MODE_ALWAYS, MODE_CROSS_SUBNET, MODE_NEVER)
from topoipam.model import ALLOWED_USES, USE_LOAD_BALANCER, USE_TUNNEL, USE_WORKLOAD  # noqa: F401 (re-exported)
ASSIGN_AUTOMATIC, ASSIGN_MANUAL = "Automatic", "Manual"
DEFAULT_BLOCK_SIZE = {4: 26, 6: 122}


@dataclass
class Metadata:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    uid: str = ""
    creation_timestamp: str = ""  # RFC 3339, set by the store layer on create
    resource_version: str = ""  # store revision of the record this value was read from


@dataclass
class IPPoolSpec:
    cidr: str  # canonical network form after validation ("10.0.0.0/24")
    vxlan_mode: str = MODE_NEVER
    ipip_mode: str = MODE_NEVER
    nat_outgoing: bool = False
    disabled: bool = False
    disable_bgp_export: bool = False
    block_size: int = 0  # 0 until defaulted: 26 (IPv4) / 122 (IPv6)
    node_selector: str = "all()"
    namespace_selector: str = ""
    allowed_uses: list[str] = field(default_factory=lambda: [USE_WORKLOAD, USE_TUNNEL])
    assignment_mode: str = ASSIGN_AUTOMATIC


@dataclass
class IPPool:
    metadata: Metadata
    spec: IPPoolSpec
    kind = "IPPool"

    @property
    def name(self) -> str:
        return self.metadata.name

    @cached_property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        """The pool CIDR as a network (only valid after validation)."""
        return ipaddress.ip_network(self.spec.cidr)

    @property
    def version(self) -> int:
        return self.network.version


@dataclass
class NodeBGPSpec:
    ipv4_address: str = ""
    ipv6_address: str = ""
    ipv4_ipip_tunnel_addr: str = ""
    as_number: str = ""
    route_reflector_cluster_id: str = ""


@dataclass
class NodeWireguardSpec:
    interface_ipv4_address: str = ""
    interface_ipv6_address: str = ""


@dataclass
class NodeSpec:
    bgp: NodeBGPSpec | None = None
    ipv4_vxlan_tunnel_addr: str = ""
    ipv6_vxlan_tunnel_addr: str = ""
    # Carried through unchanged so that a Calico Node manifest round-trips.
    vxlan_tunnel_mac_addr: str = ""
    vxlan_tunnel_mac_addr_v6: str = ""
    wireguard: NodeWireguardSpec | None = None
    orch_refs: list[dict] = field(default_factory=list)  # [{"nodeName": .., "orchestrator": ..}]
    addresses: list[dict] = field(default_factory=list)  # [{"address": .., "type": ..}]
    interfaces: list[dict] = field(default_factory=list)  # [{"name": .., "addresses": [..]}]


@dataclass
class Node:
    metadata: Metadata
    spec: NodeSpec = field(default_factory=NodeSpec)
    kind = "Node"

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def labels(self) -> dict[str, str]:
        return self.metadata.labels


@dataclass
class IPAMConfigSpec:
    strict_affinity: bool = False
    auto_allocate_blocks: bool = True
    max_blocks_per_host: int = 0
    kube_virt_vm_address_persistence: str = "Enabled"


@dataclass
class IPAMConfig:
    """Singleton: the only allowed name is ``default``."""

    metadata: Metadata
    spec: IPAMConfigSpec = field(default_factory=IPAMConfigSpec)
    kind = "IPAMConfiguration"

    @property
    def name(self) -> str:
        return self.metadata.name


@dataclass
class IPReservationSpec:
    reserved_cidrs: list[str] = field(default_factory=list)  # CIDRs or bare addresses


@dataclass
class IPReservation:
    metadata: Metadata
    spec: IPReservationSpec = field(default_factory=IPReservationSpec)
    kind = "IPReservation"

    @property
    def name(self) -> str:
        return self.metadata.name


@dataclass
class ProfileSpec:
    """Calico's v3 ProfileSpec. topoipam reads ``labels_to_apply`` only: a Profile named
    ``kns.<namespace>`` gives that namespace its labels (``resources.repo.namespace_labels``).
    The (deprecated) policy rules are checked for shape and kept so that a Calico manifest
    round-trips; they are Calico's v3 Rule objects in their JSON form."""

    ingress: list[dict] = field(default_factory=list)
    egress: list[dict] = field(default_factory=list)
    labels_to_apply: dict[str, str] = field(default_factory=dict)


@dataclass
class Profile:
    metadata: Metadata
    spec: ProfileSpec = field(default_factory=ProfileSpec)
    kind = "Profile"

    @property
    def name(self) -> str:
        return self.metadata.name


Resource = IPPool | Node | IPAMConfig | IPReservation | Profile
