"""Go-style durations (``0s``, ``90s``, ``15m``, ``1h30m``, ``500ms``) as seconds, for flags and annotations."""

from __future__ import annotations

import re

from topoipam.errors import ValidationError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds of ``text`` (a bare number is seconds); ValidationError naming the text otherwise."""
    text = str(text).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValidationError(f"invalid duration {text!r}: use e.g. 0s, 30s, 15m, 1h30m")
    return sum(float(n) * _UNITS[u] for n, u in parts)
