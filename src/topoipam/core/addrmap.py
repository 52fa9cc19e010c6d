"""The address-space map as a picture: layout and SVG text, from values (no I/O).

Each pool is a grid of its blocks in address order (the pool's whole CIDR cut
into blockSize blocks, row by row), unclaimed blocks drawn empty, each claimed
block filled with the colour of its holder's domain (a node label's value, or
the node itself) and shaded by how full it is; a dot marks a block lending
addresses to other nodes (borrowed), hatching marks reserved addresses; each
cell's ``<title>`` (hover, in SVG and HTML alike) gives CIDR, holder and use.

A pool of more than ``MAX_CELLS`` blocks (a /8 of /26 blocks has 262,144) is
drawn scaled down: each cell then stands for a power-of-two run of consecutive
blocks, coloured by the domain holding most of its claimed blocks and shaded by
the run's use; its title counts the claimed blocks and names the holders. So
the file stays at most ``MAX_CELLS`` cells per pool whatever the pool's size.
Every cell carries ``data-blocks`` (claimed blocks it stands for), so what is
drawn can be counted against the datastore.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from html import escape

from topoipam.structs import dataclass, field

MAX_CELLS = 4096  # cells per pool grid; beyond it a cell stands for 2**k consecutive blocks
NO_HOLDER = "<no affinity>"
EMPTY_FILL, EMPTY_STROKE = "#f3f4f6", "#d1d5db"
LEGEND_MAX = 48  # legend entries; the rest are summed in one line


@dataclass
class MapBlock:
    cidr: object  # ipaddress network of the block
    holder: str | None  # affine node, or domain such as rack=0 (core.affinity Holder.display); None without affinity
    domain: str  # what colours it: the holder's label value, or the holder
    size: int
    in_use: int
    borrowed: int = 0  # addresses in it allocated to a node other than its holder
    reserved: int = 0  # addresses in it an IPReservation covers


@dataclass
class MapPool:
    name: str
    cidr: object  # ipaddress network
    block_size: int
    blocks: list[MapBlock] = field(default_factory=list)
    reserved: Sequence = ()  # reserved networks overlapping the pool (marks unclaimed cells too)
    disabled: bool = False


@dataclass
class Cell:
    index: int  # position in the grid
    first: int  # first block index it stands for
    count: int  # blocks it stands for
    blocks: list[MapBlock]
    reserved: bool


def cells_of(pool: MapPool) -> tuple[int, list[Cell]]:
    """(blocks per cell, the cells in order): one cell per block up to MAX_CELLS, else runs of blocks."""
    host_bits = pool.cidr.max_prefixlen - pool.block_size
    total = 1 << max(pool.block_size - pool.cidr.prefixlen, 0)
    per_cell = 1 << max(math.ceil(math.log2(total / MAX_CELLS)), 0) if total > MAX_CELLS else 1
    base = int(pool.cidr.network_address)
    by_cell: dict[int, list[MapBlock]] = {}
    for b in pool.blocks:
        index = ((int(b.cidr.network_address) - base) >> host_bits) // per_cell
        by_cell.setdefault(index, []).append(b)
    ranges = _reserved_cells(pool, base, host_bits, per_cell)
    n_cells = -(-total // per_cell)
    return per_cell, [Cell(i, i * per_cell, per_cell, by_cell.get(i, []), i in ranges) for i in range(n_cells)]


def _reserved_cells(pool: MapPool, base: int, host_bits: int, per_cell: int) -> set[int]:
    out: set[int] = set()
    last = int(pool.cidr.broadcast_address)
    for r in pool.reserved:
        lo, hi = max(int(r.network_address), base), min(int(r.broadcast_address), last)
        if lo <= hi:
            out.update(range(((lo - base) >> host_bits) // per_cell, ((hi - base) >> host_bits) // per_cell + 1))
    return out


def palette(domains: Sequence[str]) -> dict[str, float]:
    """Domain -> hue, spread by the golden angle so that neighbours in the legend differ."""
    return {d: (210 + i * 137.508) % 360 for i, d in enumerate(domains)}


def fill(hue: float | None, used: float) -> str:
    """Darker the fuller (square root, so that a block a few percent used already differs from an
    empty one); no affinity is grey."""
    light = 88 - 52 * math.sqrt(min(max(used, 0.0), 1.0))
    if hue is None:
        return f"hsl(0,0%,{light:.0f}%)"
    return f"hsl({hue:.0f},70%,{light:.0f}%)"


@dataclass
class Layout:
    columns: int
    cell: int  # pixels per cell side
    gap: int = 1


def grid(n_cells: int) -> Layout:
    """A square-ish grid: 1,024 cells -> 32 x 32 of 18 px; 4,096 -> 64 x 64 of 10 px."""
    columns = 1 << math.ceil(math.log2(math.sqrt(max(n_cells, 1))))
    cell = 18 if columns <= 32 else (10 if columns <= 64 else 6)
    return Layout(columns, cell)


def _describe(cell: Cell, pool: MapPool, per_cell: int, label: str) -> tuple[str, str | None, float]:
    """(title text, dominant domain or None, fraction used) of one cell."""
    size = 1 << (pool.cidr.max_prefixlen - pool.block_size)
    first = pool.cidr.network_address + cell.first * size
    if per_cell == 1:
        cidr = f"{first}/{pool.block_size}"
    else:
        cidr = f"{first}/{pool.block_size - int(math.log2(per_cell))} ({per_cell} blocks)"
    if not cell.blocks:
        return f"{cidr}: unclaimed" + (", has reserved addresses" if cell.reserved else ""), None, 0.0
    in_use = sum(b.in_use for b in cell.blocks)
    capacity = sum(b.size for b in cell.blocks) if per_cell == 1 else per_cell * size
    holders = Counter(b.holder or NO_HOLDER for b in cell.blocks)
    domains = Counter(b.domain for b in cell.blocks)
    top = domains.most_common(1)[0][0]
    who = ", ".join(f"{h}" + (f" x{n}" if n > 1 else "") for h, n in holders.most_common(5))
    if len(holders) > 5:
        who += f", and {len(holders) - 5} more"
    lines = [cidr, f"holder: {who}"]
    if label and per_cell == 1:
        lines.append(f"{label}: {top}")
    if per_cell > 1:
        lines.append(f"claimed blocks: {len(cell.blocks)} of {per_cell}")
    lines.append(f"in use: {in_use} of {capacity} ({100 * in_use / capacity:.0f}%)")
    borrowed, reserved = sum(b.borrowed for b in cell.blocks), sum(b.reserved for b in cell.blocks)
    if borrowed:
        lines.append(f"borrowed by other nodes: {borrowed}")
    if reserved or cell.reserved:
        lines.append(f"reserved: {reserved}" if reserved else "has reserved addresses")
    return "\n".join(lines), top, in_use / capacity


def _cell_svg(cell: Cell, x: int, y: int, lay: Layout, pool: MapPool, per_cell: int, hues, label: str) -> str:
    title, domain, used = _describe(cell, pool, per_cell, label)
    s = lay.cell
    if domain is None:
        colour, stroke = EMPTY_FILL, EMPTY_STROKE
    else:
        colour, stroke = fill(None if domain == NO_HOLDER else hues.get(domain), used), "#6b7280"
    parts = [f'<g class="cell" data-blocks="{len(cell.blocks)}"><title>{escape(title)}</title>'
             f'<rect x="{x}" y="{y}" width="{s}" height="{s}" fill="{colour}" stroke="{stroke}" stroke-width="0.5"/>']
    if cell.reserved:
        parts.append(f'<rect x="{x}" y="{y}" width="{s}" height="{s}" fill="url(#reserved)"/>')
    if any(b.borrowed for b in cell.blocks):
        parts.append(f'<circle cx="{x + s * 0.75:.1f}" cy="{y + s * 0.25:.1f}" r="{max(s / 6, 1.5):.1f}" '
                     'fill="#111827"/>')
    parts.append("</g>")
    return "".join(parts)


def _pool_svg(pool: MapPool, top: int, hues, label: str) -> tuple[list[str], int, int]:
    """SVG elements of one pool's heading and grid, its height and width."""
    per_cell, cells = cells_of(pool)
    lay = grid(len(cells))
    claimed = len(pool.blocks)
    total = 1 << max(pool.block_size - pool.cidr.prefixlen, 0)
    scale = f"; one cell = {per_cell} blocks" if per_cell > 1 else ""
    state = " (disabled)" if pool.disabled else ""
    head = (f"{pool.name}{state}: {pool.cidr}, /{pool.block_size} blocks, {claimed} of {total} claimed{scale}")
    out = [f'<text x="0" y="{top + 14}" class="pool">{escape(head)}</text>',
           f'<g class="pool-grid" data-pool="{escape(pool.name)}" data-claimed="{claimed}">']
    step = lay.cell + lay.gap
    for cell in cells:
        row, col = divmod(cell.index, lay.columns)
        out.append(_cell_svg(cell, col * step, top + 24 + row * step, lay, pool, per_cell, hues, label))
    out.append("</g>")
    rows = -(-len(cells) // lay.columns)
    return out, 24 + rows * step + 16, lay.columns * step


def _legend_svg(pools: Sequence[MapPool], hues, label: str, top: int) -> tuple[list[str], int]:
    counts = Counter(b.domain for p in pools for b in p.blocks)
    what = label or "node"
    out = [f'<text x="0" y="{top + 14}" class="pool">Legend: colour = {escape(what)} holding the block; darker = '
           'fuller</text>']
    y = top + 24
    entries = [d for d, _ in counts.most_common()]
    for i, d in enumerate(entries[:LEGEND_MAX]):
        x, yy = (i % 4) * 240, y + (i // 4) * 18
        colour = fill(None if d == NO_HOLDER else hues.get(d), 0.5)
        name = f"{label}={d}" if label and d not in (NO_HOLDER, "<none>") else d
        out.append(f'<rect x="{x}" y="{yy}" width="14" height="14" fill="{colour}" stroke="#6b7280"/>'
                   f'<text x="{x + 20}" y="{yy + 12}">{escape(name)} ({counts[d]} blocks)</text>')
    y += -(-min(len(entries), LEGEND_MAX) // 4) * 18
    if len(entries) > LEGEND_MAX:
        rest = sum(counts[d] for d in entries[LEGEND_MAX:])
        out.append(f'<text x="0" y="{y + 12}">and {len(entries) - LEGEND_MAX} more ({rest} blocks)</text>')
        y += 18
    marks = [(f'<rect x="0" y="{y}" width="14" height="14" fill="{EMPTY_FILL}" stroke="{EMPTY_STROKE}"/>', "unclaimed"),
             (f'<rect x="0" y="{y}" width="14" height="14" fill="{fill(None, 0.5)}" stroke="#6b7280"/>', NO_HOLDER),
             (f'<rect x="0" y="{y}" width="14" height="14" fill="#fff" stroke="#6b7280"/><rect x="0" y="{y}" '
              'width="14" height="14" fill="url(#reserved)"/>', "reserved addresses (IPReservation)"),
             (f'<circle cx="7" cy="{y + 7}" r="3" fill="#111827"/>', "borrowed: addresses used by another node")]
    for i, (shape, text) in enumerate(marks):
        dx, dy = (i % 2) * 320, (i // 2) * 18
        out.append(f'<g transform="translate({dx},{dy})">{shape}<text x="20" y="{y + 12}">{escape(text)}</text></g>')
    y += 36
    for i, used in enumerate((0.0, 0.25, 0.5, 0.75, 1.0)):
        out.append(f'<rect x="{i * 16}" y="{y}" width="14" height="14" fill="{fill(210, used)}" stroke="#6b7280"/>')
    out.append(f'<text x="{5 * 16 + 6}" y="{y + 12}">addresses in use: 0%, 25%, 50%, 75%, 100% of the block</text>')
    return out, y + 22 - top


def render_svg(pools: Sequence[MapPool], *, label: str = "", title: str = "topoipam address map") -> str:
    """The whole map as one standalone SVG document (no external resource)."""
    domains = sorted({b.domain for p in pools for b in p.blocks if b.domain != NO_HOLDER})
    hues = palette(domains)
    body, top, width = [], 28, 960
    for p in pools:
        parts, height, w = _pool_svg(p, top, hues, label)
        body += parts
        top, width = top + height, max(width, w)
    if not pools:
        body.append(f'<text x="0" y="{top + 14}">There is no pool.</text>')
        top += 30
    legend, height = _legend_svg(pools, hues, label, top)
    body += legend
    total = top + height + 8
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + 16}" height="{total}" '
            f'viewBox="-8 0 {width + 16} {total}" font-family="sans-serif" font-size="12">'
            f'<title>{escape(title)}</title>'
            '<defs><pattern id="reserved" width="4" height="4" patternUnits="userSpaceOnUse" '
            'patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="4" stroke="#111827" '
            'stroke-width="1.5"/></pattern><style>.pool{font-weight:bold;font-size:13px}'
            '.cell:hover rect{stroke:#000;stroke-width:1.5}</style></defs>'
            f'<text x="0" y="16" class="pool" font-size="15">{escape(title)}</text>')
    return head + "".join(body) + "</svg>\n"


def render_html(pools: Sequence[MapPool], *, label: str = "", title: str = "topoipam address map") -> str:
    """The SVG inline in a minimal HTML page (still no external resource)."""
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" + escape(title) + "</title>"
            "<style>body{margin:12px;font-family:sans-serif;background:#fff}</style></head><body>\n"
            + render_svg(pools, label=label, title=title) + "</body></html>\n")
