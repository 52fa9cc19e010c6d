"""Releasing addresses and affinities, and claiming affinities explicitly.

Each public function plans from fresh reads and commits once per decision
through ``retry.run_cas``: a block update together with the handle counts it
changes. A block left empty and without affinity is deleted; a block left
empty whose pool no longer selects its affine node loses its affinity (and is
deleted) in the same commit (Calico's ensureConsistentAffinity). A domain block
(core.affinity) left empty is deleted once no registered node carries its domain.
"""

from __future__ import annotations

import ipaddress
from topoipam import leanjson

from topoipam.core.affinity import Holder, affinity_label, holder_for, holder_of, host_holder
from topoipam.core.block import Block
from topoipam.errors import NotFoundError, ValidationError
from topoipam.ipam import keys
from topoipam.ipam.blocks import (AFFINITY_VALUE, ChunkEdits, StoredBlock, affinity_hint_op, candidate_keys,
                                  chunk_bit_op, delete_block_ops, handle_counts, handle_ops, list_holder_nets,
                                  load_block, pool_check, pool_key, pool_now, release_affinity_ops, scan_pool_blocks)
from topoipam.store.retry import Plan, run_cas
from topoipam.resources.keys import resource_key
from topoipam.store.base import Check, Create, Delete, Update

def parse_ip(text):
    """The address named by ``text`` (an address, an interface, or a string naming one address as
    calicoctl's ``--ip`` takes it); ValidationError with calicoctl's message otherwise."""
    if isinstance(text, (ipaddress.IPv4Interface, ipaddress.IPv6Interface)):  # before: they are addresses too
        return text.ip
    if isinstance(text, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return text
    try:
        return ipaddress.ip_address(str(text))
    except ValueError:
        raise ValidationError(f"invalid IP address specified: {text}") from None


def _settle_block(store, snap, stored: StoredBlock, chunks: ChunkEdits, was_full: bool) -> list:
    """Ops writing a block after a release: update, or delete when it is empty and has no affinity
    (or its pool no longer selects its node: that decision rests on the topology read, so the
    commit carries Checks on what it read). A block that was full clears its affinity's full-hint."""
    block = stored.block
    holder = holder_of(block.affinity)
    if block.is_empty():
        if block.affinity is None:
            return delete_block_ops(store, stored, None, chunks)
        fences = _holder_dropped(snap, block.cidr, holder) if holder is not None else None
        if fences is not None:
            return [*delete_block_ops(store, stored, store.get(keys.holder_key(holder, block.cidr)), chunks), *fences]
    block.sequence_number += 1
    ops = [Update(stored.key, block.to_json(), stored.revision)]
    if was_full and holder is not None:
        hint = affinity_hint_op(store.get(keys.holder_key(holder, block.cidr)), block)
        if hint is not None:
            ops.append(hint)
    return ops


def _holder_dropped(snap, net, holder: Holder) -> list | None:
    """None if the empty block ``net`` stays ``holder``'s; else the fences of letting it go. A domain's
    block goes once no registered node carries the domain (nothing to fence: an empty block deleted
    is only claimed again by the next node of the domain)."""
    if holder.node is not None:
        return _pool_dropped_node(snap, net, holder.node)
    return None if snap.carries(holder) else []


def _pool_dropped_node(snap, net, node_name: str) -> list | None:
    """None if ``net``'s pool still selects ``node_name`` (or the node is gone: its affinities are left
    to explicit cleanup); else the Checks fencing that answer: the node's and the pool's revisions,
    so that a relabel or a pool update landing meanwhile makes the commit fail and be re-planned."""
    from topoipam.core.pools import pool_containing, selects_node  # with the topology's first read (service.py)

    node = snap.node(node_name)
    if node is None:
        return None
    pool = pool_containing(snap.enabled_pools, net)
    if pool is not None and selects_node(pool, node.labels):
        return None
    rv = node.metadata.resource_version
    fences = [Check(resource_key("Node", node_name), int(rv))] if rv else []
    owner = pool or pool_containing(snap.pools, net)  # a disabled pool may be enabled again
    return [*fences, *(pool_check(owner) if owner is not None else [])]


def _once(ops: list) -> list:
    """``ops`` with each fence Check kept once (blocks deleted together share their node and pool)."""
    seen: set = set()
    out = []
    for op in ops:
        if type(op) is Check:
            if op.key in seen:
                continue
            seen.add(op.key)
        out.append(op)
    return out


def release_ips(svc, ips, handle=None, seq=None) -> list:
    """Free addresses; returns those that were not allocated (or, with ``handle``/``seq`` fencing,
    not allocated under that handle / sequence number). One commit for all of them."""
    addrs = list(dict.fromkeys(parse_ip(ip) for ip in ips))
    snap = svc.snapshot()
    store = svc.store

    def attempt(n):
        nonlocal snap
        if n:  # the commit may have lost on a topology fence: decide on the topology as it is now
            snap = svc.snapshot()
        found = store.get_many([k for ip in addrs for k in candidate_keys(ip)])
        now, keep = svc.clock(), svc.release_memory()
        blocks: dict[str, StoredBlock] = {}
        unallocated, deltas, changed, was_full = [], {}, {}, set()
        for ip in addrs:
            key = next((k for k in candidate_keys(ip) if k in found), None)
            if key is None:
                unallocated.append(ip)
                continue
            if key not in blocks:
                blocks[key] = load_block(found[key])
                if not blocks[key].block.unallocated:
                    was_full.add(key)
            stored = blocks[key]
            out = stored.block.release([stored.block.ordinal(ip)], handle=handle, seq=seq, now=now, keep=keep)
            unallocated += [stored.block.address(o) for o in out.not_allocated + out.fenced]
            if out.released:
                changed[key] = stored
            for h, count in out.by_handle.items():
                deltas.setdefault(h, {}).setdefault(str(stored.block.cidr), 0)
                deltas[h][str(stored.block.cidr)] -= count
        ops, chunks = [], ChunkEdits(store)
        for key, stored in changed.items():
            ops += _settle_block(store, snap, stored, chunks, key in was_full)
        ops += chunks.ops()
        handle_recs = store.get_many([keys.handle_key(h) for h in deltas])
        ops += handle_ops(handle_recs, deltas)
        return _plan(svc, _once(ops), unallocated, changed)

    return run_cas(store, attempt, "release addresses")


def _plan(svc, ops: list, result, changed: dict) -> Plan:
    """The plan of a release: when it lands, the service keeps the blocks it wrote (so that the next
    assignment from them needs no read); when it loses, the service forgets its keys."""
    written = {key: stored.block for key, stored in changed.items()}
    return Plan(ops, result, lambda rev: svc.cache.committed(ops, rev, written), lambda: svc.cache.forget(ops))


def unclaim_blocks(svc, claimed: dict, handle: str | None) -> set:
    """Undo the block claims of a failed request (``claimed``: network -> revision of the request's
    last commit to it). A block still at that revision holds only this request's addresses: it is
    deleted with its affinity and summary bit, and those addresses leave the handle, in one commit.
    A block someone used since is left alone (its addresses are then released one by one).
    Returns the networks given back."""
    store, done = svc.store, set()
    for net, revision in claimed.items():
        bkey, hkeys = keys.block_key(net), ([keys.handle_key(handle)] if handle else [])

        def attempt(_n, bkey=bkey, revision=revision):
            recs = store.get_many([bkey, *hkeys])
            stored = load_block(recs.get(bkey))
            if stored is None or stored.revision != revision:
                return Plan(result=False)
            holder = holder_of(stored.block.affinity)
            ops = delete_block_ops(store, stored, store.get(keys.holder_key(holder, net)) if holder else None)
            held = len(stored.block.allocated_ordinals())
            if handle:
                ops += handle_ops(recs, {handle: {str(net): -held}})
            return Plan(ops, True, lambda rev: svc.cache.committed(ops, rev), lambda: svc.cache.forget(ops))

        if run_cas(store, attempt, f"give back block {net}"):
            done.add(net)
    return done


def address_order(ip) -> tuple:
    """Sort key of addresses of both families (ipaddress refuses to compare IPv4 with IPv6): IPv4 first."""
    return ip.version, int(ip)


def release_by_handle(svc, handle: str) -> list:
    """Free every address held under ``handle``; NotFoundError if the handle does not exist."""
    store, snap = svc.store, svc.snapshot()
    hkey = keys.handle_key(handle)

    def attempt(n):
        nonlocal snap
        if n:  # the commit may have lost on a topology fence: decide on the topology as it is now
            snap = svc.snapshot()
        hrec = store.get(hkey)
        if hrec is None:
            raise NotFoundError(f"resource does not exist: IPAMHandleKey(id={handle})")
        counts = handle_counts(hrec)
        nets = [ipaddress.ip_network(c) for c in counts]
        found = store.get_many([keys.block_key(n) for n in nets])
        released, ops, chunks = [], [], ChunkEdits(store)
        changed = {}
        for rec in found.values():
            stored = load_block(rec)
            was_full = not stored.block.unallocated
            out = stored.block.release(stored.block.ordinals_of_handle(handle), now=svc.clock(),
                                       keep=svc.release_memory())
            released += [stored.block.address(o) for o in out.released]
            if out.released:
                ops += _settle_block(store, snap, stored, chunks, was_full)
                changed[rec.key] = stored
        ops += chunks.ops()
        # every count of the handle goes: blocks that no longer hold it (leaks) included
        ops += handle_ops({hkey: hrec}, {handle: {c: -n for c, n in counts.items()}})
        return _plan(svc, _once(ops), sorted(released, key=address_order), changed)

    return run_cas(store, attempt, f"release handle {handle}")


def ips_by_handle(svc, handle: str) -> list:
    store = svc.store
    hrec = store.get(keys.handle_key(handle))
    if hrec is None:
        raise NotFoundError(f"resource does not exist: IPAMHandleKey(id={handle})")
    found = store.get_many([keys.block_key(ipaddress.ip_network(c)) for c in handle_counts(hrec)])
    out = []
    for rec in found.values():
        block = load_block(rec).block
        out += [block.address(o) for o in block.ordinals_of_handle(handle)]
    return sorted(out, key=address_order)


def holdings(svc, handles: list) -> dict:
    """handle -> (interfaces it holds, with their block's prefix; the attributes of its first one) for
    each of ``handles`` that exists: one read of the handle records, one of their blocks."""
    store = svc.store
    hrecs = store.get_many([keys.handle_key(h) for h in handles])
    if not hrecs:
        return {}
    cidrs = {c for rec in hrecs.values() for c in handle_counts(rec)}
    blocks = [load_block(rec).block for rec in store.get_many(
        [keys.block_key(ipaddress.ip_network(c)) for c in sorted(cidrs)]).values()]
    out = {}
    for handle in handles:
        rec = hrecs.get(keys.handle_key(handle))
        if rec is None:
            continue
        on_handle = {handle: leanjson.loads(rec.value).get("secondary") or {}}
        held = [(b, o) for b in blocks for o in b.ordinals_of_handle(handle)]
        attrs = held[0][0].attrs_of(held[0][1], on_handle) if held else on_handle[handle]
        out[handle] = (sorted((b.interface(o) for b, o in held), key=address_order), attrs)
    return out


# -- affinities ------------------------------------------------------------------

def _block_nets(snap, cidr_text: str):
    from topoipam.core.pools import pool_containing  # with the topology's first read (service.py)

    try:
        cidr = ipaddress.ip_network(cidr_text, strict=False)
    except ValueError:
        raise ValidationError(f"invalid CIDR {cidr_text!r}") from None
    pool = pool_containing(snap.enabled_pools, cidr)
    if pool is None:
        raise ValidationError(f"The requested CIDR ({cidr}) is not within any configured pools.")
    if cidr.prefixlen > pool.spec.block_size:
        raise ValidationError(f"The requested CIDR ({cidr}) is smaller than the minimum.")
    return pool, cidr.subnets(new_prefix=pool.spec.block_size)


def claim_affinity(svc, cidr_text: str, node: str):
    """Claim every block of ``cidr`` for ``node`` (for its domain in a pool with an affinity label):
    returns (claimed, held by another holder) networks."""
    snap, store = svc.snapshot(), svc.store
    registered = snap.require_node(node)
    claimed, failed = [], []
    pool, nets = _block_nets(snap, cidr_text)
    holder = holder_for(node, registered.labels, pool)
    if holder is None:
        raise ValidationError(f"node {node} does not carry the affinity label of pool {pool.name}")
    for net in nets:
        bkey, akey = keys.block_key(net), keys.holder_key(holder, net)

        def attempt(n, net=net, bkey=bkey, akey=akey):
            nonlocal pool
            recs = store.get_many([bkey, akey, *([pool_key(pool)] if n else [])])
            if n:  # a lost race: no claim lands once a pool delete has disabled the pool
                pool = pool_now(pool, recs.get(pool_key(pool)))
                if pool is None:
                    raise ValidationError(f"The requested CIDR ({cidr_text}) is not within any configured pools.")
            fence = pool_check(pool)
            stored = load_block(recs.get(bkey))
            if stored is None:
                block = Block.new(net, holder.affinity, svc.claim_time(), svc.initial_sequence())
                ops = [Create(bkey, block.to_json()), chunk_bit_op(store, net, True), *fence]
                if akey not in recs:
                    ops.insert(0, Create(akey, AFFINITY_VALUE))
                return Plan(ops, True)
            if stored.block.affinity != holder.affinity:
                return Plan(result=False)
            return Plan([] if akey in recs else [Create(akey, AFFINITY_VALUE), *fence], True)

        (claimed if run_cas(store, attempt, f"claim block {net}") else failed).append(net)
    return claimed, failed


def release_affinity(svc, net, holder: Holder | str, must_be_empty: bool = False) -> bool:
    """Release ``holder``'s affinity (a node name: its host's) to block ``net``: an empty block is deleted,
    a non-empty one keeps its allocations without affinity (unless ``must_be_empty``). False if the block
    is not ``holder``'s."""
    store = svc.store
    holder = host_holder(holder) if isinstance(holder, str) else holder
    bkey, akey = keys.block_key(net), keys.holder_key(holder, net)

    def attempt(_n):
        recs = store.get_many([bkey, akey])
        stored = load_block(recs.get(bkey))
        if stored is None or stored.block.affinity != holder.affinity:
            return Plan([Delete(akey, recs[akey].revision)], stored is None) if akey in recs else Plan(result=False)
        if must_be_empty and not stored.block.is_empty():
            return Plan(result=False)
        ops = release_affinity_ops(store, stored, recs.get(akey))
        return Plan(ops, True, lambda rev: svc.cache.committed(ops, rev), lambda: svc.cache.forget(ops))

    return bool(run_cas(store, attempt, f"release affinity of block {net}"))


def release_host_affinities(svc, node: str, must_be_empty: bool = False) -> list:
    """Release all of ``node``'s affinities (both families); returns the blocks released."""
    return _release_holder(svc, host_holder(node), must_be_empty)


def _release_holder(svc, holder: Holder, must_be_empty: bool) -> list:
    done = []
    for version in (4, 6):
        for net in list_holder_nets(svc.store, holder, version):
            if release_affinity(svc, net, holder, must_be_empty):
                done.append(net)
    return done


def release_orphan_domains(svc, leaving: str | None = None) -> list:
    """Release the empty blocks of every domain (core.affinity) no registered node (other than
    ``leaving``, a node being decommissioned) carries any more; blocks still holding addresses stay
    (drift and ipam check show them). Returns the blocks released."""
    snap, done, seen = svc.snapshot(), [], set()
    for pool in snap.pools:
        if affinity_label(pool) is None:
            continue
        for stored in scan_pool_blocks(svc.store, pool):
            holder = holder_of(stored.block.affinity)
            if holder is None or not holder.is_domain or holder in seen or snap.carries(holder, leaving):
                continue
            seen.add(holder)
            done += _release_holder(svc, holder, must_be_empty=True)
    return done


def release_pool_affinities(svc, pool) -> list:
    """Reference 1.3 step 2: every affine block of the pool loses its affinity (empty ones are deleted)."""
    done = []
    for stored in scan_pool_blocks(svc.store, pool):
        holder = holder_of(stored.block.affinity)
        if holder is not None and release_affinity(svc, stored.block.cidr, holder):
            done.append(stored.block.cidr)
    return done

