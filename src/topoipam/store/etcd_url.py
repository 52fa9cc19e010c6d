"""The etcd datastore URL: endpoints, TLS files, credentials and timing options.

    etcd://[user:password@]host:port[,host:port...][?timeout=5&keepalive=30]
    etcds://host:port[,...]?ca=/ca.pem&cert=/client.pem&key=/client-key.pem

``parse_url`` checks everything it can without touching the network, so a bad
URL is a ``ValidationError`` naming the problem. The options (``store/etcd.py``
says what each does) may also come from a ``config`` mapping, which also takes
``user`` and ``password`` and overrides the URL. ``public_url`` is the URL
without credentials.
"""

from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import parse_qsl, unquote

from topoipam.errors import ValidationError
from topoipam.structs import dataclass

DEFAULT_PORT = 2379
DEFAULT_TIMEOUT = 5.0
DEFAULT_KEEPALIVE = 30.0
OPTIONS = ("ca", "cert", "key", "timeout", "keepalive", "user", "password")


@dataclass(frozen=True)
class EtcdOptions:
    endpoints: tuple[str, ...]
    tls: bool
    ca: str | None
    cert: str | None
    key: str | None
    user: str | None
    password: str | None
    timeout: float
    public_url: str
    keepalive: float = DEFAULT_KEEPALIVE


def parse_url(url: str, config: Mapping[str, Any] | None = None) -> EtcdOptions:
    """Split an etcd URL into endpoints and options; ValidationError on anything malformed."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("etcd", "etcds"):
        raise ValidationError(f"etcd datastore URL {url!r} must start with etcd:// or etcds://")
    netloc, _, query = rest.partition("?")
    netloc = netloc.rstrip("/")
    opts: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in OPTIONS or name in ("user", "password"):
            raise ValidationError(
                f"etcd datastore URL: unknown option {name!r} (known: ca, cert, key, timeout, keepalive)"
            )
        opts[name] = value
    userinfo, at, hosts = netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        opts["user"], opts["password"] = unquote(user), unquote(password) if colon else None
    for name, value in (config or {}).items():
        if name not in OPTIONS:
            raise ValidationError(f"etcd datastore config: unknown option {name!r} (known: {', '.join(OPTIONS)})")
        opts[name] = value
    endpoints = tuple(_endpoint(h, url) for h in hosts.split(","))
    if opts.get("user") and opts.get("password") is None:
        raise ValidationError(f"etcd datastore URL: user {opts['user']!r} given without a password")
    tls = scheme == "etcds"
    if not tls and any(opts.get(k) for k in ("ca", "cert", "key")):
        raise ValidationError("etcd datastore URL: ca, cert and key need the etcds:// scheme")
    if bool(opts.get("cert")) != bool(opts.get("key")):
        raise ValidationError("etcd datastore URL: a client certificate needs both cert and key")
    timeout = _seconds(opts, "timeout", DEFAULT_TIMEOUT)
    keepalive = _seconds(opts, "keepalive", DEFAULT_KEEPALIVE)
    shown = ("ca", "cert", "key", "timeout", "keepalive")
    public_query = "&".join(f"{k}={opts[k]}" for k in shown if opts.get(k) not in (None, ""))
    public = f"{scheme}://{','.join(endpoints)}" + (f"?{public_query}" if public_query else "")
    return EtcdOptions(
        endpoints, tls, opts.get("ca") or None, opts.get("cert") or None, opts.get("key") or None,
        opts.get("user") or None, opts.get("password"), timeout, public, keepalive,
    )


def _seconds(opts: Mapping[str, Any], name: str, default: float) -> float:
    try:
        value = float(opts.get(name, default))
    except (TypeError, ValueError):
        raise ValidationError(f"etcd datastore URL: {name} {opts[name]!r} is not a number of seconds") from None
    if not value > 0:
        raise ValidationError(f"etcd datastore URL: {name} must be positive, not {value}")
    return value


def _endpoint(text: str, url: str) -> str:
    text = text.strip()
    if not text:
        raise ValidationError(f"etcd datastore URL {url!r} names no host")
    if text.startswith("["):  # [v6]:port
        host, _, port = text[1:].partition("]")
        port = port.lstrip(":")
        host = f"[{host}]"
    else:
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    port = port or str(DEFAULT_PORT)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValidationError(f"etcd datastore URL: endpoint {text!r} is not host:port")
    return f"{host}:{port}"
