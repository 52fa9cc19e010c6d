"""Node decommission: what ``delete node NAME`` releases before the Node record goes.

Calico's ``clientv3`` ``nodes.Delete`` (libcalico-go/lib/clientv3/node.go) releases, with no
extra flag: the addresses of the node's workload endpoints, its tunnel addresses, then its
block affinities (``RemoveIPAMHost``: empty blocks are deleted, blocks still holding addresses
stay without affinity), and only then deletes the Node. topoipam keeps no workload endpoint
records: a workload's addresses are the allocations whose ``node`` attribute names the node
(the CNI plugin and ``ipam assign`` write it), and its tunnel addresses are those with the
``type`` attribute as well (the agent writes ``{node, type}``, which covers the addresses in
the Node's spec).

Every release goes through ``ipam/release.py``: addresses per handle, fenced by that handle
(an address released and given to another workload meanwhile is not touched), then each
affinity with ``release_affinity``. Each is its own compare-and-swap; the Node record is
deleted last by the caller, so a run that fails half way leaves the node registered with what
remains, the error says what was released and what was not, and a second run completes it.
"""

from __future__ import annotations

from collections.abc import Callable

from topoipam.core.affinity import holder_of
from topoipam.errors import TopoipamError
from topoipam.ipam import keys
from topoipam.ipam.blocks import list_affine_nets, load_block
from topoipam.ipam.check import allocations
from topoipam.ipam.release import address_order, release_affinity
from topoipam.structs import dataclass, field


@dataclass
class Holding:
    """The addresses one handle holds on the node."""

    handle: str | None
    tunnel: str  # the ``type`` attribute of a tunnel address; "" for a workload
    ips: list = field(default_factory=list)
    seqs: list = field(default_factory=list)  # per address, for allocations without a handle
    workload: str = ""  # namespace/pod when the attributes name them

    def describe(self) -> str:
        what = f"tunnel address ({self.tunnel})" if self.tunnel else f"workload {self.workload or self.handle}"
        ips = ", ".join(str(ip) for ip in self.ips)
        return f"{what}, handle {self.handle or '<none>'}: {ips}"


@dataclass
class NodeHoldings:
    node: str
    holdings: list[Holding]
    blocks: list  # networks of the node's affine blocks (both families)

    @property
    def workloads(self) -> list[Holding]:
        return [h for h in self.holdings if not h.tunnel]

    @property
    def tunnels(self) -> list[Holding]:
        return [h for h in self.holdings if h.tunnel]


def node_holdings(store, node: str) -> NodeHoldings:
    """What decommissioning ``node`` releases, read now (one read of blocks and handles)."""
    groups: dict[tuple, Holding] = {}
    for a in allocations(store):
        if a.attrs.get("node") != node:
            continue
        # An allocation without a handle is released on its own, fenced by its sequence number.
        key = (a.handle,) if a.handle is not None else (None, str(a.ip.ip))
        h = groups.get(key)
        if h is None:
            pod, ns = a.attrs.get("pod", ""), a.attrs.get("namespace", "")
            h = groups[key] = Holding(a.handle, a.attrs.get("type", ""), workload=f"{ns}/{pod}" if pod else "")
        h.ips.append(a.ip.ip)
        h.seqs.append(a.sequence_number)
    for h in groups.values():
        h.ips.sort(key=address_order)
    blocks = [net for version in (4, 6) for net in list_affine_nets(store, node, version)]
    return NodeHoldings(node, sorted(groups.values(), key=lambda h: (bool(h.tunnel), h.handle or "")), blocks)


def release_node(svc, node: str, report: Callable[[str], None]) -> NodeHoldings:
    """Release what ``node`` holds (addresses, then affinities), calling ``report`` with one line per
    release as it lands. On a failure the error names what was released and what remains."""
    found = node_holdings(svc.store, node)
    if found.holdings or found.blocks:
        # Calico deletes a node with workloads without asking (they are gone with the node): say how many.
        report(f"Node {node} holds {len(found.workloads)} workload(s), {len(found.tunnels)} tunnel address(es) "
               f"and {len(found.blocks)} block affinity(ies): releasing them")
    done: list[str] = []
    pending = [h.describe() for h in found.holdings] + [f"affinity of block {n}" for n in found.blocks]
    try:
        for h in found.holdings:
            skipped = _release_holding(svc, h)
            note = f" ({', '.join(map(str, skipped))} held by someone else by now: left alone)" if skipped else ""
            done.append(pending.pop(0))
            report(f"Released {h.describe()}{note}")
        for net in found.blocks:
            report(f"Released affinity of block {net}: {_release_block(svc, net, node)}")
            done.append(pending.pop(0))
        for net in svc.release_orphan_domains(leaving=node):  # the last node of a rack: its empty blocks
            report(f"Released empty block {net} of a domain no other node carries (docs/domain-affinity.md)")
    except TopoipamError as err:
        err.message = (f"{err.message}; decommission of node {node} stopped half way: released "
                       f"{len(done)} ({'; '.join(done) or 'nothing'}), still held {len(pending)} "
                       f"({'; '.join(pending)}); the Node was not deleted: run the delete again to complete it")
        raise
    return found


def _release_holding(svc, h: Holding) -> list:
    """The addresses not released (freed, or given to someone else, since they were read)."""
    if h.handle is not None:
        return svc.release_ips(h.ips, handle=h.handle)  # fenced: a reused address is left to its new holder
    return [ip for ip, seq in zip(h.ips, h.seqs) for ip in svc.release_ips([ip], seq=seq)]


def _release_block(svc, net, node: str) -> str:
    """Release ``node``'s affinity to ``net`` (Calico's RemoveIPAMHost: non-empty blocks stay, unaffine)."""
    if not release_affinity(svc, net, node):
        return "already released"
    record = svc.store.get(keys.block_key(net))
    if record is None:
        return "empty block freed"
    block = load_block(record).block
    held = len(block.allocated_ordinals())
    owner = holder_of(block.affinity)  # a host, or a domain such as rack=0 (core.affinity)
    if owner is not None and owner.display != node:
        return f"block now affine to {owner.display}"
    return f"block left without affinity ({held} address(es) still allocated)"
