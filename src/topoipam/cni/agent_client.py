"""The plugin's side of the node agent's unix socket (and the agent's reading of requests).

When the network config names a socket (``"ipam": {"agent_socket": PATH}``),
or names none and the default socket ``/run/topoipam/agent.sock`` exists, the
plugin does not open a datastore: it forwards the request to the node agent
and prints exactly what the agent answers. ``"agent_socket": ""`` turns the
agent off for that network (the datastore is then used directly).

The wire format is ``cni.wire``'s: one request per connection, the plugin
half-closes its side after the request, the agent answers and closes. ``env``
carries only the CNI variables (``wire.ENV_NAMES``); the answer's ``code`` is
the exit code the plugin returns and ``stdout`` the bytes it prints.

If the agent cannot be reached, or does not answer within ``TIMEOUT`` seconds,
the plugin answers CNI code 11 (try again later) rather than hanging or
silently using another datastore.

In agent mode this module is, with ``cni.wire``, ``sys``, ``posix`` and
``_socket``, the plugin's whole import path when the agent answers (a test
lists the modules of a real ADD against an allowed list): ``json``, ``socket``
(it imports ``enum``), ``protocol`` and ``errors`` are imported only on the
paths that need them.
"""

from topoipam.cni.wire import (ENV_NAMES, PROTOCOL, agent_socket_in, decode_response, encode_request, encode_response,
                               path_exists)

DEFAULT_SOCKET = "/run/topoipam/agent.sock"
MAX_MESSAGE = 4 << 20  # bytes; a network config is a few KiB
TIMEOUT = 30.0  # seconds the plugin waits for the agent's answer

__all__ = ["DEFAULT_SOCKET", "AgentUnavailable", "agent_socket_for", "call", "decode_request", "decode_response",
           "encode_request", "encode_response", "forward", "read_until_eof", "request_version"]


class AgentUnavailable(Exception):
    """The agent could not be reached or gave no usable answer."""


# --- the agent's side: requests are read with json (the agent has it loaded anyway) -----
def decode_request(data: bytes) -> tuple:
    """``(env, stdin)``; ValueError naming what is wrong."""
    import binascii
    import json

    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"request is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError("request is not a JSON object")
    if body.get("protocol") != PROTOCOL:
        raise ValueError(f"unsupported agent protocol {body.get('protocol')!r} (this agent speaks {PROTOCOL})")
    env = body.get("env")
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise ValueError("request env must be an object of strings")
    stdin = body.get("stdin")
    if not isinstance(stdin, str):
        raise ValueError("stdin must be a base64 string")
    try:
        raw = binascii.a2b_base64(stdin, strict_mode=True)
    except ValueError:
        raise ValueError("stdin is not valid base64") from None
    return {k: v for k, v in env.items() if k in ENV_NAMES}, raw


def read_until_eof(conn, limit: int = MAX_MESSAGE) -> bytes:
    """Everything ``conn`` (a socket) sends until it half-closes; ValueError past ``limit`` bytes."""
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
def agent_socket_for(stdin: bytes):
    """The socket this request goes to, or None for the direct datastore path."""
    path = agent_socket_in(stdin)
    if path is ...:  # the byte scan could not be sure: decode the config
        path = _agent_socket_decoded(stdin)
    if path is None:
        return DEFAULT_SOCKET if path_exists(DEFAULT_SOCKET) else None
    return path or None


def _agent_socket_decoded(stdin: bytes):
    import json

    try:
        conf = json.loads(stdin)
    except (ValueError, UnicodeDecodeError):
        return ""  # the direct path reports the decode error with the spec's code
    ipam = conf.get("ipam") if isinstance(conf, dict) else None
    if isinstance(ipam, dict) and "agent_socket" in ipam:
        path = ipam["agent_socket"]
        return path if isinstance(path, str) else ""
    return None


def call(path: str, env, stdin: bytes, timeout: float = TIMEOUT) -> tuple:
    """Send one request to the agent at ``path``; its (exit code, stdout). Raises AgentUnavailable."""
    import _socket  # not socket: that module imports enum and selectors

    try:
        conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            conn.settimeout(timeout)
            conn.connect(path)
            conn.sendall(encode_request(env, stdin))
            conn.shutdown(_socket.SHUT_WR)
            return decode_response(read_until_eof(conn))
        finally:
            conn.close()
    except TimeoutError:
        raise AgentUnavailable(f"the topoipam agent at {path} did not answer within {timeout:g}s") from None
    except OSError as exc:
        raise AgentUnavailable(f"cannot reach the topoipam agent at {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise AgentUnavailable(f"the topoipam agent at {path} gave an unusable answer: {exc}") from None


def forward(path: str, env, stdin: bytes) -> tuple:
    """What the plugin prints for a request served by the agent: its answer, or error 11."""
    try:
        return call(path, env, stdin)
    except AgentUnavailable as exc:
        from topoipam import errors as E
        from topoipam.cni import protocol as P

        err = P.CniError(E.CNI_TRY_AGAIN_LATER, str(exc),
                         "the node's topoipam agent serves this network (ipam.agent_socket); is it running?")
        return 1, P.dumps(P.error_object(err, request_version(stdin)))


def request_version(stdin: bytes) -> str:
    """The request's cniVersion if supported (for error objects), else the latest."""
    import json

    from topoipam.cni import protocol as P

    try:
        version = json.loads(stdin).get("cniVersion")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return P.LATEST
    return version if version in P.SUPPORTED_VERSIONS else P.LATEST
