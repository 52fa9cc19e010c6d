"""Datastores: the contract (``base``) and its backends, chosen by URL.

``open_store(url)``: ``memory://``, ``sqlite:///abs/path.db`` (or a plain path),
``etcd://host:port[,host:port]``, ``etcds://...``. Backends are imported only
when their scheme is asked for, so the CNI plugin never loads an etcd client.
"""

from __future__ import annotations

import os
from collections.abc import Mapping  # not typing: this module is on the CNI plugin's path

from topoipam.errors import ValidationError
from topoipam.store.base import Check, Create, Delete, Op, Record, Store, Update

__all__ = ["Check", "Create", "Delete", "Op", "Record", "Store", "Update", "open_store", "default_url"]

ENV_VAR = "TOPOIPAM_DATASTORE"


def default_url() -> str:
    """``$TOPOIPAM_DATASTORE``, else an SQLite file under the user's data directory."""
    return os.environ.get(ENV_VAR) or _data_dir_url()


_DEFAULT_TAIL = "/topoipam/topoipam.db"


def _data_dir_url() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return "sqlite://" + base.rstrip("/") + _DEFAULT_TAIL


def open_store(url: str | None = None, config: Mapping[str, object] | None = None) -> Store:
    """The store ``url`` names (``None``: ``default_url()``); ``config`` carries an etcd store's options
    (credentials, certificate files) that should not travel in a URL."""
    url = url or default_url()
    scheme, sep, _ = url.partition("://")
    if not sep:
        scheme = "sqlite"
    if scheme == "memory":
        from topoipam.store.memory import MemoryStore

        return MemoryStore(url)
    if scheme == "sqlite":
        from topoipam.store.sqlite import SqliteStore

        # Only the default file under the user's data directory gets its directories made: a path the
        # user named in a missing directory is a typo to report, not a tree to create.
        # (Compared by its tail first: the full default path needs the home directory, a passwd lookup
        # when HOME is unset, as it is for a CNI plugin.)
        return SqliteStore(url, create_dirs=url.endswith(_DEFAULT_TAIL) and url == _data_dir_url())
    if scheme in ("etcd", "etcds"):
        from topoipam.store.etcd import EtcdStore

        return EtcdStore(url, config)
    raise ValidationError(
        f"unsupported datastore URL {url!r}: use sqlite:///path, etcd://host:port, etcds://host:port or memory://"
    )
