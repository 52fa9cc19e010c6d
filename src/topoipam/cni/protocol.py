"""The CNI execution protocol: environment and stdin in, result or error object out.

This module owns what the CNI spec (containernetworking/cni SPEC.md, versions
0.3.1, 0.4.0, 1.0.0, 1.1.0) says about the exchange between a runtime and a
plugin, and nothing about IPAM:

* ``parse_request(env, stdin)`` checks the environment and decodes the network
  configuration in the order the reference ``skel`` package does (missing or
  invalid variables -> code 4, undecodable config -> 6, bad network name -> 7,
  unsupported ``cniVersion`` -> 1, a command the version does not know -> 1),
  and returns a ``CniRequest``;
* ``format_result`` renders an ADD result in the requested version (0.3.x and
  0.4.0 carry ``"version"`` in every IP entry, 1.x does not);
* ``CniError`` is the spec's error object; ``error_object`` renders it.

Standard library only: it is on the plugin's import path and the node agent
(issue 5) uses it to decode requests that reach it over a unix socket.
"""

from __future__ import annotations

from topoipam import leanjson
from collections.abc import Mapping

from topoipam import errors as E

# This module avoids dataclasses, typing and re on purpose: with the agent
# (cni/agent_client.py) it is most of what a plugin exec imports.

SUPPORTED_VERSIONS = ("0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST = SUPPORTED_VERSIONS[-1]
COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")
STATUS_NOT_AVAILABLE = 50

# What each command needs from the environment (SPEC.md section 2). CNI_PATH is
# listed as optional for ADD/DEL/CHECK and this plugin delegates nothing, so it
# is never required: podman gives DEL a reduced environment.
REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "GC": (),
    "STATUS": (),
    "VERSION": (),
}
# The oldest cniVersion that defines each command.
MIN_VERSION = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}

_NAME_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NAME_REST = _NAME_FIRST | frozenset("_.-")


def valid_name(text: str) -> bool:
    """libcni's rule for container ids and network names: ``^[a-zA-Z0-9][a-zA-Z0-9_.-]*$``."""
    return bool(text) and text[0] in _NAME_FIRST and all(c in _NAME_REST for c in text)


MAX_IFNAME = 15


class CniError(Exception):
    """The spec's error object: ``code`` (0-99 the spec's, 100+ topoipam's), ``msg``, ``details``."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    @classmethod
    def from_topoipam(cls, exc: E.TopoipamError) -> "CniError":
        return cls(exc.cni_code, exc.message, exc.details)


class CniRequest:
    """One decoded plugin invocation. ``config`` is the whole network configuration (a dict)."""

    __slots__ = ("command", "version", "container_id", "netns", "ifname", "args", "path", "config")

    def __init__(self, command: str, version: str = LATEST, container_id: str = "", netns: str = "",
                 ifname: str = "", args: str = "", path: str = "", config: dict | None = None) -> None:
        self.command = command
        self.version = version
        self.container_id = container_id
        self.netns = netns
        self.ifname = ifname
        self.args = args
        self.path = path
        self.config = {} if config is None else config

    @property
    def network(self) -> str:
        return self.config.get("name", "")


def version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        raise CniError(E.CNI_DECODE_FAILURE, f"cniVersion {version!r} is not a version number") from None


def parse_request(env: Mapping[str, str], stdin: bytes) -> CniRequest:
    """Check the environment, decode stdin, reconcile the version. Raises ``CniError``."""
    command = env.get("CNI_COMMAND", "")
    if not command:
        raise CniError(E.CNI_INVALID_ENV, "required env variables [CNI_COMMAND] missing")
    if command not in COMMANDS:
        raise CniError(E.CNI_INVALID_ENV, f"unknown CNI_COMMAND: {command}",
                       f"CNI_COMMAND must be one of {', '.join(COMMANDS)}")
    missing = [name for name in REQUIRED_ENV[command] if not env.get(name)]
    if missing:
        raise CniError(E.CNI_INVALID_ENV, f"required env variables [{','.join(missing)}] missing")
    req = CniRequest(command, container_id=env.get("CNI_CONTAINERID", ""), netns=env.get("CNI_NETNS", ""),
                     ifname=env.get("CNI_IFNAME", ""), args=env.get("CNI_ARGS", ""), path=env.get("CNI_PATH", ""))
    if command in ("ADD", "CHECK", "DEL"):
        _validate_container_id(req.container_id)
        _validate_ifname(req.ifname)
    if command == "VERSION":
        req.version = version_probe(stdin)
        return req
    req.config = _decode_config(stdin)
    req.version = _reconcile_version(req.config, command)
    return req


def _validate_container_id(container_id: str) -> None:
    if not valid_name(container_id):
        raise CniError(E.CNI_INVALID_ENV, "invalid characters in CNI_CONTAINERID", container_id)


def _validate_ifname(ifname: str) -> None:
    problem = ""
    if len(ifname) > MAX_IFNAME:
        problem = f"CNI_IFNAME is too long (at most {MAX_IFNAME} characters)"
    elif ifname in (".", ".."):
        problem = "CNI_IFNAME is . or .."
    elif any(c in "/:" or c.isspace() for c in ifname):
        problem = "CNI_IFNAME contains / or : or whitespace characters"
    if problem:
        raise CniError(E.CNI_INVALID_ENV, problem, ifname)


def version_probe(stdin: bytes) -> str:
    """VERSION echoes the caller's cniVersion when it sent one we can read (SPEC.md section 5)."""
    try:
        conf = leanjson.loads(stdin or b"{}")
    except ValueError:
        return LATEST
    version = conf.get("cniVersion") if isinstance(conf, dict) else None
    return version if isinstance(version, str) and version else LATEST


def _decode_config(stdin: bytes) -> dict:
    try:
        conf = leanjson.loads(stdin)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CniError(E.CNI_DECODE_FAILURE, f"error decoding network config from stdin: {exc}") from None
    if not isinstance(conf, dict):
        raise CniError(E.CNI_DECODE_FAILURE, "error decoding network config from stdin: not a JSON object",
                       f"got a JSON {type(conf).__name__}")
    name = conf.get("name")
    if not isinstance(name, str) or not name:
        raise CniError(E.CNI_INVALID_NETCONF, "missing network name", 'the network config needs a "name"')
    if not valid_name(name):
        raise CniError(E.CNI_INVALID_NETCONF, "invalid characters found in network name", name)
    return conf


def _reconcile_version(conf: Mapping, command: str) -> str:
    version = conf.get("cniVersion", "")
    if not isinstance(version, str):
        raise CniError(E.CNI_DECODE_FAILURE, "error decoding network config: cniVersion must be a string",
                       f"got {leanjson.dumps(version)}")
    shown = version or "0.1.0"  # an absent cniVersion means 0.1.0 (libcni's rule)
    if shown not in SUPPORTED_VERSIONS:
        raise CniError(E.CNI_INCOMPATIBLE_VERSION, "incompatible CNI versions",
                       f'config is "{shown}", plugin supports {leanjson.dumps(list(SUPPORTED_VERSIONS))}')
    needed = MIN_VERSION.get(command)
    if needed and version_tuple(version) < version_tuple(needed):
        raise CniError(E.CNI_INCOMPATIBLE_VERSION, f"config version does not allow {command}",
                       f'{command} needs cniVersion {needed} or later, config is "{version}"')
    return version


def version_object(version: str) -> dict:
    return {"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)}


def error_object(err: CniError, version: str = LATEST) -> dict:
    obj: dict = {"cniVersion": version, "code": err.code, "msg": err.msg}
    if err.details:
        obj["details"] = err.details
    return obj


def format_result(version: str, ips: list[tuple[str, str | None]], routes: list[dict[str, str]],
                  dns: Mapping | None = None) -> dict:
    """An IPAM ADD result: ``ips`` as (CIDR address, gateway or None), IPv4 first as given.

    IPAM plugins return the abbreviated form: no ``interfaces`` and no
    ``interface`` index (SPEC.md "Delegated plugins (IPAM)").
    """
    old = version_tuple(version) < (1, 0, 0)
    entries = []
    for address, gateway in ips:
        entry: dict = {}
        if old:
            entry["version"] = "6" if ":" in address else "4"
        entry["address"] = address
        if gateway:
            entry["gateway"] = gateway
        entries.append(entry)
    result: dict = {"cniVersion": version, "ips": entries}
    if routes:
        result["routes"] = routes
    result["dns"] = dict(dns or {})
    return result


def dumps(obj: Mapping) -> bytes:
    return (leanjson.dumps(obj, indent=4) + "\n").encode()
