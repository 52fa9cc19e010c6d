"""Which datastore a command talks to, and where that choice came from.

The first of these that says anything wins:

1. ``--datastore URL`` (a global option, accepted before or after the verb);
2. ``$TOPOIPAM_DATASTORE``;
3. calicoctl's configuration file: ``--config FILE`` (``-c``), else
   ``/etc/calico/calicoctl.cfg`` when it exists (a ``CalicoAPIConfig`` in YAML or
   JSON, as calicoctl reads it);
4. calicoctl's environment: ``DATASTORE_TYPE`` and ``ETCD_ENDPOINTS`` (with
   ``ETCD_USERNAME``, ``ETCD_PASSWORD``, ``ETCD_CA_CERT_FILE``, ``ETCD_CERT_FILE``,
   ``ETCD_KEY_FILE``);
5. only for interactive commands (``allow_default``): the local SQLite file under
   the user's data directory. Its creation is announced once on stderr, so that
   nobody mistakes a fresh private file for the cluster's datastore.

A node's agent passes ``allow_default=False``: an agent that silently opened a
private file would hand out addresses that other nodes hand out too. An empty
URL (``--datastore ""``, ``TOPOIPAM_DATASTORE=""``: what a unit file expands an
unset variable to) is always an error, never "use the default".

etcd credentials from calicoctl's settings travel in ``config``, never in the
URL, so they are never printed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from topoipam.errors import ValidationError

CALICOCTL_CFG = "/etc/calico/calicoctl.cfg"
# calicoctl's option names (file spec field, environment variable) -> the etcd store's option name
_ETCD_SETTINGS = (
    ("etcdUsername", "ETCD_USERNAME", "user"),
    ("etcdPassword", "ETCD_PASSWORD", "password"),
    ("etcdCACertFile", "ETCD_CA_CERT_FILE", "ca"),
    ("etcdCertFile", "ETCD_CERT_FILE", "cert"),
    ("etcdKeyFile", "ETCD_KEY_FILE", "key"),
)
_KNOWN_SPEC = {"datastoreType", "etcdEndpoints", *(name for name, _, _ in _ETCD_SETTINGS)}


@dataclass(frozen=True)
class DatastoreChoice:
    url: str
    source: str  # what chose it, for messages: "--datastore", "$TOPOIPAM_DATASTORE", a file, ...
    config: Mapping[str, Any] = field(default_factory=dict)  # etcd options kept out of the URL
    is_default: bool = False


class NoDatastoreError(ValidationError):
    """No datastore was configured where one must be (exit 2)."""


def resolve(flag: str | None, config_path: str | None, env: Mapping[str, str], *,
            allow_default: bool) -> DatastoreChoice:
    """The datastore this command uses (see the module docstring for the order)."""
    if flag is not None:
        return DatastoreChoice(_non_empty(flag, "--datastore"), "--datastore")
    if "TOPOIPAM_DATASTORE" in env:
        return DatastoreChoice(_non_empty(env["TOPOIPAM_DATASTORE"], "$TOPOIPAM_DATASTORE"), "$TOPOIPAM_DATASTORE")
    if config_path is not None or os.path.exists(CALICOCTL_CFG):
        return _from_calicoctl_file(config_path or CALICOCTL_CFG)
    if env.get("ETCD_ENDPOINTS") or env.get("DATASTORE_TYPE"):
        return _from_calicoctl_env(env)
    if not allow_default:
        raise NoDatastoreError(
            "no datastore configured: give --datastore etcd://HOST:2379 (or sqlite:///PATH), set "
            "TOPOIPAM_DATASTORE, or calicoctl's ETCD_ENDPOINTS; a node's agent never falls back to a local file, "
            "which would be an address space of its own"
        )
    from topoipam.store import default_url

    return DatastoreChoice(default_url(), "the default local file", is_default=True)


def announce_if_new(choice: DatastoreChoice, err) -> None:
    """Say once, on stderr, that the default local file is about to be created."""
    if choice.is_default and not os.path.exists(choice.url.partition("://")[2]):
        err.write(f"topoipam: no datastore configured; creating a local one at {choice.url} "
                  "(use --datastore URL or TOPOIPAM_DATASTORE for a shared one)\n")


def _non_empty(url: str, where: str) -> str:
    if not url.strip():
        raise NoDatastoreError(f"{where} is empty: name a datastore (sqlite:///PATH, etcd://HOST:2379 or "
                               "etcds://...); an empty value is never taken as the local default")
    return url


def _from_calicoctl_env(env: Mapping[str, str]) -> DatastoreChoice:
    values = {"datastoreType": env.get("DATASTORE_TYPE", ""), "etcdEndpoints": env.get("ETCD_ENDPOINTS", "")}
    values.update({spec: env[var] for spec, var, _ in _ETCD_SETTINGS if env.get(var)})
    return _etcd_choice(values, "calicoctl's environment (DATASTORE_TYPE/ETCD_ENDPOINTS)")


def _from_calicoctl_file(path: str) -> DatastoreChoice:
    where = f"calicoctl configuration {path}"
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ValidationError(f"{where}: cannot read it: {exc.strerror}") from None
    import yaml  # JSON is YAML too, as calicoctl reads either

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationError(f"{where}: not valid YAML or JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "CalicoAPIConfig":
        raise ValidationError(f"{where}: expected a document of kind CalicoAPIConfig")
    spec = doc.get("spec") or {}
    if not isinstance(spec, dict):
        raise ValidationError(f"{where}: spec must be a mapping")
    unknown = sorted(set(spec) - _KNOWN_SPEC)
    if unknown:
        raise ValidationError(f"{where}: spec.{unknown[0]} is not supported by topoipam "
                              f"(supported: {', '.join(sorted(_KNOWN_SPEC))})")
    return _etcd_choice({k: str(v) for k, v in spec.items() if v is not None}, where)


def _etcd_choice(values: Mapping[str, str], where: str) -> DatastoreChoice:
    kind = values.get("datastoreType") or "etcdv3"
    if kind != "etcdv3":
        raise ValidationError(f"{where}: datastoreType {kind!r} is not supported: topoipam keeps its state in "
                              "etcd v3 (etcdv3) or SQLite, not in the Kubernetes API")
    endpoints = [e.strip() for e in values.get("etcdEndpoints", "").split(",") if e.strip()]
    if not endpoints:
        raise ValidationError(f"{where}: etcdEndpoints (ETCD_ENDPOINTS) names no endpoint")
    schemes = {e.partition("://")[0] if "://" in e else "http" for e in endpoints}
    if not schemes <= {"http", "https"} or len(schemes) > 1:
        raise ValidationError(f"{where}: etcd endpoints must all be http:// or all https://, not {', '.join(endpoints)}")
    hosts = ",".join(e.partition("://")[2] if "://" in e else e for e in endpoints)
    url = ("etcds://" if schemes == {"https"} else "etcd://") + hosts.replace("/", "")
    config = {option: values[spec] for spec, _, option in _ETCD_SETTINGS if values.get(spec)}
    return DatastoreChoice(url, where, config)
