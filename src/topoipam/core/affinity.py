"""Who a block is affine to: one host (Calico's only kind) or a topology domain (issue 11).

A pool annotated ``topoipam.io/affinity-label: rack`` has its blocks affine to the pair
(label, value) a node carries, e.g. ``rack=0``: every node of the rack assigns from the
domain's blocks and claims a new block for the domain only when those are full. Every
other pool keeps Calico's host affinity. ``holder_for(node, labels, pool)`` is the one
place that decides which; everything that writes, reads or shows an affinity goes
through the ``Holder`` it returns:

    holder.affinity        the block's stored ``affinity`` field: "host:node-1" | "domain:rack=0"
    holder.display         what tables show: "node-1" | "rack=0"
    holder.node            the host's name, None for a domain
    holder.carried_by(labels)   whether a node with ``labels`` belongs to this holder

Pure values, no I/O (the datastore key of an affinity is ``ipam.keys.holder_prefix``).
"""

from __future__ import annotations

from collections.abc import Mapping

from topoipam.structs import dataclass

#: The IPPool annotation naming its affinity domain's node label (Calico ignores annotations).
AFFINITY_LABEL_ANNOTATION = "topoipam.io/affinity-label"
HOST, DOMAIN = "host", "domain"


@dataclass(frozen=True, slots=True)
class Holder:
    """An affinity holder: ``kind`` HOST with ``name`` the node, or DOMAIN with ``label`` and ``value``.
    Made by ``host_holder`` / ``domain_holder`` (or ``holder_for``, ``holder_of``)."""

    kind: str
    name: str  # the node name (HOST) or the label's value (DOMAIN)
    label: str = ""  # the node label of a DOMAIN
    affinity: str = ""  # the block's stored field, made once (it is compared on every assignment)

    @property
    def display(self) -> str:
        return self.name if self.kind == HOST else f"{self.label}={self.name}"

    @property
    def node(self) -> str | None:
        return self.name if self.kind == HOST else None

    @property
    def is_domain(self) -> bool:
        return self.kind == DOMAIN

    def carried_by(self, labels: Mapping[str, str], node: str | None = None) -> bool:
        """Whether a node (``node``: its name, for a host holder) with ``labels`` is of this holder."""
        if self.kind == HOST:
            return node == self.name
        return labels.get(self.label) == self.name


def host_holder(node: str) -> Holder:
    return Holder(HOST, node, "", f"host:{node}")


def domain_holder(label: str, value: str) -> Holder:
    return Holder(DOMAIN, value, label, f"domain:{label}={value}")


def affinity_label(pool) -> str | None:
    """The pool's affinity-domain label (None: host affinity)."""
    return pool.metadata.annotations.get(AFFINITY_LABEL_ANNOTATION) or None


def holder_for(node: str, labels: Mapping[str, str], pool) -> Holder | None:
    """The holder whose blocks ``node`` (with ``labels``) uses in ``pool``; None when the pool has an
    affinity label the node does not carry (the node gets no address from that pool)."""
    label = affinity_label(pool)
    if label is None:
        return host_holder(node)
    value = labels.get(label)
    return None if value is None else domain_holder(label, value)


def holder_of(affinity: str | None) -> Holder | None:
    """The holder a block's stored ``affinity`` names (None: no affinity, or a kind not ours)."""
    if not affinity:
        return None
    if affinity.startswith("host:"):
        return host_holder(affinity[5:])
    if affinity.startswith("domain:"):
        label, eq, value = affinity[7:].partition("=")
        if eq and label:
            return domain_holder(label, value)
    return None
