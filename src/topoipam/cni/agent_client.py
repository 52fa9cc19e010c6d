"""The plugin's side of the node agent's unix socket, and the wire format both sides speak.

When the network config names a socket (``"ipam": {"agent_socket": PATH}``),
or names none and the default socket ``/run/topoipam/agent.sock`` exists, the
plugin does not open a datastore: it forwards the request to the node agent
and prints exactly what the agent answers. ``"agent_socket": ""`` turns the
agent off for that network (the datastore is then used directly).

Wire format, one request per connection: the plugin sends one JSON object and
half-closes its side; the agent answers one JSON object and closes::

    -> {"protocol": 1, "env": {"CNI_COMMAND": "ADD", ...}, "stdin": "<base64>"}
    <- {"code": 0, "stdout": "<base64>"}

``env`` carries only the CNI variables (``ENV_NAMES``). ``code`` is the exit
code the plugin returns and ``stdout`` the bytes it prints: the agent answers
with the result or the spec's error object itself.

If the agent cannot be reached, or does not answer within ``TIMEOUT`` seconds,
the plugin answers CNI code 11 (try again later) rather than hanging or
silently using another datastore. Standard library only: this is the whole
import path of a plugin exec in agent mode.
"""

from __future__ import annotations

import binascii  # not base64: that module imports re, ~8 ms of every plugin start
import json
import os
from collections.abc import Mapping  # not typing: in agent mode this module is the plugin's whole import path

# socket is imported in call(): the direct datastore path never loads it (~1.3 MiB RSS)

from topoipam import errors as E
from topoipam.cni import protocol as P

PROTOCOL = 1
DEFAULT_SOCKET = "/run/topoipam/agent.sock"
ENV_NAMES = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")
MAX_MESSAGE = 4 << 20  # bytes; a network config is a few KiB
TIMEOUT = 30.0  # seconds the plugin waits for the agent's answer


class AgentUnavailable(Exception):
    """The agent could not be reached or gave no usable answer."""


# --- wire format (shared with topoipam.agent.server) ----------------------------------
def encode_request(env: Mapping[str, str], stdin: bytes) -> bytes:
    subset = {name: env[name] for name in ENV_NAMES if name in env}
    body = {"protocol": PROTOCOL, "env": subset, "stdin": binascii.b2a_base64(stdin, newline=False).decode()}
    return json.dumps(body).encode()


def decode_request(data: bytes) -> tuple[dict[str, str], bytes]:
    """``(env, stdin)``; ValueError naming what is wrong."""
    body = _object(data, "request")
    if body.get("protocol") != PROTOCOL:
        raise ValueError(f"unsupported agent protocol {body.get('protocol')!r} (this agent speaks {PROTOCOL})")
    env = body.get("env")
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise ValueError("request env must be an object of strings")
    return {k: v for k, v in env.items() if k in ENV_NAMES}, _b64(body.get("stdin"), "stdin")


def encode_response(code: int, stdout: bytes) -> bytes:
    return json.dumps({"code": code, "stdout": binascii.b2a_base64(stdout, newline=False).decode()}).encode()


def decode_response(data: bytes) -> tuple[int, bytes]:
    body = _object(data, "response")
    code = body.get("code")
    if not isinstance(code, int) or isinstance(code, bool):
        raise ValueError("response code must be an integer")
    return code, _b64(body.get("stdout"), "stdout")


def _object(data: bytes, what: str) -> dict:
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError(f"{what} is not a JSON object")
    return body


def _b64(value, what: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a base64 string")
    try:
        return binascii.a2b_base64(value, strict_mode=True)
    except ValueError:
        raise ValueError(f"{what} is not valid base64") from None


def read_until_eof(conn: socket.socket, limit: int = MAX_MESSAGE) -> bytes:
    chunks, size = [], 0
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise ValueError(f"message longer than {limit} bytes")
        chunks.append(chunk)


# --- the plugin's side -----------------------------------------------------------------
def agent_socket_for(stdin: bytes) -> str | None:
    """The socket this request goes to, or None for the direct datastore path."""
    try:
        conf = json.loads(stdin)
    except (ValueError, UnicodeDecodeError):
        return None  # the direct path reports the decode error with the spec's code
    ipam = conf.get("ipam") if isinstance(conf, dict) else None
    if isinstance(ipam, dict) and "agent_socket" in ipam:
        path = ipam["agent_socket"]
        return path if isinstance(path, str) and path else None
    return DEFAULT_SOCKET if os.path.exists(DEFAULT_SOCKET) else None


def call(path: str, env: Mapping[str, str], stdin: bytes, timeout: float = TIMEOUT) -> tuple[int, bytes]:
    """Send one request to the agent at ``path``; its (exit code, stdout). Raises AgentUnavailable."""
    import socket

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(path)
            conn.sendall(encode_request(env, stdin))
            conn.shutdown(socket.SHUT_WR)
            return decode_response(read_until_eof(conn))
    except socket.timeout:
        raise AgentUnavailable(f"the topoipam agent at {path} did not answer within {timeout:g}s") from None
    except OSError as exc:
        raise AgentUnavailable(f"cannot reach the topoipam agent at {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise AgentUnavailable(f"the topoipam agent at {path} gave an unusable answer: {exc}") from None


def forward(path: str, env: Mapping[str, str], stdin: bytes) -> tuple[int, bytes]:
    """What the plugin prints for a request served by the agent: its answer, or error 11."""
    try:
        return call(path, env, stdin)
    except AgentUnavailable as exc:
        err = P.CniError(E.CNI_TRY_AGAIN_LATER, str(exc),
                         "the node's topoipam agent serves this network (ipam.agent_socket); is it running?")
        return 1, P.dumps(P.error_object(err, request_version(stdin)))


def request_version(stdin: bytes) -> str:
    """The request's cniVersion if supported (for error objects), else the latest."""
    try:
        version = json.loads(stdin).get("cniVersion")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return P.LATEST
    return version if version in P.SUPPORTED_VERSIONS else P.LATEST
