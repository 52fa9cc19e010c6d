"""Online garbage collection: which allocations' holders are gone, and their fenced release.

No lock: every release is a compare-and-swap that only lands if the datastore is still as the
pass saw it, so an address re-assigned (or a handle re-used) meanwhile is never freed:

* an address is released with ``release_ips([ip], handle=h, seq=s)``: the block must still hold it
  under the same handle at the same allocation sequence number (a re-assignment gets a higher one);
* a handle is deleted with ``delete_handle_if_unchanged(handle, revision)``: any assignment to it
  since moves its revision.

What is judged gone (``judge``, the one decision, shared by ``ipam gc``, the agent's periodic pass
and the CNI GC command):

* ``attachment-gone`` (CNI GC only): a handle ``<network>.<container>`` whose (container, interface)
  the runtime no longer lists in ``cni.dev/valid-attachments``;
* ``node-gone``: an address allocated to a node (its ``node`` attribute, else its block's host
  affinity) that no longer exists; the nodes are read AFTER the blocks, so the allocation existed
  before the node was found missing (an assignment needs its node to exist, and is fenced on the
  node's key). A block affine to a domain (core.affinity: ``rack=0``) names no node: an address in
  it without a ``node`` attribute is never judged by node, not even when no node carries the domain
  any more (its node may have been relabelled out of the domain, and keeps its running addresses;
  ``ipam check`` reports such a block as ``domain-without-node``);
* ``handle-without-address``: a handle that no block holds an address of (handles are read BEFORE
  the blocks: an assignment writes its handle and block in one commit, so this order cannot show a
  live handle as empty);
* ``address-without-handle``: an address whose handle record does not exist; that order CAN show an
  assignment landing between the two reads this way, so the handle is read again just before the
  release, which is skipped if it exists.

Each only after ``grace`` seconds, counted from the holder's ``timestamp`` attribute (Go's
``time.Now().UTC().String()``, written by the CNI plugin on the node that assigned it) against this
process's wall clock (``time.time``). Clock skew between nodes shortens or lengthens the grace by the
skew, which is why the grace is minutes by default; it cannot free a live address, because the
fences above, not the clock, decide that. A holder with no timestamp is aged from when this process
first saw it in the same state (same sequence number / revision): a one-shot ``ipam gc`` sees it
for the first time, so only ``--grace 0s`` releases it; the agent keeps ``first_seen`` between its
passes, so it releases it once it has stayed unchanged for the grace.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from topoipam.core.affinity import holder_of
from topoipam.core.insights import parse_go_timestamp
from topoipam.errors import TopoipamError
from topoipam.ipam import keys
from topoipam.ipam.check import iter_blocks
from topoipam.ipam.leaks import delete_handle_if_unchanged, handle_records
from topoipam.structs import dataclass, field

KINDS = ("attachment-gone", "node-gone", "handle-without-address", "address-without-handle")
DEFAULT_GRACE = 900.0  # seconds: Calico's kube-controllers wait 15 minutes before releasing a leaked address


@dataclass(frozen=True)
class Garbage:
    """One allocation (``ip`` set) or one handle (``ip`` None) judged gone, with what fences its release."""

    kind: str
    reason: str  # why its holder is judged gone, for the log and the command's output
    handle: str | None
    ip: object = None  # ipaddress address
    seq: int | None = None  # the allocation's sequence number in its block (fence of an address release)
    revision: int | None = None  # the handle record's revision (fence of a handle delete)
    node: str | None = None
    attrs: dict = field(default_factory=dict)
    since: float | None = None  # seconds since the epoch: recorded timestamp, else first seen by this process
    since_recorded: bool = False  # True: ``since`` is the holder's own timestamp attribute

    @property
    def key(self) -> tuple:
        """Identity of the holder in this exact state (a re-assignment or re-use is another key)."""
        return self.kind, str(self.ip) if self.ip is not None else self.handle, self.seq, self.revision


@dataclass
class Verdict:
    due: list = field(default_factory=list)  # gone for longer than the grace: to release
    young: list = field(default_factory=list)  # gone, but within the grace: kept for now


@dataclass(frozen=True)
class Attachments:
    """What a CNI GC request says: the network and the runtime's valid (container, interface) pairs."""

    network: str
    valid: frozenset


def judge(handles, blocks, nodes: set[str] | None, now: float, grace: float, *,
          attachments: Attachments | None = None, first_seen: dict | None = None, damaged=()) -> Verdict:
    """The decision on already-read data: ``handles`` (``leaks.handle_records``, read first),
    ``blocks`` (``check.iter_blocks``), ``nodes`` (names, read last; None with ``attachments``).
    With ``attachments`` only that network's attachments are judged (the CNI GC command); else the
    datastore's own evidence (nodes, handles). ``first_seen`` (key -> time) ages holders without a
    timestamp; it is updated in place and pruned to what this pass saw. ``damaged``: the
    DamagedRecordErrors of the records the reads left out; a damaged block, and a handle counting
    addresses in one or whose record is damaged, are not judged at all (``ipam check`` reports them)."""
    blocks, handles, unknown = _trusted(blocks, handles, damaged)
    seen = {} if first_seen is None else first_seen
    found = list(_attachment_garbage(blocks, handles, attachments) if attachments is not None
                 else _datastore_garbage(handles, blocks, nodes, unknown))
    verdict, keep = Verdict(), set()
    for g in found:
        keep.add(g.key)
        if g.since is None:
            g = _with_since(g, seen.setdefault(g.key, now), recorded=False)
        # grace 0 releases whatever the clocks say (a timestamp from a node whose clock runs ahead)
        (verdict.due if grace <= 0 or now - g.since >= grace else verdict.young).append(g)
    for stale in set(seen) - keep:
        del seen[stale]
    return verdict


def _with_since(g: Garbage, since: float, recorded: bool) -> Garbage:
    return Garbage(g.kind, g.reason, g.handle, g.ip, g.seq, g.revision, g.node, g.attrs, since, recorded)


def _stamp(attrs: Mapping) -> float | None:
    value = attrs.get("timestamp")
    return parse_go_timestamp(value) if isinstance(value, str) else None


def _owner(attrs: Mapping, affinity: str | None) -> str | None:
    """The node an allocation is judged by: its ``node`` attribute, else its block's host (a domain
    block has none)."""
    holder = holder_of(affinity)
    return attrs.get("node") or (holder.node if holder is not None else None)


def _allocation(kind, reason, b, o, handle, attrs, node) -> Garbage:
    since = _stamp(attrs)
    return Garbage(kind, reason, handle, b.address(o), b.seq_for_allocation.get(o), None, node, attrs, since,
                   since is not None)


def _trusted(blocks, handles, damaged) -> tuple[list, list, set]:
    """(blocks, handles) without the damaged ones and handles counting on them, and the names of
    handles whose record is damaged (an address under one is not judged handle-less)."""
    blocks = list(blocks)
    bad = {d.key for d in damaged} | {s.key for s in blocks if s.block.damage()}
    unknown = {d.key[len(keys.HANDLE_PREFIX):] for d in damaged if d.key.startswith(keys.HANDLE_PREFIX)}
    blocks = [s for s in blocks if s.key not in bad]
    kept = []
    for h in handles:
        try:
            nets = [keys.block_key(ipaddress.ip_network(c)) for c in h.counts]
        except ValueError:
            nets = None
        if nets is None or bad.intersection(nets):
            unknown.add(h.handle)
        else:
            kept.append(h)
    return blocks, kept, unknown


def _datastore_garbage(handles, blocks, nodes: set[str], unknown: set[str]) -> Iterable[Garbage]:
    records = {h.handle: h for h in handles}
    on_handle = {h.handle: h.attrs for h in handles}
    holding: set[str] = set()
    for stored in blocks:
        b = stored.block
        for o in b.allocated_ordinals():
            handle, attrs = b.handle_of(o), b.attrs_of(o, on_handle)
            if handle is not None:
                holding.add(handle)
            node = _owner(attrs, b.affinity)
            if node and node not in nodes:
                yield _allocation("node-gone", f"node {node} no longer exists", b, o, handle, attrs, node)
            elif handle is not None and handle not in records and handle not in unknown:
                yield _allocation("address-without-handle", f"its handle {handle} does not exist", b, o, handle,
                                  attrs, node)
    for h in handles:
        if h.handle not in holding and h.handle not in unknown:
            since = _stamp(h.attrs)
            yield Garbage("handle-without-address", "no block holds an address of it", h.handle, None, None,
                          h.revision, h.attrs.get("node"), dict(h.attrs), since, since is not None)


def _attachment_garbage(blocks, handles, att: Attachments) -> Iterable[Garbage]:
    on_handle = {h.handle: h.attrs for h in handles}
    containers = {cid for cid, _ in att.valid}
    prefix = f"{att.network}."
    for stored in blocks:
        b = stored.block
        for o in b.allocated_ordinals():
            handle = b.handle_of(o)
            if not handle or not handle.startswith(prefix):
                continue
            attrs = b.attrs_of(o, on_handle)
            container, ifname = attrs.get("container"), attrs.get("interface")
            # A network name may contain dots: only handles the plugin wrote for this network are
            # candidates, i.e. exactly "<network>.<container>:<interface>" (cni.handler.handle_id), or
            # the form written before attachments had interfaces, "<network>.<container>".
            if not container or handle not in (f"{prefix}{container}:{ifname or ''}", prefix + container):
                continue
            if (container, ifname) in att.valid or (not ifname and container in containers):
                continue
            yield _allocation("attachment-gone", f"the runtime no longer lists attachment {container}"
                              f"{'/' + ifname if ifname else ''} of network {att.network}", b, o, handle, attrs,
                              _owner(attrs, b.affinity))


def read_and_judge(store, now: float, grace: float, *, attachments: Attachments | None = None,
                   first_seen: dict | None = None) -> Verdict:
    """One pass's reads in the order ``judge`` relies on (handles, blocks, nodes), then the decision."""
    from topoipam.resources import repo

    prefix = f"{attachments.network}." if attachments is not None else ""
    damaged: list = []
    handles = handle_records(store, prefix, damaged)
    blocks = list(iter_blocks(store, damaged))
    nodes = None if attachments is not None else {n.name for n in repo.list_nodes(store)}
    return judge(handles, blocks, nodes, now, grace, attachments=attachments, first_seen=first_seen,
                 damaged=damaged)


def release(svc, g: Garbage) -> str:
    """Release one piece of garbage, fenced; returns "released", or "skipped: <why>" when the fence
    held (the holder changed since the pass read it)."""
    store = svc.store
    if g.ip is None:
        if delete_handle_if_unchanged(store, g.handle, g.revision):
            return "released"
        return "skipped: the handle changed or is gone since it was read"
    if g.kind == "address-without-handle" and store.get(keys.handle_key(g.handle)) is not None:
        return "skipped: its handle exists now (an assignment landed while the pass read)"
    if svc.release_ips([g.ip], handle=g.handle, seq=g.seq):
        return "skipped: the address was released or re-assigned since it was read"
    return "released"


def collect(svc, now: float, grace: float, *, dry_run: bool = False, attachments: Attachments | None = None,
            first_seen: dict | None = None, on_release=None) -> tuple[Verdict, list]:
    """A whole pass: judge, then (unless ``dry_run``) release what is due, one fenced commit each.
    Returns the verdict and [(garbage, outcome)]; ``on_release(garbage, outcome)`` is called after
    each (the agent logs there). A failed release is reported as "failed: ..." and the pass goes on."""
    verdict = read_and_judge(svc.store, now, grace, attachments=attachments, first_seen=first_seen)
    done = []
    for g in verdict.due:
        if dry_run:
            outcome = "would release"
        else:
            try:
                outcome = release(svc, g)
            except TopoipamError as exc:
                outcome = f"failed: {exc}"
        done.append((g, outcome))
        if on_release is not None:
            on_release(g, outcome)
    return verdict, done


def describe(g: Garbage, now: float) -> str:
    """One line: what, who held it, since when, why judged gone (the agent's log and the command)."""
    what = f"address {g.ip}" if g.ip is not None else f"handle {g.handle}"
    who = [f"handle {g.handle}"] if g.ip is not None and g.handle else []
    who += [f"node {g.node}"] if g.node else []
    for k in ("namespace", "pod", "container"):
        if g.attrs.get(k):
            who.append(f"{k} {g.attrs[k]}")
    since = (f"since {_utc(g.since)}" if g.since_recorded else f"first seen {_utc(g.since)}") + \
        f" ({now - g.since:.0f}s ago)"
    held = f" held by {', '.join(who)}" if who else ""
    return f"{what}{held}, {since}: {g.kind}, {g.reason}"


def _utc(t: float) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def to_dict(g: Garbage, now: float, outcome: str | None = None) -> dict:
    out = {"kind": g.kind, "reason": g.reason, "handle": g.handle, "ip": str(g.ip) if g.ip is not None else None,
           "sequenceNumber": g.seq, "handleRevision": g.revision, "node": g.node, "attributes": dict(g.attrs),
           "since": _utc(g.since), "sinceRecorded": g.since_recorded, "ageSeconds": round(now - g.since, 3)}
    if outcome is not None:
        out["outcome"] = outcome
    return out
