"""Bordered tables as calicoctl's ``ipam`` commands print them (olekukonko/tablewriter v0.0.5 defaults).

    +----------+----------------+-----------+
    | GROUPING |      CIDR      | IPS TOTAL |
    +----------+----------------+-----------+
    | IP Pool  | 192.168.0.0/24 |       256 |
    +----------+----------------+-----------+

The defaults reproduced: ``+``/``-``/``|`` borders, one space of padding each
side, headers upper-cased (``_`` becomes a space) and centred (odd gaps put the
extra space on the right), body cells right-aligned when the whole cell is a
decimal number (``64``, ``-1.5``, ``1,024``) and left-aligned otherwise (so
``5 (8%)`` and ``1.2089e+24`` sit left), and cells wider than 30 characters
wrapped at spaces with tablewriter's minimum-raggedness word wrap (a single
word longer than that is never cut).
"""

from __future__ import annotations

import re
from typing import Sequence

MAX_CELL_WIDTH = 30  # tablewriter's MAX_ROW_WIDTH
_DECIMAL = re.compile(r"^-?(?:\d{1,3}(?:,\d{3})*|\d+)(?:\.\d+)?$")
_PENALTY = 100000  # tablewriter's defaultPenalty for over-long lines


def _wrap_words(words: list[str], limit: int) -> list[list[str]]:
    """tablewriter's WrapWords: dynamic programming minimising the squared slack of each line."""
    n = len(words)
    length = [[0] * n for _ in range(n)]
    for i in range(n):
        length[i][i] = len(words[i])
        for j in range(i + 1, n):
            length[i][j] = length[i][j - 1] + 1 + len(words[j])
    nbrk, cost = [0] * n, [2**31 - 1] * n
    for i in range(n - 1, -1, -1):
        if length[i][n - 1] <= limit:
            cost[i], nbrk[i] = 0, n
            continue
        for j in range(i + 1, n):
            slack = limit - length[i][j - 1]
            c = slack * slack + cost[j] + (_PENALTY if length[i][j - 1] > limit else 0)
            if c < cost[i]:
                cost[i], nbrk[i] = c, j
    lines, i = [], 0
    while i < n:
        lines.append(words[i:nbrk[i]])
        i = nbrk[i]
    return lines


def _cell_lines(text: str) -> tuple[list[str], int]:
    """Lines of one cell and its width, as tablewriter's parseDimension computes them (auto-wrap on)."""
    paragraphs = text.split("\n")
    width = min(max(len(p) for p in paragraphs), MAX_CELL_WIDTH)
    new_width, lines = width, []
    for i, para in enumerate(paragraphs):
        words = para.split(" ")
        limit = max([width] + [len(w) for w in words])
        wrapped = [" ".join(line) for line in _wrap_words(words, limit)]
        new_width = max([new_width] + [len(line) for line in wrapped])
        if i:
            lines.append(" ")
        lines.extend(wrapped)
    return lines, new_width


def _centre(text: str, width: int) -> str:
    gap = width - len(text)
    if gap <= 0:
        return text
    left = gap // 2
    return " " * left + text + " " * (gap - left)


def _title(text: str) -> str:
    return text.replace("_", " ").strip().upper() or " "


def render(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The whole table, ending with a newline."""
    widths = [0] * len(headers)
    head_cells = []
    for i, h in enumerate(headers):
        lines, w = _cell_lines(h)
        head_cells.append(lines)
        widths[i] = max(widths[i], w)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            lines, w = _cell_lines(str(cell))
            cells.append(lines)
            widths[i] = max(widths[i], w)
        body.append(cells)
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+\n"
    out = [rule]
    for x in range(max(len(c) for c in head_cells)):
        cells = [_centre(_title(c[x] if x < len(c) else ""), widths[i]) for i, c in enumerate(head_cells)]
        out.append("|" + "|".join(f" {c} " for c in cells) + "|\n")
    out.append(rule)
    for cells in body:
        height = max(len(c) for c in cells)
        for x in range(height):
            parts = []
            for i, c in enumerate(cells):
                text = c[x] if x < len(c) else "  "
                parts.append(text.rjust(widths[i]) if _DECIMAL.match(text.strip()) else text.ljust(widths[i]))
            out.append("|" + "|".join(f" {p} " for p in parts) + "|\n")
    out.append(rule)
    return "".join(out)
