"""Output formats of ``get``: calicoctl's tables (ps, wide) and the v3 YAML/JSON forms.

Tables follow calicoctl exactly: Go ``text/tabwriter`` with minimum width 5,
padding 3 and every cell tab-terminated, so each column is
``max(5, longest cell + 3)`` wide, every line carries trailing spaces, and one
blank line follows each table. Column sets and cell texts come from
calicoctl's ``resourcemgr/*.go`` registrations.

YAML and JSON go through ``model.codec``; PyYAML is only imported there, and
only when YAML is asked for.
"""

from __future__ import annotations

from typing import Callable, Sequence

from topoipam.errors import ValidationError

OUTPUT_FORMATS = ("ps", "wide", "yaml", "json")
MIN_WIDTH, PADDING = 5, 3
# calicoctl has no BGPConfiguration here; its default AS number is shown in parentheses.
DEFAULT_AS_NUMBER = "64512"
RESERVATION_CIDRS_MAX = 80


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _mode(value: str) -> str:
    return value or "Never"


def _asn(node) -> str:
    bgp = node.spec.bgp
    if bgp is None:
        return ""
    return bgp.as_number or f"({DEFAULT_AS_NUMBER})"


def _node_addr(node, attr: str) -> str:
    bgp = node.spec.bgp
    return getattr(bgp, attr) if bgp is not None else ""


def join_and_truncate(items: Sequence[str], separator: str, max_len: int) -> str:
    """calicoctl's ``joinAndTruncate``: join; past ``max_len`` cut to ``max_len - 3`` and add ``...``."""
    out = ""
    for i, item in enumerate(items):
        out += (separator if i else "") + item
        if max_len > 0 and len(out) > max_len:
            return out[: max_len - 3] + "..."
    return out


Column = tuple[str, Callable[[object], str]]

_POOL_COLUMNS: dict[str, Callable] = {
    "NAME": lambda p: p.metadata.name,
    "CIDR": lambda p: p.spec.cidr,
    "NAT": lambda p: _bool(p.spec.nat_outgoing),
    "IPIPMODE": lambda p: _mode(p.spec.ipip_mode),
    "VXLANMODE": lambda p: _mode(p.spec.vxlan_mode),
    "DISABLED": lambda p: _bool(p.spec.disabled),
    "DISABLEBGPEXPORT": lambda p: _bool(p.spec.disable_bgp_export),
    "SELECTOR": lambda p: p.spec.node_selector,
    "ASSIGNMENTMODE": lambda p: p.spec.assignment_mode or "Automatic",
}
_NODE_COLUMNS: dict[str, Callable] = {
    "NAME": lambda n: n.metadata.name,
    "ASN": _asn,
    "IPV4": lambda n: _node_addr(n, "ipv4_address"),
    "IPV6": lambda n: _node_addr(n, "ipv6_address"),
}
_IPAMCONFIG_COLUMNS: dict[str, Callable] = {
    "NAME": lambda c: c.metadata.name,
    "STRICTAFFINITY": lambda c: _bool(c.spec.strict_affinity),
    "AUTOALLOCATEBLOCKS": lambda c: _bool(c.spec.auto_allocate_blocks),
    "MAXBLOCKSPERHOST": lambda c: str(c.spec.max_blocks_per_host),
}
_RESERVATION_COLUMNS: dict[str, Callable] = {
    "NAME": lambda r: r.metadata.name,
    "CIDRS": lambda r: join_and_truncate(r.spec.reserved_cidrs, ",", RESERVATION_CIDRS_MAX),
}

# kind -> (cell functions, ps headings, wide headings), as calicoctl registers them (v3.32.1).
TABLES: dict[str, tuple[dict[str, Callable], tuple[str, ...], tuple[str, ...]]] = {
    "IPPool": (
        _POOL_COLUMNS,
        ("NAME", "CIDR", "SELECTOR"),
        ("NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE", "DISABLED", "DISABLEBGPEXPORT", "SELECTOR", "ASSIGNMENTMODE"),
    ),
    "Node": (_NODE_COLUMNS, ("NAME",), ("NAME", "ASN", "IPV4", "IPV6")),
    "IPAMConfiguration": (
        _IPAMCONFIG_COLUMNS,
        ("NAME", "STRICTAFFINITY", "AUTOALLOCATEBLOCKS"),
        ("NAME", "STRICTAFFINITY", "AUTOALLOCATEBLOCKS", "MAXBLOCKSPERHOST"),
    ),
    "IPReservation": (_RESERVATION_COLUMNS, ("NAME",), ("NAME", "CIDRS")),
    "Profile": ({"NAME": lambda p: p.metadata.name,
                 "LABELS": lambda p: ",".join(f"{k}={v}" for k, v in sorted(p.spec.labels_to_apply.items()))},
                ("NAME",), ("NAME", "LABELS")),
}


def tabwrite(rows: Sequence[Sequence[str]]) -> str:
    """Go tabwriter(minwidth=5, tabwidth=1, padding=3, ' ', 0) over tab-terminated cells."""
    if not rows:
        return ""
    ncols = max(len(r) for r in rows)
    widths = [MIN_WIDTH] * ncols
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell) + PADDING)
    return "".join("".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) + "\n" for row in rows)


def table(kind: str, resources: Sequence, wide: bool) -> str:
    """One calicoctl table (header and one row per resource) followed by the blank line."""
    cells, ps, wide_headings = TABLES[kind]
    headings = wide_headings if wide else ps
    rows = [list(headings)] + [[cells[h](r) for h in headings] for r in resources]
    return tabwrite(rows) + "\n"


def check_format(output: str) -> str:
    if output not in OUTPUT_FORMATS:
        raise ValidationError(f"unrecognized output format '{output}'")
    return output


def render(kind: str, resources: Sequence, output: str, *, listing: bool) -> str:
    """Everything ``get`` prints on stdout for ``resources`` of ``kind``.

    ``listing``: no names were given, so calicoctl prints one table / one
    ``<Kind>List`` object; with names it prints one table per name and, for
    YAML/JSON, the object itself (one name) or an array (several).
    """
    if output in ("ps", "wide"):
        if listing:
            return table(kind, resources, output == "wide")
        return "".join(table(kind, [r], output == "wide") for r in resources)
    from topoipam.model import codec
    from topoipam.model.storage import resource_to_dict

    if listing:
        obj: object = codec.list_to_dict(kind, resources)
    else:
        items = [resource_to_dict(r) for r in resources]
        obj = items[0] if len(items) == 1 else items

    if output == "yaml":
        return codec.dumps_yaml(obj)
    return codec.dumps_json(obj) + "\n"
