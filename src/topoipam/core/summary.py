"""Claimed-block summaries: one bitmap per chunk of 4096 consecutive blocks.

Finding a never-claimed block must not read every block (Calico lists them
all: 1,284 blocks took 74 s in one report). Each chunk of ``CHUNK_BLOCKS``
consecutive block-sized slots of the address space (per family and block
size, independent of pools) has a bitmap: bit i set <=> the block at slot i
exists. The service updates the bitmap in the same commit that creates or
deletes a block, so it is exact; a pool's free blocks are then found from the
few chunk records that cover it (a /8 of /26 blocks is 64 chunks: one read).

Pure values and index math here; keys and I/O live in ``ipam``.
"""

from __future__ import annotations

import binascii  # not base64: that module imports re, ~8 ms of every plugin start
from topoipam import leanjson
from topoipam.structs import dataclass

CHUNK_BITS = 12
CHUNK_BLOCKS = 1 << CHUNK_BITS  # blocks per summary record


def global_block_index(address: int, max_prefixlen: int, block_size: int) -> int:
    """Slot number of the block holding ``address`` among all blocks of this size in the family."""
    return address >> (max_prefixlen - block_size)


def chunk_of(global_index: int) -> int:
    return global_index >> CHUNK_BITS


@dataclass
class Chunk:
    index: int  # chunk number: global block index >> CHUNK_BITS
    bits: int = 0  # bit i: block index*CHUNK_BLOCKS + i exists

    def is_set(self, global_index: int) -> bool:
        return bool(self.bits >> (global_index - (self.index << CHUNK_BITS)) & 1)

    def set(self, global_index: int, value: bool) -> None:
        bit = 1 << (global_index - (self.index << CHUNK_BITS))
        self.bits = (self.bits | bit) if value else (self.bits & ~bit)

    def count(self) -> int:
        return bin(self.bits).count("1")

    def free_in(self, lo: int, hi: int):
        """Unset global indices in [lo, hi] that fall in this chunk, ascending."""
        first = max(lo, self.index << CHUNK_BITS)
        last = min(hi, ((self.index + 1) << CHUNK_BITS) - 1)
        base = self.index << CHUNK_BITS
        if self.bits == (1 << CHUNK_BLOCKS) - 1:
            return
        for g in range(first, last + 1):
            if not (self.bits >> (g - base)) & 1:
                yield g

    def to_json(self) -> bytes:
        raw = self.bits.to_bytes(CHUNK_BLOCKS // 8, "little")
        return leanjson.dumps({"chunk": self.index, "bits": binascii.b2a_base64(raw, newline=False).decode()},
                          separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "Chunk":
        d = leanjson.loads(data)
        return cls(int(d["chunk"]), int.from_bytes(binascii.a2b_base64(d["bits"]), "little"))
