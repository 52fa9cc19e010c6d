"""The plugin's own inputs: the ``ipam`` section of the network config and ``CNI_ARGS``.

``ipam`` fields (unknown ones are refused with CNI code 2, naming key and value):

    type            the plugin name (whatever the runtime exec'd; not checked)
    nodename        the node this plugin serves; else the host name
    datastore       datastore URL; else $TOPOIPAM_DATASTORE; else the request fails with code 7 (no default)
    agent_socket    the node agent's unix socket (see cni/agent_client.py); "" = never use the agent
    assign_ipv4     bool or "true"/"false", default true (Calico: only "false" disables)
    assign_ipv6     bool or "true"/"false", default false (Calico: only "true" enables)
    ipv4_pools      pool names or CIDRs to use instead of the node selectors
    ipv6_pools
    segment         "l2" or "routed": whether the main plugin puts workloads on one L2
                    segment with the block's prefix. Default from the netconf's top-level
                    "type": bridge, macvlan, ipvlan -> l2; ptp and anything else -> routed
    gateway         an address, a list of at most one address per family, or "none".
                    A family not named gets the default: under l2 each block's first
                    usable address (network + 1), under routed the link-local next hop
                    169.254.1.1 (IPv4) / fe80::1 (IPv6) that ptp puts on the host's veth.
                    Under l2 the network address, IPv4's broadcast address and the
                    gateway are never handed out (docs/cni.md)
    routes          [{"dst": CIDR, "gw": address}]; ``gw`` defaults to the result's
                    gateway of the family. A route with neither is refused: the
                    reference bridge plugin's CHECK fails on routes without a gw.

``CNI_ARGS`` (``K=V;K=V``): ``IgnoreUnknown``, ``K8S_POD_NAMESPACE``,
``K8S_POD_NAME``, ``K8S_POD_UID``, ``K8S_POD_INFRA_CONTAINER_ID``, and ``IP``
(one address, or one IPv4 and one IPv6 separated by a comma) for a specific
address. Other keys are refused unless ``IgnoreUnknown`` is true, as libcni does.

Everything here is a value check with no I/O; violations raise ``CniError``.
"""

from __future__ import annotations

import ipaddress
from topoipam import leanjson
import os
from collections.abc import Mapping

from topoipam import errors as E
from topoipam.cni.protocol import CniError

IPAM_FIELDS = frozenset({"type", "nodename", "datastore", "assign_ipv4", "assign_ipv6",
                         "ipv4_pools", "ipv6_pools", "segment", "gateway", "routes", "agent_socket"})
L2_PLUGINS = frozenset({"bridge", "macvlan", "ipvlan"})  # main plugins that put workloads on one L2 segment
ROUTED_GATEWAYS = {4: ipaddress.ip_address("169.254.1.1"), 6: ipaddress.ip_address("fe80::1")}
NO_GATEWAY = "none"
KNOWN_ARGS = frozenset({"IgnoreUnknown", "K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_UID",
                        "K8S_POD_INFRA_CONTAINER_ID", "IP"})
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class IpamConf:
    """The parsed ``ipam`` section (a plain class: dataclasses would cost the plugin's start-up)."""

    def __init__(self, nodename: str) -> None:
        self.nodename = nodename
        self.datastore: str | None = None
        self.assign_ipv4 = True
        self.assign_ipv6 = False
        self.ipv4_pools: tuple[str, ...] = ()
        self.ipv6_pools: tuple[str, ...] = ()
        self.l2 = False  # the main plugin puts workloads on one L2 segment with the block's prefix
        self.gateways: dict[int, IpAddress | None] = {}  # family -> configured gateway (None: "none")
        self.routes: list[dict[str, str | None]] = []  # result form; gw None: the result's gateway


class CniArgs:
    """The parsed ``CNI_ARGS`` that the plugin uses."""

    def __init__(self, namespace: str | None = None, pod: str | None = None, pod_uid: str | None = None,
                 ips: tuple[IpAddress, ...] = ()) -> None:
        self.namespace = namespace
        self.pod = pod
        self.pod_uid = pod_uid
        self.ips = ips


def _invalid(msg: str, details: str = "") -> CniError:
    return CniError(E.CNI_INVALID_NETCONF, msg, details)


def parse_ipam(config: Mapping, default_nodename: str | None = None) -> IpamConf:
    ipam = config.get("ipam")
    if not isinstance(ipam, dict):
        raise _invalid('network config has no "ipam" object', "expected \"ipam\": {\"type\": \"topoipam-cni\", ...}")
    for key, value in ipam.items():
        if key not in IPAM_FIELDS:
            raise CniError(E.CNI_UNSUPPORTED_FIELD, f"unsupported field ipam.{key} = {leanjson.dumps(value)}",
                           f"known ipam fields: {', '.join(sorted(IPAM_FIELDS))}")
    conf = IpamConf(nodename=_string(ipam, "nodename") or default_nodename or os.uname().nodename)
    conf.datastore = _string(ipam, "datastore") or None
    conf.assign_ipv4 = _flag(ipam, "assign_ipv4", True)
    conf.assign_ipv6 = _flag(ipam, "assign_ipv6", False)
    if not (conf.assign_ipv4 or conf.assign_ipv6):
        raise _invalid("ipam.assign_ipv4 and ipam.assign_ipv6 are both false: nothing to assign")
    conf.ipv4_pools = _pools(ipam, "ipv4_pools", 4)
    conf.ipv6_pools = _pools(ipam, "ipv6_pools", 6)
    conf.l2 = _segment(ipam, config.get("type"))
    conf.gateways = _gateways(ipam.get("gateway"))
    conf.routes = _routes(ipam.get("routes"), conf.gateways)
    return conf


def parse_release(config: Mapping, default_nodename: str | None = None) -> IpamConf:
    """What DEL needs (the datastore): DEL releases whatever it can identify, so fields ADD would
    refuse (unknown ones, bad values of the others) do not stop it."""
    ipam = config.get("ipam")
    if not isinstance(ipam, dict):
        raise _invalid('network config has no "ipam" object', "expected \"ipam\": {\"type\": \"topoipam-cni\", ...}")
    nodename = ipam.get("nodename")
    conf = IpamConf(nodename=nodename if isinstance(nodename, str) and nodename else
                    default_nodename or os.uname().nodename)
    conf.datastore = _string(ipam, "datastore") or None  # the one field DEL cannot do without
    return conf


def _segment(ipam: Mapping, plugin: object) -> bool:
    value = ipam.get("segment")
    if value is None:
        return plugin in L2_PLUGINS
    if value not in ("l2", "routed"):
        raise _invalid('ipam.segment must be "l2" or "routed"', f"got {leanjson.dumps(value)}")
    return value == "l2"


def _string(ipam: Mapping, key: str) -> str:
    value = ipam.get(key, "")
    if not isinstance(value, str):
        raise _invalid(f"ipam.{key} must be a string", f"got {leanjson.dumps(value)}")
    return value


def _flag(ipam: Mapping, key: str, default: bool) -> bool:
    value = ipam.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _invalid(f"ipam.{key} must be true or false", f"got {leanjson.dumps(value)}")


def _pools(ipam: Mapping, key: str, family: int) -> tuple[str, ...]:
    value = ipam.get(key, [])
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise _invalid(f"ipam.{key} must be a list of pool names or CIDRs", f"got {leanjson.dumps(value)}")
    for pool in value:
        if "/" not in pool:
            continue  # a pool name; the IPAM service resolves it
        try:
            net = ipaddress.ip_network(pool, strict=False)
        except ValueError as exc:
            raise _invalid(f'error parsing pool "{pool}" in ipam.{key}: {exc}') from None
        if net.version != family:
            raise _invalid(f'error parsing pool "{pool}" in ipam.{key}: "{pool}" isn\'t a IPv{family} address')
    return tuple(value)


def _address(text: object, where: str) -> IpAddress:
    if not isinstance(text, str):
        raise _invalid(f"{where} must be an IP address string", f"got {leanjson.dumps(text)}")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise _invalid(f"{where}: {text!r} is not an IP address") from None


def _gateways(value: object) -> dict[int, IpAddress | None]:
    if value is None:
        return {}
    if value == NO_GATEWAY:
        return {4: None, 6: None}
    items = value if isinstance(value, list) else [value]
    gateways: dict[int, IpAddress | None] = {}
    for item in items:
        gw = _address(item, "ipam.gateway")
        if gw.version in gateways:
            raise _invalid(f"ipam.gateway has two IPv{gw.version} addresses", f"{gateways[gw.version]} and {gw}")
        gateways[gw.version] = gw
    return gateways


def _routes(value: object, gateways: Mapping[int, IpAddress | None]) -> list[dict[str, str | None]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid("ipam.routes must be a list of {\"dst\": CIDR, \"gw\": address}", f"got {leanjson.dumps(value)}")
    routes = []
    for i, route in enumerate(value):
        where = f"ipam.routes[{i}]"
        if not isinstance(route, dict) or set(route) - {"dst", "gw"} or "dst" not in route:
            raise _invalid(f"{where} must be {{\"dst\": CIDR, \"gw\": address}}", f"got {leanjson.dumps(route)}")
        try:
            dst = ipaddress.ip_network(route["dst"]) if isinstance(route["dst"], str) else None
        except ValueError:
            dst = None
        if dst is None:
            raise _invalid(f"{where}.dst: {leanjson.dumps(route['dst'])} is not a CIDR")
        if "gw" not in route:
            if dst.version in gateways and gateways[dst.version] is None:
                raise _invalid(f"{where} ({dst}) has no gw and ipam.gateway is none for IPv{dst.version}",
                               "routes are returned only with a next hop")
            routes.append({"dst": str(dst), "gw": None})  # the result's gateway of the family
            continue
        gw = _address(route["gw"], f"{where}.gw")
        if gw.version != dst.version:
            raise _invalid(f"{where}: gw {gw} and dst {dst} are of different IP families")
        routes.append({"dst": str(dst), "gw": str(gw)})
    return routes


def parse_args(text: str) -> CniArgs:
    """Parse ``CNI_ARGS``; invalid pairs or unknown keys (without IgnoreUnknown) -> code 4."""
    pairs: dict[str, str] = {}
    for item in filter(None, text.split(";")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CniError(E.CNI_INVALID_ENV, f"CNI_ARGS: invalid pair {item!r}", "expected KEY=VALUE;KEY=VALUE")
        pairs[key] = value
    ignore = pairs.get("IgnoreUnknown", "").lower() in ("1", "true")
    unknown = sorted(k for k in pairs if k not in KNOWN_ARGS)
    if unknown and not ignore:
        raise CniError(E.CNI_INVALID_ENV, f"CNI_ARGS: unknown args {leanjson.dumps(unknown)}", "add IgnoreUnknown=1 to ignore them")
    args = CniArgs(namespace=pairs.get("K8S_POD_NAMESPACE") or None, pod=pairs.get("K8S_POD_NAME") or None,
                   pod_uid=pairs.get("K8S_POD_UID") or None)
    if pairs.get("IP"):
        args.ips = _requested_ips(pairs["IP"])
    return args


def _requested_ips(text: str) -> tuple[IpAddress, ...]:
    ips: list[IpAddress] = []
    for part in text.split(","):
        try:
            ip = ipaddress.ip_address(part.strip())
        except ValueError:
            raise CniError(E.CNI_INVALID_ENV, f"CNI_ARGS: IP={text} is not an IP address", part) from None
        if any(other.version == ip.version for other in ips):
            raise CniError(E.CNI_INVALID_ENV, f"CNI_ARGS: IP={text} asks for two IPv{ip.version} addresses")
        ips.append(ip)
    return tuple(sorted(ips, key=lambda ip: ip.version))
