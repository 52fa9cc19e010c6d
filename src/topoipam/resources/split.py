"""Splitting one IP pool into 2^k equal pools (``ipam split``), in one transaction.

calicoctl needs a locked datastore for this (disable, create the children,
delete the parent, as separate writes). topoipam has no lock: the parent's
delete, the children's creates and the pool guard's compare-and-swap are ONE
commit, so allocators see either the parent or the children, never both and
never neither. Blocks and their affinities stay as they are: every block of
the parent lies in exactly one child (children keep the parent's block size).
"""

from __future__ import annotations

import ipaddress
from topoipam.structs import replace

from topoipam.errors import NotFoundError, ValidationError
from topoipam.store.retry import Plan, run_cas
from topoipam.model.storage import to_storage
from topoipam.model.types import IPPool, Metadata
from topoipam.model.validate import validate
from topoipam.resources import repo
from topoipam.resources.keys import POOL_GUARD_KEY, resource_key
from topoipam.resources.service import guard_op, stamp_new, topology_bump
from topoipam.store.base import Create, Delete, Store

MAX_NAME = 253


def check_parts(parts: int) -> None:
    if parts < 2 or parts & (parts - 1):
        raise ValidationError(f"number to split CIDR into is not a valid power of 2: {parts}")


def split_cidrs(cidr: str, parts: int) -> list:
    """``parts`` consecutive equal sub-networks of ``cidr`` (Calico's messages for bad input)."""
    check_parts(parts)
    net = ipaddress.ip_network(cidr, strict=False)
    power = parts.bit_length() - 1
    if net.prefixlen + power > net.max_prefixlen:
        raise ValidationError(f"the CIDR {cidr} is not large enough to be split into {parts} parts")
    return list(net.subnets(prefixlen_diff=power))


def child_name(parent: str, i: int) -> str:
    name = f"split-{parent}-{i}"
    return name if len(name) <= MAX_NAME else f"split-{parent[:245]}-{i}"


def _find(store: Store, name: str | None, cidr: str | None) -> IPPool:
    if name:
        pool = repo.get_pool(store, name)
        if pool is None:
            raise NotFoundError(f"unable to find IP pool with name {name}: "
                                f"resource does not exist: IPPool({name}) with error: <nil>")
        return pool
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise ValidationError(f"invalid CIDR {cidr!r}") from None
    for pool in repo.list_pools(store):
        if pool.network == net:
            return pool
    raise NotFoundError(f"unable to find IP pool covering the specified CIDR {cidr}")


def split_pool(store: Store, parts: int, *, name: str | None = None, cidr: str | None = None) -> tuple[str, list]:
    """Replace the pool named ``name`` (or whose CIDR is exactly ``cidr``) by ``parts`` children.
    Returns (parent name, [children as stored])."""
    if not name and not cidr:
        raise ValidationError("no name or CIDR provided. Provide a name or CIDR to denote the IP pool to split")

    def attempt(_n):
        guard = guard_op(store, POOL_GUARD_KEY)  # read first: a pool create after this read fails our commit
        parent = _find(store, name, cidr)
        children, ops = [], [Delete(resource_key("IPPool", parent.name), int(parent.metadata.resource_version))]
        for i, net in enumerate(split_cidrs(parent.spec.cidr, parts)):
            meta = Metadata(name=child_name(parent.name, i), labels=dict(parent.metadata.labels),
                            annotations=dict(parent.metadata.annotations))
            child = validate(IPPool(meta, replace(parent.spec, cidr=str(net), disabled=False,
                                                  allowed_uses=list(parent.spec.allowed_uses))))
            stamp_new(child)
            if repo.get_pool(store, child.name) is not None:
                raise ValidationError(f"cannot split IPPool({parent.name}): IPPool({child.name}) already exists")
            ops.append(Create(resource_key("IPPool", child.name), to_storage(child)))
            children.append(child)
        # Pool creates serialise on the guard (resources.service): so must this one.
        ops.append(guard)
        ops.append(topology_bump(store))  # services holding the old pools must re-read them
        return Plan(ops, (parent.name, children))

    return run_cas(store, attempt, f"split of pool {name or cidr}")
