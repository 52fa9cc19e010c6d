"""Deterministic per-host block order with wrap-around.

Calico walks a pool's blocks starting at a host-dependent index (its RNG is
seeded with the FNV-1 32-bit hash of the host name) and wraps around, visiting
each block exactly once. topoipam keeps those properties (same host -> same
start; each block once; wrap-around) with its own start derivation: FNV-1 of
the host name stretched by splitmix64 to as many bits as the pool needs,
reduced modulo the number of blocks. Go's math/rand is not ported, so the
exact start differs from Calico's (upstream treats it as implementation-defined).
"""

from __future__ import annotations

import ipaddress

FNV32_OFFSET = 0x811C9DC5
FNV32_PRIME = 0x01000193
_MASK64 = (1 << 64) - 1


def fnv1_32(text: str) -> int:
    """FNV-1 (multiply, then xor), 32 bits, over the UTF-8 bytes (Go's hash/fnv New32)."""
    h = FNV32_OFFSET
    for byte in text.encode():
        h = (h * FNV32_PRIME) & 0xFFFFFFFF
        h ^= byte
    return h


def _splitmix64(state: int) -> tuple[int, int]:
    state = (state + 0x9E3779B97F4A7C15) & _MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return state, z ^ (z >> 31)


def start_index(host: str, num_blocks: int) -> int:
    """The host's first block index in a pool of ``num_blocks`` blocks (0 <= start < num_blocks)."""
    if num_blocks <= 1:
        return 0
    state, value, bits = fnv1_32(host), 0, 0
    while bits < num_blocks.bit_length() + 64:  # extra bits make the modulo bias negligible
        state, word = _splitmix64(state)
        value = (value << 64) | word
        bits += 64
    return value % num_blocks


def num_blocks(pool: ipaddress.IPv4Network | ipaddress.IPv6Network, block_size: int) -> int:
    return 1 << (block_size - pool.prefixlen) if block_size >= pool.prefixlen else 1


def host_order(host: str, count: int) -> tuple[range, range]:
    """The host's order over a pool's ``count`` blocks, as the two index ranges it walks: from its
    start to the end, then wrapping around to the start (each block once). The one definition of
    the order: claiming a new block and scanning a pool's blocks both walk it."""
    start = start_index(host, count)
    return range(start, count), range(0, start)
