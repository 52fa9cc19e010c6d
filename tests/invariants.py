"""The IPAM invariants (DESIGN.md) as one executable check, run at the end of every stress test.

``check_invariants(store, acknowledged=(), sqlite_path=None) -> list[str]`` reads the raw records
(every block, affinity, handle and summary chunk; not through the service's own check, so a bug
there cannot hide one here) and returns one sentence per violation; ``assert_invariants`` raises
with all of them. What is checked:

1. no address held twice: blocks do not overlap, and inside a block every ordinal is either
   allocated (to an attribute entry that exists) or free, exactly once;
2. handles and blocks agree: a handle record's ``{block: count}`` is exactly what the blocks hold
   under that handle, and every handle a block names has a record (one commit writes both);
3. atomic claims: every affinity record has its block, affine to that node, and every affine
   block has its affinity record; the claimed-block summary agrees (the service's
   ``summary-mismatch`` finding);
4. acknowledged means durable: every ``(ip, handle)`` a caller was given is allocated under that
   handle (``acknowledged``, e.g. the lines workers printed before they were killed);
5. for SQLite, ``PRAGMA integrity_check`` says ``ok``.

``store_dump(store)`` / ``assert_unchanged(before, store)`` are the "rejected input changed nothing"
check for any backend (every key, value and revision); ``conftest.sqlite_dump`` is the byte-level one
for SQLite (it includes the revision counter). Leaks (allocations nobody was told of) are not
violations: ``unacknowledged(store, acknowledged)`` lists them, for ``ipam check`` / gc to find.
"""

from __future__ import annotations

import ipaddress
import json
import sqlite3
from collections import Counter
from collections.abc import Iterable

from topoipam.core.block import Block, affinity_node
from topoipam.ipam import keys

IPAM_ROOT = keys.ROOT


def _blocks(store) -> tuple[dict, list[str]]:
    """{block network: Block} of every stored block, and the problems of records that do not decode."""
    blocks, problems = {}, []
    for version in (4, 6):
        for rec in store.list(keys.block_prefix(version)):
            try:
                block = Block.from_json(rec.value)
            except (ValueError, KeyError, TypeError) as exc:
                problems.append(f"block record {rec.key} does not decode: {exc}")
                continue
            if keys.block_key(block.cidr) != rec.key:
                problems.append(f"block record {rec.key} holds block {block.cidr}")
            blocks[block.cidr] = block
    return blocks, problems


def _ordinal_problems(block: Block) -> list[str]:
    """Each ordinal exactly once: allocated to an existing attribute entry, or free."""
    problems = []
    size = block.cidr.num_addresses
    if len(block.allocations) != size:
        problems.append(f"block {block.cidr}: {len(block.allocations)} allocation slots for {size} addresses")
    free = Counter(block.unallocated)
    for ordinal, count in free.items():
        if not 0 <= ordinal < size:
            problems.append(f"block {block.cidr}: free ordinal {ordinal} outside the block")
        elif count > 1:
            problems.append(f"block {block.cidr}: ordinal {ordinal} free {count} times")
    for ordinal, idx in enumerate(block.allocations):
        if idx is None and ordinal not in free:
            problems.append(f"block {block.cidr}: ordinal {ordinal} neither allocated nor free (lost)")
        elif idx is not None and ordinal in free:
            problems.append(f"block {block.cidr}: address {block.address(ordinal)} both allocated and free")
        elif idx is not None and not (type(idx) is int and 0 <= idx < len(block.attributes)):
            problems.append(f"block {block.cidr}: ordinal {ordinal} names attribute entry {idx}, which does not exist")
    return problems


def _overlaps(nets: Iterable) -> list[str]:
    problems = []
    for version in (4, 6):
        ordered = sorted((n for n in nets if n.version == version), key=lambda n: int(n.network_address))
        for a, b in zip(ordered, ordered[1:]):
            if int(a.broadcast_address) >= int(b.network_address):
                problems.append(f"blocks {a} and {b} overlap: their addresses are held twice")
    return problems


def _handle_problems(store, blocks: dict) -> list[str]:
    """Handle records against what the blocks hold (both directions)."""
    held: dict[str, Counter] = {}
    for net, block in blocks.items():
        for ordinal in block.allocated_ordinals():
            handle = block.handle_of(ordinal)
            if handle is not None:
                held.setdefault(handle, Counter())[str(net)] += 1
    problems, seen = [], set()
    for rec in store.list(keys.HANDLE_PREFIX):
        handle = rec.key[len(keys.HANDLE_PREFIX):]
        seen.add(handle)
        try:
            counts = {k: int(v) for k, v in (json.loads(rec.value).get("block") or {}).items() if int(v)}
        except (ValueError, TypeError, AttributeError) as exc:
            problems.append(f"handle record {handle} does not decode: {exc}")
            continue
        actual = dict(held.get(handle, {}))
        if counts != actual:
            problems.append(f"handle {handle}: record says {counts}, blocks hold {actual}")
    for handle in sorted(set(held) - seen):
        problems.append(f"handle {handle} holds {dict(held[handle])} in blocks but has no handle record")
    return problems


def _affinity_problems(store, blocks: dict) -> list[str]:
    problems, recorded = [], set()
    for rec in store.list(f"{IPAM_ROOT}host/"):
        node, _, rest = rec.key[len(f"{IPAM_ROOT}host/"):].partition("/")
        version = 6 if rest.startswith("ipv6/") else 4
        net = keys.parse_suffix(rest.rsplit("/", 1)[1], version)
        recorded.add((node, net))
        block = blocks.get(net)
        if block is None:
            problems.append(f"affinity of node {node} to block {net}, which does not exist")
        elif affinity_node(block.affinity) != node:
            problems.append(f"affinity of node {node} to block {net}, which is affine to {block.affinity!r}")
    for net, block in blocks.items():
        node = affinity_node(block.affinity)
        if node is not None and (node, net) not in recorded:
            problems.append(f"block {net} is affine to {node} but has no affinity record")
    return problems


def _summary_problems(store) -> list[str]:
    from topoipam.ipam import IpamService

    report = IpamService(store).check()
    return [f"{f.kind}: {f.detail}" for f in report.findings if f.kind in ("summary-mismatch", "block-inconsistent")]


def _held(blocks: dict) -> dict:
    """{address: handle} of every allocated address."""
    out = {}
    for block in blocks.values():
        for ordinal in block.allocated_ordinals():
            out[block.address(ordinal)] = block.handle_of(ordinal)
    return out


def _acknowledged_problems(blocks: dict, acknowledged: Iterable[tuple[str, str]]) -> list[str]:
    held = _held(blocks)
    problems = []
    for ip, handle in acknowledged:
        address = ipaddress.ip_interface(ip).ip
        if address not in held:
            problems.append(f"acknowledged address {address} (handle {handle}) is not allocated: lost")
        elif handle is not None and held[address] != handle:
            problems.append(f"acknowledged address {address} of handle {handle} is held by {held[address]}")
    return problems


def sqlite_integrity(path: str) -> list[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()
    return [] if rows == ["ok"] else [f"PRAGMA integrity_check: {'; '.join(rows)}"]


def check_invariants(store, acknowledged: Iterable[tuple[str, str | None]] = (), sqlite_path: str | None = None) -> list[str]:
    """Every invariant violation found, one sentence each (empty: all hold)."""
    blocks, problems = _blocks(store)
    for block in blocks.values():
        problems += _ordinal_problems(block)
    problems += _overlaps(blocks)
    problems += _handle_problems(store, blocks)
    problems += _affinity_problems(store, blocks)
    problems += _summary_problems(store)
    problems += _acknowledged_problems(blocks, acknowledged)
    if sqlite_path is not None:
        problems += sqlite_integrity(sqlite_path)
    return problems


def assert_invariants(store, acknowledged=(), sqlite_path: str | None = None) -> None:
    problems = check_invariants(store, acknowledged, sqlite_path)
    assert not problems, f"{len(problems)} invariant violation(s):\n" + "\n".join(problems[:50])


def allocated(store) -> dict:
    """{address: handle} of every allocated address (for leak accounting and readdressing checks)."""
    return _held(_blocks(store)[0])


def unacknowledged(store, acknowledged: Iterable[tuple[str, str | None]]) -> dict:
    """{address: handle} allocated but never acknowledged to a caller: leaks for check/gc to find."""
    told = {ipaddress.ip_interface(ip).ip for ip, _ in acknowledged}
    return {ip: h for ip, h in allocated(store).items() if ip not in told}


def store_dump(store) -> list[tuple[str, bytes, int]]:
    """Every record (key, value, revision) of any backend, in key order."""
    return [(r.key, r.value, r.revision) for r in store.list("")]


def assert_unchanged(before: list, store) -> None:
    after = store_dump(store)
    assert after == before, f"state changed: {len(before)} records before, {len(after)} after"


def parse_acknowledged(text: str) -> list[tuple[str, str]]:
    """``ACK <ip> <handle>`` lines a worker printed (and flushed) as it was told of each address."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "ACK":
            out.append((parts[1], parts[2]))
    return out
