"""The agent wire format, written and read without the ``json`` module.

In agent mode this module, ``sys``, ``posix`` and ``_socket`` are the plugin's
whole import path: ``json`` alone pulls in ``re`` and ``enum`` (json.decoder
and json.scanner compile regular expressions at import), several milliseconds
of every pod's ADD, and even ``os`` (with ``_collections_abc``, ``posixpath``
and ``stat``) is a sixth of the exec's instructions: ``cni_environment`` reads
the CNI variables from ``posix`` as ``os.environ`` would decode them. So the request is written by hand and the agent's answer
is read by a parser of exactly the form ``encode_response`` writes. Both are
valid JSON, so the agent reads requests with ``json`` (``agent_client``).

    -> {"protocol": 1, "env": {"CNI_COMMAND": "ADD", ...}, "stdin": "<base64>"}
    <- {"code": 0, "stdout": "<base64>"}

Only ``binascii`` (built into CPython, no import cost) is used besides.
"""

import binascii  # no `from __future__`: that is one more module to import
import posix
import sys

PROTOCOL = 1
ENV_NAMES = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")

# JSON string escapes: the quote, the backslash, control characters and lone surrogates
# (os.environ carries undecodable bytes as surrogates; json.loads gives them back).
_ESCAPES = {'"': '\\"', "\\": "\\\\", **{chr(i): f"\\u{i:04x}" for i in range(32)}}
_RESPONSE_HEAD = b'{"code": '
_RESPONSE_MID = b', "stdout": "'
_RESPONSE_TAIL = b'"}'


def quote(text: str) -> str:
    """``text`` as a JSON string literal (what ``json.dumps(text, ensure_ascii=False)`` writes)."""
    out = []
    for ch in text:
        esc = _ESCAPES.get(ch)
        if esc is None and "\ud800" <= ch <= "\udfff":
            esc = f"\\u{ord(ch):04x}"
        out.append(ch if esc is None else esc)
    return '"' + "".join(out) + '"'


def cni_environment() -> dict:
    """The CNI variables (``ENV_NAMES``) of this process's environment, exactly as ``os.environ``
    gives them (the file system encoding, undecodable bytes as surrogates), without importing ``os``."""
    os = sys.modules.get("os")
    if os is not None:  # loaded already (called in-process): its environ is the current one
        return {name: os.environ[name] for name in ENV_NAMES if name in os.environ}
    encoding, raw = sys.getfilesystemencoding(), posix.environ  # the environment the process started with
    found = ((name, raw.get(name.encode())) for name in ENV_NAMES)
    return {name: value.decode(encoding, "surrogateescape") for name, value in found if value is not None}


def path_exists(path: str) -> bool:
    """``os.path.exists(path)``, without importing ``os``."""
    try:
        posix.stat(path)
    except (OSError, ValueError):
        return False
    return True


def b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode()


def encode_request(env, stdin: bytes) -> bytes:
    pairs = ", ".join(f"{quote(name)}: {quote(env[name])}" for name in ENV_NAMES if name in env)
    text = f'{{"protocol": {PROTOCOL}, "env": {{{pairs}}}, "stdin": "{b64(stdin)}"}}'
    return text.encode("utf-8", "surrogatepass")


def encode_response(code: int, stdout: bytes) -> bytes:
    return b"%s%d%s%s%s" % (_RESPONSE_HEAD, code, _RESPONSE_MID, b64(stdout).encode(), _RESPONSE_TAIL)


def decode_response(data: bytes) -> tuple[int, bytes]:
    """``(code, stdout)`` of an answer written by ``encode_response``; ValueError otherwise."""
    if not (data.startswith(_RESPONSE_HEAD) and data.endswith(_RESPONSE_TAIL)):
        raise ValueError("the answer is not an agent response object")
    code_text, sep, body = data[len(_RESPONSE_HEAD):-len(_RESPONSE_TAIL)].partition(_RESPONSE_MID)
    if not sep or not code_text.lstrip(b"-").isdigit():
        raise ValueError("response code must be an integer")
    try:
        return int(code_text), binascii.a2b_base64(body, strict_mode=True)
    except (ValueError, binascii.Error):
        raise ValueError("stdout is not valid base64") from None


def agent_socket_in(stdin: bytes):
    """``ipam.agent_socket`` read by a scan of the netconf bytes: the path (``""`` = off), None when
    the config names none, or ``...`` (Ellipsis) when the scan cannot be sure (the key written
    twice, escaped, not under ``"ipam"``, or a value that is not a plain string); the caller then
    decodes the JSON properly."""
    key = b'"agent_socket"'
    at = stdin.find(key)
    if at < 0:
        return None
    if stdin.find(key, at + 1) >= 0 or stdin.rfind(b'"ipam"', 0, at) < 0 or stdin[at - 1:at] == b"\\":
        return ...
    rest = stdin[at + len(key):].lstrip(b" \t\r\n")
    if not rest.startswith(b":"):
        return ...
    rest = rest[1:].lstrip(b" \t\r\n")
    end = rest.find(b'"', 1)
    if not rest.startswith(b'"') or end < 0 or b"\\" in rest[:end]:
        return ...
    try:
        return rest[1:end].decode()
    except UnicodeDecodeError:
        return ...
