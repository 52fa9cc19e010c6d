"""Go-style durations (``0s``, ``90s``, ``15m``, ``1h30m``, ``500ms``) as seconds, for flags and annotations.

Parsed by hand, not with ``re``: the release cooldown annotation is read on the
CNI plugin's path, where importing ``re`` (and ``enum``) costs milliseconds.
"""

from __future__ import annotations

from topoipam.errors import ValidationError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DIGITS = "0123456789"


def parse_duration(text: str) -> float:
    """Seconds of ``text`` (a bare number is seconds); ValidationError naming the text otherwise."""
    text = str(text).strip()
    number, rest = _number(text)
    if number is not None and not rest:
        return float(number)
    total, rest = 0.0, text
    while rest:
        number, rest = _number(rest)
        unit = "ms" if rest.startswith("ms") else rest[:1]
        if number is None or unit not in _UNITS:
            raise ValidationError(f"invalid duration {text!r}: use e.g. 0s, 30s, 15m, 1h30m")
        total += float(number) * _UNITS[unit]
        rest = rest[len(unit):]
    if text == "":
        raise ValidationError(f"invalid duration {text!r}: use e.g. 0s, 30s, 15m, 1h30m")
    return total


def _number(text: str) -> tuple[str | None, str]:
    """The leading ``digits[.digits]`` of ``text`` and what follows; ``None`` when it does not start so."""
    end = _digits_end(text, 0)
    if end == 0:
        return None, text
    if text[end:end + 1] == ".":
        fraction_end = _digits_end(text, end + 1)
        if fraction_end == end + 1:
            return None, text
        end = fraction_end
    return text[:end], text[end:]


def _digits_end(text: str, start: int) -> int:
    end = start
    while end < len(text) and text[end] in _DIGITS:
        end += 1
    return end
