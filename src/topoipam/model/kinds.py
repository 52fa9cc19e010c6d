"""Resource kind names: calicoctl's aliases and the plural used in store keys.

Aliases follow calicoctl's resource registry (``resourcemgr/*.go``): lower
case, matched case-insensitively, and an unknown one gives calicoctl's text.
"""

from __future__ import annotations

from topoipam.errors import ValidationError

KINDS = ("IPPool", "Node", "IPAMConfiguration", "IPReservation", "Profile")

KIND_PLURAL = {
    "IPPool": "ippools",
    "Node": "nodes",
    "IPAMConfiguration": "ipamconfigurations",
    "IPReservation": "ipreservations",
    "Profile": "profiles",
}

_ALIASES = {
    "IPPool": ("ippool", "ippools", "ipp", "ipps", "pool", "pools"),
    "Node": ("node", "nodes", "no", "nos"),
    "IPAMConfiguration": ("ipamconfiguration", "ipamconfigurations", "ipamconfig", "ipamconfigs"),
    "IPReservation": ("ipreservation", "ipreservations", "reservation", "reservations"),
    "Profile": ("profile", "profiles", "pro", "pros"),
}

_BY_ALIAS = {alias: kind for kind, aliases in _ALIASES.items() for alias in aliases}


def canonical_kind(text: str) -> str:
    """``canonical_kind("Pools") == "IPPool"``; an unknown name raises ValidationError."""
    kind = _BY_ALIAS.get(text.strip().lower())
    if kind is None:
        import difflib

        close = difflib.get_close_matches(text.strip().lower(), list(_BY_ALIAS), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValidationError(f"resource type '{text}' is not supported{hint}")
    return kind
