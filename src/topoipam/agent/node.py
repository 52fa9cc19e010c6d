"""The agent's own Node: registration and its tunnel addresses (reference section 5).

``register_node`` creates the Node, or sets only the labels it is given on an
existing one (other labels, and everything else an operator put on the Node,
are kept); a compare-and-swap on the revision read, retried by the one CAS loop.

``reconcile_tunnels`` does what calico-node's ``allocate-tunnel-addrs`` does
for IPIP, VXLAN and VXLAN-v6 (WireGuard needs a public key that topoipam's
Node does not carry, so it is not done):

* candidate pools: enabled, of the family, whose allowed uses (if any) include
  Tunnel, whose ``ipipMode``/``vxlanMode`` is Always or CrossSubnet, and whose
  node selector selects the node; in pool name order;
* the address on the Node is kept if the handle ``<type>-tunnel-addr-<node>``
  holds it and it lies in a candidate pool; otherwise the handle is released
  and one address is assigned from the candidate pools (requested pools, so
  selectors are bypassed as in Calico) with attributes ``{node, type}``;
* no candidate pool: the handle is released and the Node field cleared.

The address is assigned before the Node is updated; if the agent dies in
between, the next run finds the handle holding an address the Node does not
name, releases it and assigns again (as Calico does), so nothing leaks.
Reconciliation decides on the Node and pools read fresh from the store (the
service's ``snapshot()``, not its kept topology), so it never acts on a Node
older than its own last write; the assignments it makes are fenced as any.
"""

from __future__ import annotations

import copy
import ipaddress
import logging
import uuid
from topoipam.structs import dataclass
from datetime import datetime, timezone
from typing import Mapping

from topoipam.core.pools import selects_node
from topoipam.errors import NotFoundError, TopoipamError, ValidationError
from topoipam.ipam import AssignRequest, IpamService
from topoipam.store.retry import Plan, run_cas
from topoipam.model.storage import from_storage, to_storage
from topoipam.model.types import (MODE_ALWAYS, MODE_CROSS_SUBNET, USE_TUNNEL, IPPool, Metadata, Node,
                                  NodeBGPSpec)
from topoipam.model.validate import validate
from topoipam.resources.keys import resource_key
from topoipam.selector import valid_label
from topoipam.store.base import Create, Store, Update

log = logging.getLogger("topoipam.agent")


@dataclass(frozen=True)
class Tunnel:
    name: str
    version: int
    attr_type: str  # Calico's allocation attribute "type"
    handle_prefix: str
    mode_field: str  # IPPoolSpec field that enables this encapsulation

    def handle(self, node: str) -> str:
        return f"{self.handle_prefix}-{node}"


IPIP = Tunnel("IPIP", 4, "ipipTunnelAddress", "ipip-tunnel-addr", "ipip_mode")
VXLAN = Tunnel("VXLAN", 4, "vxlanTunnelAddress", "vxlan-tunnel-addr", "vxlan_mode")
VXLAN_V6 = Tunnel("VXLAN-v6", 6, "vxlanV6TunnelAddress", "vxlan-v6-tunnel-addr", "vxlan_mode")
TUNNELS = (IPIP, VXLAN, VXLAN_V6)


def get_address(node: Node, tunnel: Tunnel) -> str:
    if tunnel is IPIP:
        return node.spec.bgp.ipv4_ipip_tunnel_addr if node.spec.bgp else ""
    return node.spec.ipv4_vxlan_tunnel_addr if tunnel is VXLAN else node.spec.ipv6_vxlan_tunnel_addr


def set_address(node: Node, tunnel: Tunnel, address: str) -> None:
    if tunnel is IPIP:
        bgp = node.spec.bgp or NodeBGPSpec()
        bgp.ipv4_ipip_tunnel_addr = address
        node.spec.bgp = None if bgp == NodeBGPSpec() else bgp  # Calico refuses an empty BGP spec
    elif tunnel is VXLAN:
        node.spec.ipv4_vxlan_tunnel_addr = address
    else:
        node.spec.ipv6_vxlan_tunnel_addr = address


def parse_labels(items) -> dict[str, str]:
    """``k=v`` strings -> dict; ValidationError naming the bad one."""
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not valid_label(key) or (value and not valid_label(value)):
            raise ValidationError(f"label {item!r} must be key=value, each of [a-zA-Z0-9_./-] (value may be empty)")
        labels[key] = value
    return labels


def register_node(store: Store, name: str, labels: Mapping[str, str]) -> tuple[Node, str]:
    """Create the Node or set the given labels on it; ``(node, "created" | "updated" | "unchanged")``."""
    key = resource_key("Node", name)

    def attempt(_n):
        rec = store.get(key)
        if rec is None:
            node = validate(Node(Metadata(name=name, labels=dict(labels))))
            node.metadata.uid = str(uuid.uuid4())
            node.metadata.creation_timestamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            return Plan([Create(key, to_storage(node))], (node, "created"))
        current = from_storage("Node", rec.value, rec.revision)
        if all(current.labels.get(k) == v for k, v in labels.items()):
            return Plan(result=(current, "unchanged"))
        changed = copy.deepcopy(current)
        changed.metadata.labels = {**current.labels, **labels}
        node = validate(changed, old=current)
        node.metadata.resource_version = ""
        return Plan([Update(key, to_storage(node), rec.revision)], (node, "updated"))

    return run_cas(store, attempt, f"register node {name}")


def candidate_pools(pools: list[IPPool], node: Node, tunnel: Tunnel) -> list[IPPool]:
    out = []
    for pool in sorted(pools, key=lambda p: p.name):
        spec = pool.spec
        if pool.version != tunnel.version or spec.disabled:
            continue
        if spec.allowed_uses and USE_TUNNEL not in spec.allowed_uses:
            continue
        if getattr(spec, tunnel.mode_field) not in (MODE_ALWAYS, MODE_CROSS_SUBNET):
            continue
        if selects_node(pool, node.labels):
            out.append(pool)
    return out


def reconcile_tunnels(store: Store, node_name: str, service: IpamService | None = None) -> dict[str, str]:
    """Bring the Node's tunnel addresses in line with the pools; returns {tunnel name: address or ""}.

    ``service``: the agent's own (on ``store``), so that its kept blocks stay in step with the
    tunnel assignments; its ``snapshot()`` is read fresh (see the module docstring)."""
    svc = service or IpamService(store)
    snap = svc.snapshot()
    node = snap.node(node_name)
    if node is None:
        raise NotFoundError(f"node {node_name} is not registered; cannot allocate its tunnel addresses")
    wanted = {}
    for tunnel in TUNNELS:
        wanted[tunnel] = _reconcile_one(svc, node, tunnel, candidate_pools(snap.pools, node, tunnel))
    _write_addresses(store, node_name, wanted)
    return {t.name: a for t, a in wanted.items()}


def _reconcile_one(svc: IpamService, node: Node, tunnel: Tunnel, pools: list[IPPool]) -> str:
    handle = tunnel.handle(node.name)
    current = get_address(node, tunnel)
    if current and pools and _kept(svc, handle, current, pools):
        return current
    _release(svc, handle)
    if not pools:
        if current:
            log.info("%s tunnel address %s of node %s released: no pool qualifies any more",
                     tunnel.name, current, node.name)
        return ""
    req = AssignRequest(node=node.name, handle=handle, num4=1 if tunnel.version == 4 else 0,
                        num6=1 if tunnel.version == 6 else 0, pools4=(), pools6=(),
                        attrs={"node": node.name, "type": tunnel.attr_type}, use=USE_TUNNEL)
    cidrs = tuple(p.spec.cidr for p in pools)
    if tunnel.version == 4:
        req.pools4 = cidrs
    else:
        req.pools6 = cidrs
    try:
        res = svc.auto_assign(req)
    except TopoipamError as exc:
        if isinstance(exc, ValidationError) or exc.exit_code == 3:
            raise
        log.warning("cannot allocate the %s tunnel address of node %s: %s", tunnel.name, node.name, exc)
        return ""
    address = str((res.ipv4 or res.ipv6)[0].ip)
    log.info("%s tunnel address of node %s: %s", tunnel.name, node.name, address)
    return address


def _kept(svc: IpamService, handle: str, current: str, pools: list[IPPool]) -> bool:
    try:
        held = set(svc.ips_by_handle(handle))
        addr = ipaddress.ip_address(current)
    except (NotFoundError, ValueError):
        return False
    return addr in held and any(addr in p.network for p in pools)


def _release(svc: IpamService, handle: str) -> None:
    try:
        svc.release_by_handle(handle)
    except NotFoundError:
        pass


def _write_addresses(store: Store, node_name: str, wanted: dict[Tunnel, str]) -> None:
    key = resource_key("Node", node_name)

    def attempt(_n):
        rec = store.get(key)
        if rec is None:
            raise NotFoundError(f"node {node_name} was deleted while its tunnel addresses were being allocated")
        node = from_storage("Node", rec.value, rec.revision)
        if all(get_address(node, t) == a for t, a in wanted.items()):
            return Plan()
        for tunnel, address in wanted.items():
            set_address(node, tunnel, address)
        node.metadata.resource_version = ""
        return Plan([Update(key, to_storage(node), rec.revision)])

    run_cas(store, attempt, f"tunnel addresses of node {node_name}")
