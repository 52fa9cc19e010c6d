"""JSON through CPython's C codec, without importing the ``json`` package.

Why: ``topoipam-cni`` is exec'd once per pod, and ``import json`` costs several
milliseconds of every exec: ``json.decoder``, ``json.scanner`` and
``json.encoder`` compile regular expressions at import, which loads ``re`` and
``enum``. The work itself is done by ``_json``'s C scanner and encoder either
way (``json`` uses them when they exist), so this module drives them directly.

Same results as ``json``: ``loads`` returns what ``json.loads`` returns, and
whatever the fast path does not accept as a whole document (bad JSON, extra
data, a byte-order mark, bytes that are not UTF-8) is handed to ``json.loads``
itself, so errors are ``json.JSONDecodeError`` with json's own message and
position. ``dumps`` writes what ``json.dumps`` writes for the options used
here (``separators``, ``ensure_ascii``, ``indent``). Where ``_json`` is missing
(another Python implementation) both are ``json``'s.
"""

try:
    import _json
except ImportError:  # pragma: no cover - CPython always has it
    _json = None

_WHITESPACE = " \t\n\r"
_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


class _ScanContext:
    """The attributes ``_json.make_scanner`` reads: json.JSONDecoder's defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__


_scan_once = _json.make_scanner(_ScanContext()) if _json else None
# ``json.dumps(text)`` of a str, without a Python frame: what json's encoder calls itself.
quote_ascii = _json.encode_basestring_ascii if _json else None


def loads(data):
    """``json.loads(data)`` for ``str``, ``bytes`` or ``bytearray``."""
    text = data
    if isinstance(data, (bytes, bytearray)):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None  # json.loads detects UTF-16/32, or names the error
    if _scan_once is None or not isinstance(text, str) or text.startswith("\ufeff"):
        return _json_module().loads(data)
    start, end = _skip_whitespace(text, 0), len(text)
    try:
        value, stop = _scan_once(text, start)
    except (StopIteration, ValueError, SystemError):  # json.loads says what and where
        # (SystemError: CPython 3.11's scanner reports an error through json.decoder's exception
        # class, and fails that way when json.decoder has not been imported.)
        return _json_module().loads(data)
    if _skip_whitespace(text, stop) != end:
        return _json_module().loads(data)  # "Extra data"
    return value


def dumps(value, *, separators=None, ensure_ascii=True, indent=None) -> str:
    """``json.dumps(value, separators=..., ensure_ascii=..., indent=...)``."""
    if _json is None:  # pragma: no cover
        return _json_module().dumps(value, separators=separators, ensure_ascii=ensure_ascii, indent=indent)
    if indent is not None:
        try:
            return _indented(value, _encoder(",", ": ", ensure_ascii), " " * indent, "\n")
        except _NotAStringKey:  # json's own rules for such keys
            return _json_module().dumps(value, ensure_ascii=ensure_ascii, indent=indent)
    item_sep, key_sep = separators or (", ", ": ")
    return _encoder(item_sep, key_sep, ensure_ascii)(value)


def compact_encoder(*, check_circular: bool = True):
    """``json.JSONEncoder(separators=(",", ":"), check_circular=...).encode``, made once and reused."""
    if _json is None:  # pragma: no cover
        return _json_module().JSONEncoder(separators=(",", ":"), check_circular=check_circular).encode
    return _encoder(",", ":", True, check_circular)


def _encoder(item_sep: str, key_sep: str, ensure_ascii: bool, check_circular: bool = True):
    quote = _json.encode_basestring_ascii if ensure_ascii else _json.encode_basestring
    encode = _json.make_encoder({} if check_circular else None, _not_serializable, quote, None, key_sep, item_sep,
                                False, False, True)
    return lambda value: "".join(encode(value, 0))


def _indented(value, encode, step: str, newline: str) -> str:
    """What ``json.dumps(indent=...)`` writes (the C encoder has no indentation): containers one item
    per line, everything else as the compact encoder writes it."""
    inner = newline + step
    if isinstance(value, dict) and value:
        if not all(isinstance(key, str) for key in value):
            raise _NotAStringKey
        items = (encode(k) + ": " + _indented(v, encode, step, inner) for k, v in value.items())
        return "{" + inner + ("," + inner).join(items) + newline + "}"
    if isinstance(value, (list, tuple)) and value:
        items = (_indented(v, encode, step, inner) for v in value)
        return "[" + inner + ("," + inner).join(items) + newline + "]"
    return encode(value)


class _NotAStringKey(Exception):
    pass


def _skip_whitespace(text: str, index: int) -> int:
    end = len(text)
    while index < end and text[index] in _WHITESPACE:
        index += 1
    return index


def _not_serializable(value):
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


def _json_module():
    import json  # only for what the fast path leaves to it: errors, unusual encodings

    return json
